"""Exact resume, every stage: N steps straight == N/2, interrupt, resume from last.ckpt, N/2 more.

The half run is the full run's config plus `interrupt_at=N/2` (so it plans the same LR schedule
and iteration count); the resumed run is the full config plus `ckpt_path=`. The runs cross an
epoch boundary of the training data, so data order and position are exercised both within an
epoch and across it. Weights and every logged value are compared bit for bit (`torch.equal`,
`==`) on CPU: no kernel used here needed a tolerance.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from rlhf_lightning.api import compose_config
from rlhf_lightning.train import run

# Quiet, fast runs: no report, no export, checkpoints only where the test needs them.
_COMMON = [
    "report=false",
    "export.enabled=false",
    "checkpoint.every_n_steps=1000",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
]
# Supervised stages: 8 optimizer steps; 36 training rows in batches of 8 = 5 batches per epoch,
# so the interruption (step 4) is mid-epoch and the resumed half crosses into epoch 1.
_SUPERVISED = ["model=tiny", "trainer.max_steps=8", "trainer.val_check_interval=3"]
# RL stages: 4 iterations over 3 prompt batches per epoch (interrupted after 2).
_RL = ["stage.iterations=4", "stage.compare_prompts=0", "stage.sample_every=1"]

CASES = {
    "sft": ("sft", [*_SUPERVISED, "data=tiny", "data.max_samples=40", "stage.num_samples=0"], 8),
    "reward": (
        "reward",
        [*_SUPERVISED, "data=tiny_pairs", "data.max_samples=40", "stage.calibration=null"],
        8,
    ),
    "dpo": ("dpo", [*_SUPERVISED, "data=tiny_pairs", "data.max_samples=40"], 8),
    # 18 pairs = 36 KTO rows
    "kto": ("kto", [*_SUPERVISED, "data=tiny_kto", "data.max_samples=18", "data.batch_size=8"], 8),
    "orpo": ("orpo", [*_SUPERVISED, "data=tiny_pairs", "data.max_samples=40"], 8),
    "simpo": ("simpo", [*_SUPERVISED, "data=tiny_pairs", "data.max_samples=40"], 8),
    "ppo": (
        "ppo",
        ["experiment=ppo_smoke", *_RL, "data.num_prompts=48", "stage.algorithm.epochs=2"],
        4,
    ),
    # Packed (stage.packing=true, the default), each group of 4 rows holding its prompt once
    # (shared_prefix_layout) in the reference and minibatch forwards.
    "grpo": ("grpo", ["experiment=grpo_smoke", *_RL, "data.num_prompts=24"], 4),
    # The RL stages pack their training forwards by default (stage.packing=true); padded too.
    "ppo, padded": (
        "ppo",
        [
            "experiment=ppo_smoke",
            *_RL,
            "data.num_prompts=48",
            "stage.algorithm.epochs=2",
            "stage.packing=false",
        ],
        4,
    ),
    "grpo, padded": (
        "grpo",
        ["experiment=grpo_smoke", *_RL, "data.num_prompts=24", "stage.packing=false"],
        4,
    ),
    "rloo": ("rloo", ["experiment=rloo_smoke", *_RL, "data.num_prompts=24"], 4),
    # Multi-turn episodes in an environment (3 prompt batches per epoch), with a held-out
    # evaluation at the interruption point.
    "grpo, multi-turn environment": (
        "grpo",
        ["experiment=guess_number_smoke", *_RL, "data.num_prompts=12", "stage.env_eval.every=2"],
        4,
    ),
    # Verifiable-reward settings: held-out evaluation every iteration (greedy and sampled),
    # the overlong and length terms, dynamic sampling (a toy reward, so groups differ).
    "grpo_rlvr": (
        "grpo",
        [
            *_RL,
            "model=tiny",
            "data=arithmetic",
            "data.batch_size=4",
            "data.num_prompts=12",
            "reward=callable",
            "reward.function=rlhf_lightning.rewards.examples:letter_rate",
            "stage.sampling.max_new_tokens=8",
            "stage.algorithm.num_minibatches=2",
            "stage.algorithm.dynamic_sampling=true",
            "stage.algorithm.shaping.overlong_buffer=4",
            "stage.algorithm.shaping.length_penalty=0.1",
            "stage.algorithm.shaping.correct_reward=0.1",
            "evaluator=heldout",
            "stage.evaluator.every=1",
            "stage.evaluator.num_problems=4",
            "stage.evaluator.num_samples=2",
            "stage.evaluator.pass_k=[1,2]",
            "stage.evaluator.correct_reward=0.1",
        ],
        4,
    ),
    "online_dpo": (
        "online_dpo",
        ["experiment=online_dpo_smoke", *_RL, "data.num_prompts=24", "data.batch_size=8"],
        4,
    ),
    # Asynchronous RL: the rollout generated ahead at the interruption is in the checkpoint.
    "grpo, rollouts one iteration ahead": (
        "grpo",
        [
            "experiment=grpo_smoke",
            *_RL,
            "data.num_prompts=24",
            "stage.max_staleness=1",
            "stage.rollout.own_copy=true",
        ],
        4,
    ),
}


def _run(stage: str, overrides: list[str], run_dir: Path) -> Path:
    run(compose_config(stage, [*_COMMON, *overrides], run_dir=run_dir))
    return run_dir


def _logged(
    run_dir: Path, after_step: int, up_to: float = float("inf")
) -> dict[tuple[int, str], list[float]]:
    """(step, metric) -> the values logged in (after_step, up_to], timing (`perf/*`) left out."""
    values: dict[tuple[int, str], list[float]] = {}
    with (run_dir / "metrics.csv").open() as f:
        for row in csv.DictReader(f):
            step = int(row["step"])
            if not after_step < step <= up_to:
                continue
            for name, value in row.items():
                if value and name != "step" and not name.startswith("perf/"):
                    values.setdefault((step, name), []).append(float(value))
    return values


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    return ckpt["state_dict"]


@pytest.mark.parametrize("name", list(CASES))
def test_interrupted_and_resumed_run_equals_the_straight_run(name, tmp_path):
    stage, overrides, n = CASES[name]
    straight = _run(stage, overrides, tmp_path / "straight")
    half = _run(stage, [*overrides, f"interrupt_at={n // 2}"], tmp_path / "half")
    ckpt = half / "checkpoints/last.ckpt"
    resumed = _run(stage, [*overrides, f"ckpt_path={ckpt}"], tmp_path / "resumed")

    expected, got = _weights(straight), _weights(resumed)
    assert expected.keys() == got.keys()
    changed = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not changed, f"{len(changed)} tensors differ, e.g. {changed[:3]}"

    # The second half's rows: the straight run's after the interruption point vs the resumed
    # run's (it logs only those). The logged `step` is Lightning's count of stepping batches
    # (optimizer steps; iterations for the RL stages), which the fit loop checkpoints.
    loops = torch.load(ckpt, map_location="cpu", weights_only=False)["loops"]
    boundary = loops["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"]
    assert _logged(resumed, boundary) == _logged(straight, boundary)
    assert _logged(resumed, boundary)  # something was compared
    if name == "grpo_rlvr":  # held-out evaluations and dropped groups were among them
        names = {metric for _, metric in _logged(resumed, boundary)}
        assert {"eval/accuracy", "eval/pass@2", "rollout/dropped_groups"} <= names

    # Determinism: the straight and the half run are two runs with one seed; up to the
    # interruption they logged the very same training values. (The half run also validates its
    # final weights when it stops, which the straight run does not do at that step.)
    def training_values(run_dir: Path) -> dict[tuple[int, str], list[float]]:
        logged = _logged(run_dir, -1, up_to=boundary - 1)
        return {k: v for k, v in logged.items() if k[1].startswith(("train/", "rollout/"))}

    assert training_values(half) and training_values(half) == training_values(straight)


# The stage's own logging interval (no trainer.log_every_n_steps override), interrupted where
# Lightning's restore logic is most fragile: supervised stages on a validation step (the
# checkpoint already holds that validation), an RL stage at the end of an epoch (Lightning
# does not count such a run as restarting).
_AT_VALIDATION = ["model=tiny", "trainer.max_steps=20", "trainer.val_check_interval=10"]
BOUNDARY_CASES = {
    "sft": ("sft", [*_AT_VALIDATION, "data=tiny", "data.max_samples=40", "stage.num_samples=0"]),
    "reward": (
        "reward",
        [*_AT_VALIDATION, "data=tiny_pairs", "data.max_samples=40", "stage.calibration=null"],
    ),
    "dpo": ("dpo", [*_AT_VALIDATION, "data=tiny_pairs", "data.max_samples=40"]),
    # 3 prompt batches per epoch: interrupted after the first epoch.
    "ppo": (
        "ppo",
        [
            "experiment=ppo_smoke",
            "stage.iterations=6",
            "stage.compare_prompts=0",
            "data.num_prompts=48",
            "stage.algorithm.epochs=1",
        ],
    ),  # fmt: skip
}
_QUIET = [o for o in _COMMON if not o.startswith("trainer.log_every_n_steps")]


@pytest.mark.parametrize("name", list(BOUNDARY_CASES))
def test_a_resumed_run_logs_the_straight_runs_rows_at_the_default_interval(name, tmp_path):
    stage, overrides = BOUNDARY_CASES[name]
    half_way = {"ppo": 3}.get(name, 10)

    def rows(run_dir: Path) -> list[tuple[int, dict[str, str]]]:
        with (run_dir / "metrics.csv").open() as f:
            return [
                (int(row["step"]), {k: v for k, v in row.items() if v and "perf/" not in k})
                for row in csv.DictReader(f)
            ]

    def go(more: list[str], run_dir: Path) -> list[tuple[int, dict[str, str]]]:
        run(compose_config(stage, [*_QUIET, *overrides, *more], run_dir=run_dir))
        return rows(run_dir)

    straight = go([], tmp_path / "straight")
    go([f"interrupt_at={half_way}"], tmp_path / "half")
    resumed = go([f"ckpt_path={tmp_path / 'half/checkpoints/last.ckpt'}"], tmp_path / "resumed")
    first = resumed[0][0]
    assert resumed == [r for r in straight if r[0] >= first], (straight, resumed)
    assert len(resumed) >= 2


@pytest.mark.parametrize("name", ["sft", "ppo"])
def test_a_finished_run_resumed_trains_no_further_and_writes_its_results(name, tmp_path):
    """What a run stopped while writing its results (samples, export) is told to do."""
    stage, overrides, _ = CASES[name]
    done = _run(stage, overrides, tmp_path / "done")
    before = torch.load(done / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    ckpt = tmp_path / "last.ckpt"
    (done / "checkpoints/last.ckpt").rename(ckpt)
    again = _run(stage, [*overrides, f"ckpt_path={ckpt}", "export.enabled=true"], tmp_path / "b")
    after = torch.load(again / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert after["global_step"] == before["global_step"]
    assert all(torch.equal(before["state_dict"][k], v) for k, v in after["state_dict"].items())
    assert (again / "model" / "config.json").is_file()
