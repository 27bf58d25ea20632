"""The benchmark harness (benchmarks/): its workload, the overrides it runs this project with,
and its table. The TRL side needs its own virtualenvs and is not run here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import compare  # noqa: E402
import run_ours  # noqa: E402
import workload  # noqa: E402


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return workload.build(tmp_path_factory.mktemp("bench-work"))


def test_workload_has_exact_token_counts(work):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(work / "policy")
    assert tok.bos_token_id is None and tok.pad_token_id == tok.eos_token_id
    prompt = json.loads((work / "prompts.jsonl").open().readline())["prompt"]
    assert len(tok(prompt).input_ids) == workload.PROMPT_TOKENS
    pair = json.loads((work / "pairs.jsonl").open().readline())
    side = tok(pair["prompt"] + pair["chosen"] + tok.eos_token).input_ids
    assert len(side) == workload.PAIR_PROMPT + workload.PAIR_COMPLETION + 1
    text = json.loads((work / "sft.jsonl").open().readline())["text"]
    ids = tok(text).input_ids
    assert len(ids) > workload.SFT_LENGTH
    assert tok(tok.decode(ids)).input_ids == ids  # completions re-encode to the same tokens


@pytest.mark.parametrize("name", sorted(workload.STAGES))
def test_overrides_compose_for_every_stage(work, name, tmp_path):
    """A renamed config key would break the benchmark: every override must still compose."""
    from rlhf_lightning.api import compose_config

    stage = workload.STAGES[name]
    cfg = compose_config(
        run_ours.STAGE_OF.get(name, name), run_ours.overrides(stage, work), run_dir=tmp_path
    )
    assert cfg.stage.name == run_ours.STAGE_OF.get(name, name)
    if name in ("sft", "reward", "dpo", "kto", "orpo", "simpo"):
        assert cfg.trainer.max_steps == stage.warmup + stage.steps
        assert cfg.data.batch_size == stage.batch
    else:
        assert cfg.stage.iterations == stage.warmup + stage.steps


def test_step_window_times_only_the_steps_after_warmup():
    window = workload.StepWindow(warmup=2, steps=3, per_step=2)
    for _ in range(2 * 2):
        window.step_end()
    assert window.start_time is not None and window.end_time is None
    for _ in range(3 * 2):
        window.step_end()
    assert window.seconds >= 0
    with pytest.raises(RuntimeError):
        _ = workload.StepWindow(1, 1).seconds


def test_forward_tokens_counts_tokens_by_grad_mode():
    counts = {"4x48 grad": 2, "16x1 no_grad": 31, "16x16 no_grad": 1}
    assert workload.forward_tokens(counts) == {"grad": 384, "no_grad": 752}


def _run(framework: str, samples_per_s: float, wall_s: float, **extra) -> dict:
    return {
        "framework": framework,
        "version": "x",
        "samples_per_s": samples_per_s,
        "tokens_per_s": samples_per_s * 10,
        "wall_s": wall_s,
        "peak_rss_mb": 900.0,
        "forward_tokens": {"grad": 100, "no_grad": 50},
        **extra,
    }


def test_summary_and_table_report_medians_ratio_overhead_and_ppo_split():
    meta = {"date": "d", "machine": "m", "threads": 1, "repeats": 3, "ours_overrides": []}
    sft = compare.summarize(
        "sft",
        {
            "ours": [_run("rlhf_lightning", s, 96 / s) for s in (10.0, 12.0, 11.0)],
            "trl": [_run("trl", s, 96 / s) for s in (5.0, 6.0, 5.5)],
            "bare": [_run("bare_pytorch", s, 96 / s) for s in (12.0, 12.0, 12.0)],
        },
    )
    assert sft["sides"]["ours"]["samples_per_s"] == 11.0
    assert sft["ratio"] == pytest.approx(2.0)
    assert sft["overhead_vs_bare"] == pytest.approx(12.0 / 11.0 - 1)  # the middle pair
    phases = {"rollout": 1.0, "scoring": 0.5, "experience": 0.5, "optimising": 2.0}
    ppo = compare.summarize(
        "ppo",
        {
            "ours": [_run("rlhf_lightning", 4.0, 4.0, phases_s=phases)],
            "trl": [_run("trl", 2.0, 8.0, phases_s=phases)],
        },
    )
    text = compare.table({"sft": {**sft, "meta": meta}, "ppo": {**ppo, "meta": meta}}, meta)
    assert "| sft | 11.00 | 5.50 | 2.00x (2.00, 2.00, 2.00) |" in text
    assert "Overhead against a bare PyTorch loop" in text and "+9.1%" in text
    assert "| ppo | this project x | 1.00 s (25%)" in text


def test_phase_split_sums_timed_iterations_and_reads_a_missing_phase_as_zero(tmp_path):
    # online DPO logs rollout, scoring and optimising, no experience phase; rows without
    # perf/rollout_s (validation, epoch ends) are skipped; the warm-up iteration is left out.
    metrics = tmp_path / "metrics.csv"
    metrics.write_text(
        "step,perf/rollout_s,perf/scoring_s,perf/optimising_s,train/loss\n"
        "0,9.0,9.0,9.0,0.7\n"
        "0,,,,0.7\n"
        "1,1.0,0.25,2.0,0.6\n"
        "2,1.5,0.25,3.0,0.5\n"
    )
    stage = workload.Stage("online_dpo", batch=8, group=2, warmup=1, steps=2, tokens_per_sample=48)
    split = run_ours.phase_split(metrics, stage)
    assert split == {"rollout": 2.5, "scoring": 0.5, "experience": 0.0, "optimising": 5.0}


@pytest.mark.slow
def test_run_ours_sft_end_to_end(work, tmp_path):
    out = tmp_path / "sft.json"
    subprocess.run(
        [
            sys.executable,
            str(BENCH / "run_ours.py"),
            "--stage",
            "sft",
            "--workdir",
            str(work),
            "--out",
            str(out),
            "--trace",
        ],
        check=True,
        capture_output=True,
    )
    res = json.loads(out.read_text())
    stage = workload.STAGES["sft"]
    assert res["samples"] == stage.batch * stage.steps and res["samples_per_s"] > 0
    assert res["forwards"] == {
        f"{stage.batch}x{workload.SFT_LENGTH} grad": stage.warmup + stage.steps
    }


@pytest.mark.parametrize("name", ["grpo", "rloo", "ppo"])
def test_realistic_workload_overrides_compose(name, tmp_path):
    """The realistic workload's CLI overrides (SmolLM2 named, not loaded) still compose."""
    import realistic

    from rlhf_lightning.api import compose_config

    stage, *rest = realistic.STAGES[name]
    overrides = [*rest, *realistic.COMMON, "stage.packing=true"]
    cfg = compose_config(stage.removeprefix("stage="), overrides, run_dir=tmp_path)
    assert cfg.stage.sampling.max_new_tokens == 64 and cfg.stage.sampling.min_new_tokens == 0
    assert cfg.stage.packing is True
    assert cfg.stage.algorithm.group_size == (1 if name == "ppo" else 8)
    assert cfg.stage.algorithm.epochs == (4 if name == "ppo" else 1)


