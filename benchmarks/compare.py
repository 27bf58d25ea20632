"""Run every stage through this project and through TRL, interleaved, and tabulate the medians.

    python benchmarks/compare.py [--repeats 3] [--threads 1] [--stages sft,dpo,...]

(`bash benchmarks/run_all.sh` makes the TRL virtualenvs first, then runs this.)

Each run is a fresh subprocess (so its peak RSS is its own) with the same torch thread count
on both sides. Within a repeat the stages run in turn, and for each stage both frameworks run
back to back, the order alternating between repeats (ours first, then TRL first, ...), so
that a slow spell on a shared machine falls on both sides alike. The SFT stage also runs the
bare PyTorch loop (`bare_loop.py`) beside them. Medians over the repeats go into
`results/<stage>.json`, `results/summary.json` and `results/table.md`.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import workload  # noqa: E402

TRL_VENV = HERE / ".venv-trl"
TRL_PPO_VENV = HERE / ".venv-trl-ppo"
TRL_PPO_CLASSIC_VENV = HERE / ".venv-trl-ppo-classic"
ORDER = (
    "sft",
    "reward",
    "dpo",
    "kto",
    "orpo",
    "simpo",
    "ppo",
    "ppo_shared",
    "ppo_valuehead",
    "grpo",
    "rloo",
    "online_dpo",
)
VENV_OF = {
    "ppo": TRL_PPO_VENV,
    "ppo_shared": TRL_PPO_VENV,
    "ppo_valuehead": TRL_PPO_CLASSIC_VENV,
}


def command(framework: str, stage: str, out: Path, threads: int, extra: list[str]) -> list[str]:
    common = ["--threads", str(threads), "--out", str(out)]
    if framework == "ours":
        return [
            sys.executable,
            str(HERE / "run_ours.py"),
            "--stage",
            stage,
            "--trace",
            *common,
            *extra,
        ]
    if framework == "bare":
        return [sys.executable, str(HERE / "bare_loop.py"), *common]
    venv = VENV_OF.get(stage, TRL_VENV)
    return [
        str(venv / "bin" / "python"),
        str(HERE / "run_trl.py"),
        "--stage",
        stage,
        "--trace",
        *common,
    ]


def source_of_ours(commit: str | None) -> tuple[dict[str, str], str]:
    """Environment for this project's runs and a description of the code they run.

    None: the checkout the benchmarks sit in, as it is (uncommitted changes included). A
    revision: that commit's `rlhf_lightning/` and `conf/`, unpacked with `git archive` into a
    temporary directory put first on PYTHONPATH, so that edits going on in the checkout cannot
    reach the runs (and two commits can be compared).
    """
    repo = HERE.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    if commit is None:
        try:
            head = git("rev-parse", "--short", "HEAD")
            dirty = git("status", "--porcelain", "--", "rlhf_lightning", "conf")
        except (OSError, subprocess.CalledProcessError):
            return {}, "the working tree"
        return {}, f"working tree at {head}" + (" with uncommitted changes" if dirty else "")
    rev = git("rev-parse", "--short", commit)
    target = Path(tempfile.mkdtemp(prefix=f"rlhf-src-{rev}-"))
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", rev, "rlhf_lightning", "conf"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    atexit.register(shutil.rmtree, target, ignore_errors=True)
    return {"PYTHONPATH": str(target)}, f"commit {rev}"


def run_one(
    framework: str,
    stage: str,
    repeat: int,
    raw: Path,
    threads: int,
    extra: list[str],
    ours_env: dict[str, str],
) -> dict:
    out = raw / f"{stage}-{framework}-{repeat}.json"
    out.unlink(missing_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "PYTHONWARNINGS": "ignore",
        **(ours_env if framework == "ours" else {}),
    }
    started = time.perf_counter()
    proc = subprocess.run(
        command(framework, stage, out, threads, extra),
        env=env,
        cwd=HERE.parent,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0 or not out.is_file():
        tail = (proc.stdout + proc.stderr)[-3000:]
        (raw / f"{stage}-{framework}-{repeat}.log").write_text(proc.stdout + proc.stderr)
        print(f"  {stage:6s} {framework:4s} FAILED (exit {proc.returncode}), log in {raw}\n{tail}")
        return {"error": tail, "stage": stage, "framework": framework}
    res = json.loads(out.read_text())
    res["process_s"] = elapsed
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(
        f"  {stage:6s} {framework:4s} {res['samples_per_s']:8.2f} samples/s  "
        f"{res['wall_s']:6.2f} s timed  {elapsed:5.1f} s process  {res['peak_rss_mb']:6.0f} MB"
    )
    return res


def median_of(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if key in r]
    return statistics.median(values) if values else None


def summarize(stage: str, runs: dict[str, list[dict]]) -> dict:
    summary: dict = {"stage": stage, "workload": workload.describe()["stages"][stage], "sides": {}}
    for side, side_runs in runs.items():
        ok = [r for r in side_runs if "error" not in r]
        if not ok:
            summary["sides"][side] = {"runs": len(side_runs), "ok": 0}
            continue
        entry = {
            "framework": ok[0]["framework"],
            "version": ok[0]["version"],
            "runs": len(side_runs),
            "ok": len(ok),
            "samples_per_s": median_of(ok, "samples_per_s"),
            "samples_per_s_all": [round(r["samples_per_s"], 3) for r in ok],
            "tokens_per_s": median_of(ok, "tokens_per_s"),
            "wall_s": median_of(ok, "wall_s"),
            "step_s_median": median_of(ok, "step_s_median"),
            "peak_rss_mb": median_of(ok, "peak_rss_mb"),
            "forward_tokens": ok[0].get("forward_tokens"),
        }
        if "phases_s" in ok[0]:
            entry["phases_s"] = {
                name: statistics.median(r["phases_s"][name] for r in ok)
                for name in ok[0]["phases_s"]
            }
        summary["sides"][side] = entry
    ours, trl = summary["sides"].get("ours", {}), summary["sides"].get("trl", {})
    if ours.get("samples_per_s") and trl.get("samples_per_s"):
        # Each repeat's pair ran back to back: the median of their ratios cancels slow spells of
        # a shared machine better than the ratio of the two medians (also kept).
        pairs = zip(runs.get("ours", []), runs.get("trl", []), strict=False)
        per_repeat = [
            a["samples_per_s"] / b["samples_per_s"]
            for a, b in pairs
            if "error" not in a and "error" not in b
        ]
        summary["ratio_per_repeat"] = [round(r, 3) for r in per_repeat]
        summary["ratio"] = statistics.median(per_repeat)
        summary["ratio_of_medians"] = ours["samples_per_s"] / trl["samples_per_s"]
    bare = summary["sides"].get("bare", {})
    if ours.get("wall_s") and bare.get("wall_s"):
        pairs = zip(runs.get("ours", []), runs.get("bare", []), strict=False)
        per_repeat = [
            a["wall_s"] / b["wall_s"] - 1 for a, b in pairs if "error" not in a and "error" not in b
        ]
        summary["overhead_per_repeat"] = [round(x, 4) for x in per_repeat]
        summary["overhead_vs_bare"] = statistics.median(per_repeat)
        summary["overhead_of_medians"] = ours["wall_s"] / bare["wall_s"] - 1
        if ours.get("step_s_median") and bare.get("step_s_median"):
            # median step times: robust to a slow spell within a run
            summary["overhead_step_median"] = ours["step_s_median"] / bare["step_s_median"] - 1
    return summary


def fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def table(summaries: dict[str, dict], meta: dict) -> str:
    """The markdown table of every stage summary (each carries the conditions it ran under)."""
    conditions: dict[str, list[str]] = {}
    for stage, s in summaries.items():
        m = s.get("meta", meta)
        line = (
            f"{m['date']}, {m['machine']}: torch threads {m['threads']} per run, "
            f"{m['repeats']} interleaved repeats, medians"
        )
        if m.get("ours_source"):
            line += f"; this project: {m['ours_source']}"
        if m.get("ours_overrides"):
            line += f", with {' '.join(m['ours_overrides'])}"
        conditions.setdefault(line, []).append(stage)
    lines = [
        *(f"- {', '.join(stages)}: {line}." for line, stages in conditions.items()),
        "- samples/s, tokens/s, peak RSS: medians over the repeats; ratio: median of the "
        "per-repeat ratios (each pair ran back to back); forward tokens: tokens through the "
        "GPT-2 backbone with / without grad over the whole run (warm-up included).",
        "",
        "| stage | this project samples/s | TRL samples/s | ratio this/TRL | this project tokens/s "
        "| TRL tokens/s | peak RSS MB (this / TRL) | TRL version | forward tokens grad / no-grad "
        "(this; TRL) |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for stage in ORDER:
        s = summaries.get(stage)
        if not s:
            continue
        ours, trl = s["sides"].get("ours", {}), s["sides"].get("trl", {})

        def work(side: dict) -> str:
            ft = side.get("forward_tokens")
            return "-" if not ft else f"{ft['grad']:,} / {ft['no_grad']:,}"

        ratio = s.get("ratio")
        lines.append(
            f"| {stage} | {fmt(ours.get('samples_per_s'), 2)} | {fmt(trl.get('samples_per_s'), 2)} "
            f"| {fmt(ratio, 2)}x ({', '.join(f'{r:.2f}' for r in s.get('ratio_per_repeat', []))}) | {fmt(ours.get('tokens_per_s'), 0)} | {fmt(trl.get('tokens_per_s'), 0)} "
            f"| {fmt(ours.get('peak_rss_mb'), 0)} / {fmt(trl.get('peak_rss_mb'), 0)} "
            f"| {trl.get('version', '-')} | {work(ours)}; {work(trl)} |"
        )
    sft = summaries.get("sft", {})
    if "overhead_vs_bare" in sft:
        bare = sft["sides"]["bare"]
        ours = sft["sides"]["ours"]
        lines += [
            "",
            "Overhead against a bare PyTorch loop doing the same SFT steps (`bare_loop.py`): "
            f"**{sft['overhead_vs_bare'] * 100:+.1f}%** (median of the per-repeat pairs: "
            f"{', '.join(f'{x * 100:+.1f}%' for x in sft['overhead_per_repeat'])}; medians "
            f"{fmt(ours['wall_s'], 2)} s this project, {fmt(bare['wall_s'], 2)} s bare loop for the "
            f"{workload.STAGES['sft'].steps} timed steps"
            + (
                f"; median step {1000 * ours['step_s_median']:.0f} ms against "
                f"{1000 * bare['step_s_median']:.0f} ms: {sft['overhead_step_median'] * 100:+.1f}%"
                if sft.get("overhead_step_median") is not None
                else ""
            )
            + ").",
        ]
    split_rows = []
    for stage in ("ppo", "ppo_shared", "ppo_valuehead", "online_dpo"):
        summary = summaries.get(stage, {})
        for side, label in (("ours", "this project"), ("trl", "TRL")):
            entry = summary.get("sides", {}).get(side, {})
            phases = entry.get("phases_s")
            if not phases:
                continue
            total = entry["wall_s"]
            other = total - sum(phases.values())
            cells = [
                f"{phases[n]:.2f} s ({phases[n] / total:.0%})"
                for n in ("rollout", "scoring", "experience", "optimising")
            ]
            split_rows.append(
                f"| {stage} | {label} {entry['version']} | {' | '.join(cells)} "
                f"| {max(other, 0):.2f} s | {total:.2f} s |"
            )
    if split_rows:
        lines += [
            "",
            f"Time split over the timed iterations (PPO {workload.STAGES['ppo'].steps}, online DPO "
            f"{workload.STAGES['online_dpo'].steps}; medians of each phase, so the phases need not "
            "add up to the median total exactly; online DPO has no experience phase, its "
            "reference forward is part of its update):",
            "",
            "| stage | framework | generation | scoring (reward model) | experience (log-probs, "
            "values) | optimisation (PPO epochs) | other | total |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
            *split_rows,
        ]
    return "\n".join(lines) + "\n"


def machine() -> str:
    import platform

    cpus = os.cpu_count()
    try:
        load = f", load average {os.getloadavg()[0]:.1f}"
    except OSError:
        load = ""
    return f"{platform.machine()} Linux, {cpus} CPU cores{load} at the start"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--stages", default=",".join(ORDER))
    parser.add_argument("--out-dir", type=Path, default=HERE / "results")
    parser.add_argument(
        "--ours-commit",
        help="run this project at this git revision (a snapshot) instead of the working tree",
    )
    parser.add_argument(
        "--ours-override",
        action="append",
        default=[],
        help="an extra override for this project's runs (e.g. +optim.fused=true); repeatable",
    )
    args = parser.parse_args()
    stages = [s for s in args.stages.split(",") if s]
    for s in stages:
        if s not in workload.STAGES:
            raise SystemExit(f"unknown stage {s}; choose from {', '.join(ORDER)}")
    for stage in stages:
        venv = VENV_OF.get(stage, TRL_VENV)
        if not (venv / "bin" / "python").exists():
            raise SystemExit(f"{venv} is missing. Fix: bash benchmarks/setup_trl.sh")
    workload.build()
    ours_env, ours_source = source_of_ours(args.ours_commit)
    raw = args.out_dir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "threads": args.threads,
        "repeats": args.repeats,
        "ours_overrides": args.ours_override,
        "ours_source": ours_source,
    }
    print(
        f"{meta['machine']}; {args.repeats} repeats, {args.threads} thread(s) per run; "
        f"this project: {ours_source}"
    )
    runs: dict[str, dict[str, list[dict]]] = {s: {} for s in stages}
    started = time.perf_counter()
    for repeat in range(args.repeats):
        print(f"repeat {repeat + 1}/{args.repeats}")
        for stage in stages:
            sides = ["ours", "trl"] if repeat % 2 == 0 else ["trl", "ours"]
            if stage == "sft":
                sides = ["bare", *sides] if repeat % 2 == 0 else [*sides, "bare"]
            for side in sides:
                res = run_one(side, stage, repeat, raw, args.threads, args.ours_override, ours_env)
                runs[stage].setdefault(side, []).append(res)
    meta["total_s"] = time.perf_counter() - started
    for stage in stages:
        summary = {**summarize(stage, runs[stage]), "meta": meta}
        (args.out_dir / f"{stage}.json").write_text(json.dumps(summary, indent=2) + "\n")
    # The table covers every stage with a result in out-dir, so that the stages can also be
    # run in separate invocations (--stages) and still end up in one table.
    summaries = {
        stage: json.loads((args.out_dir / f"{stage}.json").read_text())
        for stage in ORDER
        if (args.out_dir / f"{stage}.json").is_file()
    }
    (args.out_dir / "summary.json").write_text(
        json.dumps({"workload": workload.describe(), "stages": summaries}, indent=2) + "\n"
    )
    text = table(summaries, meta)
    (args.out_dir / "table.md").write_text(text)
    print()
    print(text)
    print(f"total {meta['total_s'] / 60:.1f} min; results in {args.out_dir}")


if __name__ == "__main__":
    main()
