"""GRPO in an environment, end to end (experiment=guess_number_smoke, a tiny random policy):
the run directory holds the environment's metrics, the held-out evaluation and readable
multi-turn samples; the policy trains."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from rlhf_lightning.api import compose_config
from rlhf_lightning.envs import TurnLimits
from rlhf_lightning.errors import ConfigError
from rlhf_lightning.train import run

QUIET = ["trainer.log_every_n_steps=1", "checkpoint.every_n_steps=1000"]


def test_a_multi_turn_grpo_run_logs_episodes_evaluations_and_conversations(tmp_path):
    summary = run(compose_config("grpo", ["experiment=guess_number_smoke", *QUIET], tmp_path))
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    for name in ("env/success_rate", "env/turns", "env/closed_turns", "env/template_rewrites"):
        assert metrics[name].notna().sum() == 4, name  # one row per iteration
    assert (metrics["env/turns"].dropna() > 1).all()  # every game ran several turns
    # Held-out games before the first iteration, after the second and after the last: once
    # each, not repeated on later rows.
    evaluated = metrics.dropna(subset=["eval/success_rate"])
    assert len(evaluated) == 3
    assert "eval/success_rate" in summary["metrics"]

    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    during = [r for r in rows if "ref_conversation" not in r]
    assert during and all(r["turns"] >= 2 for r in during)
    conversation = during[0]["conversation"]
    assert conversation[0]["role"] == "user" and conversation[1]["role"] == "assistant"
    assert [m["role"] for m in conversation[1::2]] == ["assistant"] * len(conversation[1::2])
    assert during[0]["completion"].startswith("assistant: ")  # readable transcript
    compared = [r for r in rows if "ref_conversation" in r]
    assert len(compared) == 4 and all(r["ref_conversation"][0]["role"] == "user" for r in compared)
    page = (tmp_path / "report/index.html").read_text()
    assert "assistant: " in page and "user: " in page
    assert summary["global_step"] == 16  # 4 iterations x 2 epochs x 2 minibatches


def test_turn_limits_are_checked_at_construction():
    for bad in (
        {"max_turns": 0},
        {"on_template_rewrite": "rewrite"},
        {"unfinished_turns": "ignore"},
    ):
        try:
            TurnLimits(**bad)
        except ConfigError as err:
            assert "stage.turns" in str(err)
        else:
            raise AssertionError(bad)


@pytest.mark.parametrize("stage", ["rloo", "ppo"])
def test_rloo_and_ppo_train_on_multi_turn_episodes(stage, tmp_path):
    # The smoke recipe's environment and limits under another stage (PPO: values and GAE on
    # the policy's tokens only).
    overrides = [
        "env=guess_number",
        "model=tiny",
        "reward=callable",
        "reward.function=rlhf_lightning.rewards.examples:letter_rate",
        "stage.reward=${reward}",
        "stage.turns.unfinished_turns=close",
        "stage.turns.max_turns=3",
        "stage.turns.max_total_tokens=96",
        "stage.sampling.max_new_tokens=6",
        "stage.env_eval.num_rows=4",
        "stage.env_eval.repeats=1",
        "data.batch_size=4",
        "data.num_prompts=16",
        "stage.iterations=2",
        "stage.compare_prompts=0",
        "report=false",
        *QUIET,
    ]
    run(compose_config(stage, overrides, tmp_path))
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert (metrics["env/turns"].dropna() > 1).all()
    assert metrics["train/policy_loss"].dropna().map(math.isfinite).all()
    if stage == "ppo":
        assert metrics["train/value_loss"].dropna().map(math.isfinite).all()


def test_stage_eval_plays_the_held_out_games_of_a_trained_run(tmp_path):
    # A run directory (its model/ export) evaluated with stage=eval gives the numbers the RL
    # stage logged for the same policy: the same games, seed and sampling.
    games = [
        "env=guess_number",
        "stage.env.wasted_cost=0.5",  # replies without a number cost: a reward mean that varies
        "stage.turns.unfinished_turns=close",  # a random policy's turns reach the game
        "stage.env_eval.num_rows=6",
        "stage.env_eval.repeats=2",
        "stage.env_eval.sample_rows=3",
        "trainer.enable_progress_bar=false",
    ]
    trained = [
        "model=tiny",
        "data.batch_size=4",
        "data.num_prompts=8",
        "stage.iterations=1",
        "stage.compare_prompts=0",
        "report=false",
        *QUIET,
    ]
    run(compose_config("grpo", [*games, *trained], tmp_path / "grpo"))
    logged = pd.read_csv(tmp_path / "grpo" / "metrics.csv").dropna(subset=["eval/success_rate"])
    after = logged[logged["step"] == 1].iloc[0]  # the trained policy

    run_dir = tmp_path / "eval"
    model = f"model.name_or_path={tmp_path / 'grpo'}"
    summary = run(compose_config("eval", [*games, model], run_dir))
    written = json.loads((run_dir / "eval.json").read_text())
    assert written["num_problems"] == 12 and written["data"] == "guess_number"
    for name in ("success_rate", "reward_mean", "turns"):
        assert written[name] == pytest.approx(after[f"eval/{name}"]), name
        assert summary["metrics"][f"eval/{name}"] == pytest.approx(written[name])
    assert written["reward_mean"] < 0  # some replies held no number
    rows = [json.loads(line) for line in (run_dir / "eval_samples.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and rows[0]["conversation"][0]["role"] == "user"
    assert "## Episodes" in (run_dir / "eval.md").read_text()
    assert not (run_dir / "model").exists()
