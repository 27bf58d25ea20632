"""The realistic RL workload: SmolLM2-135M-Instruct answering real questions, responses that stop
at EOS, GRPO/RLOO with G=8 and PPO with 4 epochs; two versions of this project, interleaved.

    python benchmarks/realistic.py [--repeats 3] [--stages grpo,ppo] \
        [--before main] [--after HEAD] [--after-override stage.packing=true]

Each run is the CLI (`python -m rlhf_lightning ...`) in a fresh process, one torch thread, with
this project's code unpacked from a git revision (`git archive`, as `compare.py --ours-commit`)
so edits in the checkout never reach a run. `--before` and `--after` run the same overrides
(plus `--after-override`s on the after side), back to back, their order alternating between
repeats, so a slow spell on a shared machine falls on both alike. The timed iterations are
those after `--warmup`; per iteration the stage logs its phase times (`perf/<phase>_s`),
`perf/samples_per_s`, `perf/tokens_per_s` (real tokens) and, from the after side,
`perf/padding_fraction` and `perf/shared_prompt_fraction` (real tokens that repeat another
row's prompt, which shared-prompt packing computes once). Prints a table and writes `--out`
(JSON, every run's numbers).

The work (identical on both sides; only the code differs):

- model=smollm2 as configured: SmolLM2-135M-Instruct (30 layers, width 576, 49k vocabulary) with
  its LoRA adapter (r 16) trained and the adapter-off base as the reference; fp32 on CPU.
- prompts: the embedded `demo_qa` questions in the chat template (real questions, 20-60
  tokens); reward: VADER sentiment of the answer (cheap, so the policy's work dominates).
- sampling: temperature 1, up to 64 new tokens, stopping at EOS (no `min_new_tokens`), so
  response lengths spread as the model's answers do.
- grpo / rloo: 2 prompts x G=8 per iteration, 1 pass of 2 minibatches, KL to the reference.
- ppo: 8 prompts, the shared value head, 4 epochs x 2 minibatches.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from compare import source_of_ours  # noqa: E402

COMMON = [
    "model=smollm2",
    "data=prompts",
    "data.path=demo_qa",
    "data.prompt_column=prompt",
    "data.chat=true",
    "data.num_prompts=null",
    "reward=sentiment",
    "stage.sampling.max_new_tokens=64",
    "stage.sampling.min_new_tokens=0",
    "stage.compare_prompts=0",
    "stage.sample_every=1000000",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
    "checkpoint.every_n_steps=1000000",
    "export.enabled=false",
    "report=false",
    "seed=0",
]
STAGES = {
    "grpo": [
        "stage=grpo",
        "data.batch_size=2",
        "stage.algorithm.group_size=8",
        "stage.algorithm.epochs=1",
        "stage.algorithm.num_minibatches=2",
    ],
    "rloo": [
        "stage=rloo",
        "data.batch_size=2",
        "stage.algorithm.group_size=8",
        "stage.algorithm.epochs=1",
        "stage.algorithm.num_minibatches=2",
    ],
    "ppo": [
        "stage=ppo",
        "stage.critic=shared",
        "data.batch_size=8",
        "stage.algorithm.epochs=4",
        "stage.algorithm.num_minibatches=2",
    ],
}
PHASES = ("rollout", "scoring", "experience", "optimising")


# The CLI (`python -m rlhf_lightning`) with one Lightning callback added to its Trainer, which
# notes the wall clock and the process's CPU time (user + sys, all threads) at the end of every
# training step (one RL iteration): the CPU time of the timed iterations alone, which a busy
# machine disturbs far less than their wall time. Works for any revision (it only wraps
# `lightning.pytorch.Trainer.__init__`).
CHILD = """
import json, runpy, sys, time
import lightning.pytorch as pl
marks_path = sys.argv.pop(1)
marks = []
class StepMarks(pl.Callback):
    def on_train_batch_end(self, *args, **kwargs):
        marks.append([time.perf_counter(), time.process_time()])
init = pl.Trainer.__init__
def with_marks(self, *args, **kwargs):
    kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), StepMarks()]
    init(self, *args, **kwargs)
pl.Trainer.__init__ = with_marks
sys.argv[0] = "rlhf_lightning"
try:
    runpy.run_module("rlhf_lightning", run_name="__main__", alter_sys=True)
finally:
    with open(marks_path, "w") as f:
        json.dump(marks, f)