def test_realistic_table_lists_per_repeat_speedups():
    import realistic

    run = {"seconds": 10.0, "tokens": 500.0, "samples": 20.0, "response_length": 30.0}
    run |= {"window_cpu_s": 8.0, "window_wall_s": 10.5}
    run |= dict.fromkeys(realistic.PHASES, 2.0)
    summary = {
        "before": "commit a",
        "after": "commit b stage.packing=true",
        "load_average_at_start": 2.0,
        "stages": {
            "grpo": {
                "runs": {
                    "before": [run, run],
                    "after": [
                        run | {"seconds": 5.0, "padding_fraction": 0.4},
                        run | {"seconds": 5.0, "padding_fraction": 0.4},
                    ],
                },
                "speedup_per_repeat": [1.5, 1.25],
                "wall_speedup_per_repeat": [2.0, 2.0],
            }
        },
    }
    table = realistic.table(summary)
    assert "| grpo | after | 8.0 | 5.0 | 100 | 4.00 |" in table
    assert "40% | - | 30.0 | 1.38x (1.50, 1.25) | 2.00x (2.00, 2.00) |" in table
    # A run that logged perf/shared_prompt_fraction: its mean over the repeats.
    summary["stages"]["grpo"]["runs"]["after"][1]["shared_prompt_fraction"] = 0.3
    summary["stages"]["grpo"]["runs"]["after"][0]["shared_prompt_fraction"] = 0.2
    assert "40% | 25% | 30.0 |" in realistic.table(summary)


def test_realistic_trl_window_counts_only_the_timed_iterations():
    import realistic_trl

    marks = realistic_trl.Marks(per_iteration=2)  # GRPO: 2 optimizer steps an iteration
    marks.steps = [(1.0, 0.5), (2.0, 1.0), (3.0, 1.5), (10.0, 4.0)]
    marks.phase_marks = [
        {"rollout": 1.0, "scoring": 0.1, "experience": 0.5},
        {"rollout": 4.0, "scoring": 0.2, "experience": 2.5},
    ]
    marks.rollouts = [
        {"samples": 16, "real": 1000, "response_tokens": 400, "padded": 1500},
        {"samples": 16, "real": 1100, "response_tokens": 480, "padded": 1600},
    ]
    res = marks.window(warmup=1)
    # the window: from the end of step 2 (iteration 1) to the end of step 4 (iteration 2)
    assert res["window_wall_s"] == 8.0 and res["window_cpu_s"] == 3.0
    assert res["rollout"] == 3.0 and res["experience"] == 2.0
    assert res["scoring"] == pytest.approx(0.1)
    assert res["optimising"] == pytest.approx(8.0 - 3.0 - 0.1 - 2.0)
    assert res["tokens"] == 1100 and res["samples"] == 16
    assert res["response_length"] == 30.0  # 480 / 16
    assert res["padding_fraction"] == pytest.approx(1 - 1100 / 1600)


def test_realistic_trl_ratios_per_pair_skip_failed_runs():
    import realistic_trl

    ours = {"window_cpu_s": 20.0, "window_wall_s": 50.0, "tokens": 1000}
    trl = {"window_cpu_s": 40.0, "window_wall_s": 75.0, "tokens": 800}
    summary = {"stages": {"ppo": {"ours": [ours, ours], "trl": [trl, {"error": "x"}]}}}
    realistic_trl.ratios(summary)
    got = summary["stages"]["ppo"]["ratios"]["trl"]
    # CPU 40 / 20; per token (40 / 800) / (20 / 1000) = 0.05 / 0.02; wall 75 / 50
    assert got == {"cpu": [2.0], "cpu_per_token": [pytest.approx(2.5)], "wall": [1.5]}


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_plain_lm_head_log_prob_and_entropy(temperature):
    import math

    import realistic_trl
    import torch

    hidden = torch.tensor([[1.0, 0.0]])
    weight = torch.tensor([[1.0, 0.0], [0.0, 0.0], [-1.0, 0.0]])  # logits 1, 0, -1
    out = realistic_trl.plain_lm_head(
        hidden, weight, None, torch.tensor([0]), temperature, 4096, None, 1.0, ("entropy",)
    )
    z = [1.0 / temperature, 0.0, -1.0 / temperature]
    log_norm = math.log(sum(math.exp(v) for v in z))
    entropy = -sum(math.exp(v - log_norm) * (v - log_norm) for v in z)
    assert out[0].item() == pytest.approx(z[0] - log_norm, abs=1e-6)
    assert out[1].item() == pytest.approx(entropy, abs=1e-6)
    assert out[2:] == (None, None, None)


def test_realistic_trl_equal_ppo_overrides_only_for_ppo_with_full_critic():
    import realistic_trl

    assert realistic_trl.ours_stage_extra("ppo", "full", "/m") == [
        "stage.critic=separate",
        "stage.critic_init=/m",
        "stage.algorithm.max_grad_norm=null",
    ]
    assert realistic_trl.ours_stage_extra("ppo", "lora", "/m") == []
    assert realistic_trl.ours_stage_extra("grpo", "full", "/m") == []