"""


def run_one(
    stage: str, env: dict[str, str], extra: list[str], iterations: int
) -> tuple[Path, dict[str, float]]:
    """One run in a fresh process; its directory and its whole-process wall and CPU seconds."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"realistic-{stage}-"))
    cmd = [
        sys.executable, "-c", CHILD, str(run_dir / "step_marks.json"), *STAGES[stage], *COMMON,
        f"stage.iterations={iterations}", *extra, f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    threads = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(
        cmd, env={**os.environ, **threads, **env}, capture_output=True, text=True, cwd="/tmp"
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{stage} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return run_dir, {"process_wall_s": wall, "process_cpu_s": cpu}


def timed_window(run_dir: Path, warmup: int) -> dict[str, float]:
    """Wall and CPU seconds from the end of the last warm-up iteration to the end of the last."""
    marks = json.loads((run_dir / "step_marks.json").read_text())
    (wall0, cpu0), (wall1, cpu1) = marks[warmup - 1], marks[-1]
    return {"window_wall_s": wall1 - wall0, "window_cpu_s": cpu1 - cpu0}


def timed_rows(run_dir: Path, warmup: int) -> dict[str, float]:
    """Sums over the timed iterations: seconds per phase, total seconds, samples, real tokens."""
    with (run_dir / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("perf/rollout_s")]
    timed = rows[warmup:]
    out = {p: sum(float(r[f"perf/{p}_s"]) for r in timed) for p in PHASES}
    seconds = []
    samples = tokens = 0.0
    for r in timed:
        # perf/samples_per_s = samples / iteration seconds: the iteration's seconds from it.
        n = float(r["perf/samples_per_s"])
        s = sum(float(r[f"perf/{p}_s"]) for p in PHASES)
        seconds.append(s)
        samples += n * s
        tokens += float(r["perf/tokens_per_s"]) * s
    out |= {"seconds": sum(seconds), "samples": samples, "tokens": tokens}
    out["response_length"] = statistics.mean(float(r["rollout/response_length"]) for r in timed)
    if timed and timed[0].get("perf/padding_fraction"):
        out["padding_fraction"] = statistics.mean(float(r["perf/padding_fraction"]) for r in timed)
    if timed and timed[0].get("perf/shared_prompt_fraction"):
        out["shared_prompt_fraction"] = statistics.mean(
            float(r["perf/shared_prompt_fraction"]) for r in timed
        )
    out["iterations"] = len(timed)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stages", default="grpo,ppo")
    parser.add_argument("--before", default="main")
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--after-override", action="append", default=[])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--timed", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "realistic.json")
    args = parser.parse_args()
    sides = {
        "before": (*source_of_ours(args.before), []),
        "after": (*source_of_ours(args.after), args.after_override),
    }
    results: dict[str, dict[str, list[dict]]] = {}
    started = time.time()
    load = os.getloadavg()[0]
    for repeat in range(args.repeats):
        order = ("before", "after") if repeat % 2 == 0 else ("after", "before")
        for stage in args.stages.split(","):
            for side in order:
                env, source, extra = sides[side]
                run_dir, process = run_one(stage, env, extra, args.warmup + args.timed)
                res = timed_rows(run_dir, args.warmup) | timed_window(run_dir, args.warmup)
                res |= process | {"load_average": os.getloadavg()[0]}
                results.setdefault(stage, {}).setdefault(side, []).append(res)
                print(
                    f"repeat {repeat} {stage} {side:6s} ({source}): {res['seconds']:.1f} s, "
                    f"window {res['window_wall_s']:.1f} s wall / {res['window_cpu_s']:.1f} s CPU, "
                    f"{res['tokens'] / res['seconds']:.0f} tokens/s, "
                    + ", ".join(f"{p} {res[p]:.1f}" for p in PHASES)
                    + f", load {res['load_average']:.1f}",
                    flush=True,
                )
            write_summary(args, sides, results, started, load)
    print(table(write_summary(args, sides, results, started, load)))


def write_summary(args, sides, results, started, load) -> dict:  # noqa: ANN001
    """The summary so far, written to ``--out`` after every pair (a cut-short run keeps them)."""
    summary = {
        "command": " ".join(sys.argv),
        "before": sides["before"][1],
        "after": sides["after"][1] + " " + " ".join(args.after_override),
        "load_average_at_start": load,
        "wall_s": time.time() - started,
        "stages": {},
    }
    for stage, by_side in results.items():
        pairs = list(zip(by_side["before"], by_side.get("after", []), strict=False))
        summary["stages"][stage] = {
            "runs": by_side,
            # The ratio quoted: CPU seconds of the timed window, before / after.
            "speedup_per_repeat": [b["window_cpu_s"] / a["window_cpu_s"] for b, a in pairs],
            "wall_speedup_per_repeat": [b["seconds"] / a["seconds"] for b, a in pairs],
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def table(summary: dict) -> str:
    """Medians per stage and side, and both ratios per repeat (CPU first: the one quoted)."""
    lines = [
        f"before: {summary['before']}; after: {summary['after']}; "
        f"load average at start {summary['load_average_at_start']:.1f}",
        "",
        "| stage | side | timed CPU s | timed wall s | tokens/s | samples/s | "
        + " | ".join(f"{p} s" for p in PHASES)
        + " | padding | shared prompt | response length | speedup, CPU (per repeat) "
        + "| speedup, wall |",
        "|---|---|---:|---:|---:|---:|" + "---:|" * len(PHASES) + "---:|---:|---:|---|---|",
    ]
    for stage, data in summary["stages"].items():
        for side in ("before", "after"):
            runs = data["runs"].get(side, [])
            if not runs:
                continue

            def med(key: str, runs=runs) -> float:
                return statistics.median(r[key] for r in runs)

            pad = [r["padding_fraction"] for r in runs if "padding_fraction" in r]
            shared = [r["shared_prompt_fraction"] for r in runs if "shared_prompt_fraction" in r]
            speedups = ["", ""]
            if side == "after":
                for k, key in enumerate(("speedup_per_repeat", "wall_speedup_per_repeat")):
                    ratios = data.get(key, [])
                    if ratios:
                        per_repeat = ", ".join(f"{r:.2f}" for r in ratios)
                        speedups[k] = f"{statistics.median(ratios):.2f}x ({per_repeat})"
            cells = [
                stage,
                side,
                f"{med('window_cpu_s'):.1f}",
                f"{med('seconds'):.1f}",
                f"{statistics.median(r['tokens'] / r['seconds'] for r in runs):.0f}",
                f"{statistics.median(r['samples'] / r['seconds'] for r in runs):.2f}",
                *(f"{med(p):.1f}" for p in PHASES),
                f"{statistics.mean(pad):.0%}" if pad else "-",
                f"{statistics.mean(shared):.0%}" if shared else "-",
                f"{med('response_length'):.1f}",
                *speedups,
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
