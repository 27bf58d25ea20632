"""Held-out evaluation (modules/evaluation.py): hand-counted metrics with a scripted verifier,
answers independent of batching, each process's share; `stage=eval` on a model or a run
directory; the RL stages' periodic evaluation in metrics.csv and eval.json."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from rlhf_lightning.api import compose_config
from rlhf_lightning.demo.tokenizer import ensure_demo_tokenizer
from rlhf_lightning.models import ModelSpec, export_model, load_model_and_tokenizer
from rlhf_lightning.modules import Evaluator
from rlhf_lightning.modules import evaluation as evaluation_module
from rlhf_lightning.rollout import SamplingConfig, generate_rollout
from rlhf_lightning.train import run

TINY = {"type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 64}
# GRPO on the arithmetic task with a tiny random policy, in seconds.
GRPO_ARITHMETIC = [
    "model=tiny",
    "data=arithmetic",
    "reward=math",
    "reward.symbolic=false",
    "stage.algorithm.num_minibatches=2",
    "stage.compare_prompts=0",
    "data.batch_size=4",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


@pytest.fixture(scope="module")
def tiny_lm():
    return load_model_and_tokenizer(ModelSpec(tokenizer=str(ensure_demo_tokenizer()), arch=TINY))


class FirstCCorrect:
    """A scripted verifier: within a run of identical consecutive prompts (one problem's
    samples), the first C[prompt] answers are right. Greedy answers come one per prompt, so a
    problem is answered right greedily iff C >= 1."""

    def __init__(self, correct: dict[str, int]) -> None:
        self.correct = correct

    def __call__(self, prompts, completions, **columns):
        scores, run_index = [], 0
        for i, prompt in enumerate(prompts):
            run_index = run_index + 1 if i and prompts[i - 1] == prompt else 0
            scores.append(1.0 if run_index < self.correct[prompt] else 0.0)
        return torch.tensor(scores)


PROBLEMS = {"prompts": ["a", "b", "c"], "answer": ["1", "2", "3"]}


def test_accuracy_and_pass_at_k_by_hand(tiny_lm):
    model, tok = tiny_lm
    verifier = FirstCCorrect({"a": 0, "b": 1, "c": 4})
    evaluator = Evaluator(num_samples=4, pass_k=[1, 2, 8], batch_size=8)
    result = evaluator.evaluate(model, tok, PROBLEMS, verifier, max_new_tokens=1)
    m = result.metrics
    assert m["accuracy"] == pytest.approx(2 / 3)  # b and c: C >= 1
    assert m["reward_mean"] == pytest.approx(2 / 3)
    # pass@1 = mean(c / n) = (0 + 1/4 + 4/4) / 3
    assert m["pass@1"] == pytest.approx((0 + 0.25 + 1) / 3)
    # pass@2 = mean(1 - C(n-c, 2) / C(n, 2)): a 0; b 1 - C(3,2)/C(4,2) = 1 - 3/6; c 1
    assert m["pass@2"] == pytest.approx((0 + 0.5 + 1) / 3)
    assert "pass@8" not in m  # k above the 4 samples drawn
    assert m["num_problems"] == 3 and m["response_length"] == 1.0
    greedy = generate_rollout(
        model, tok, PROBLEMS["prompts"], config=SamplingConfig(1, do_sample=False)
    )
    assert m["truncation_rate"] == pytest.approx(float((~greedy.contains_stop).float().mean()))
    assert [r["completion"] for r in result.rows] == greedy.completions
    assert [r["samples_correct"] for r in result.rows] == [0, 1, 4]


def test_sampled_answers_do_not_depend_on_the_batch_size(tiny_lm):
    model, tok = tiny_lm
    verifier = FirstCCorrect({"a": 1, "b": 1, "c": 1})
    answers = [
        [r["samples"] for r in Evaluator(num_samples=3, batch_size=size, seed=5)
         .evaluate(model, tok, PROBLEMS, verifier, max_new_tokens=5).rows]
        for size in (64, 3)
    ]  # fmt: skip
    assert answers[0] == answers[1]


def test_each_process_evaluates_its_own_share(monkeypatch):
    problems = {"prompts": list("abcde"), "answer": list("12345")}
    shares = []
    for rank in range(2):
        monkeypatch.setattr(evaluation_module, "rank_and_world", lambda r=rank: (r, 2))
        shares.append(evaluation_module._this_rank_share(problems)["prompts"])
    assert shares == [["a", "b"], ["c", "d", "e"]]


def test_evaluation_every_n_iterations():
    evaluator = Evaluator(every=3)
    assert [i for i in range(8) if evaluator.due(i)] == [0, 3, 6]
    assert [i for i in range(4) if Evaluator(every=0).due(i)] == [0]


def test_stage_eval_on_a_run_directory(tiny_lm, tmp_path):
    model, tok = tiny_lm
    export_model(model, tok, tmp_path / "earlier_run" / "model")
    run_dir = tmp_path / "eval"
    cfg = compose_config(
        "eval",
        [
            f"model.name_or_path={tmp_path / 'earlier_run'}",  # a run directory: its model/
            "stage.evaluator.num_problems=6",
            "stage.evaluator.num_samples=2",
            "stage.evaluator.pass_k=[1,2]",
            "stage.evaluator.batch_size=4",
            "stage.max_new_tokens=4",
            "trainer.enable_progress_bar=false",
        ],
        run_dir=run_dir,
    )
    summary = run(cfg)
    written = json.loads((run_dir / "eval.json").read_text())
    assert {"accuracy", "pass@1", "pass@2", "response_length", "reward_mean"} <= set(written)
    assert written["num_problems"] == 6 and written["data"] == "arithmetic"
    assert written["split"] == "validation"
    assert summary["metrics"]["eval/accuracy"] == pytest.approx(written["accuracy"])
    assert summary["metrics"]["eval/pass@2"] == pytest.approx(written["pass@2"])
    rows = [json.loads(line) for line in (run_dir / "eval_samples.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(len(r["samples"]) == 2 for r in rows)
    assert "Greedy answers" in (run_dir / "eval.md").read_text()
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "model").exists()


def test_grpo_evaluates_before_every_n_iterations_and_at_the_end(tmp_path):
    run_dir = tmp_path / "grpo"
    cfg = compose_config(
        "grpo",
        [
            *GRPO_ARITHMETIC,
            "evaluator=heldout",
            "stage.evaluator.every=2",
            "stage.evaluator.num_problems=4",
            "stage.iterations=3",
            "stage.sampling.max_new_tokens=6",
        ],
        run_dir=run_dir,
    )
    run(cfg)
    metrics = pd.read_csv(run_dir / "metrics.csv")
    evals = metrics.dropna(subset=["eval/accuracy"])
    # after 0 and 2 iterations (every=2), and after the last (3)
    assert evals["step"].tolist() == [0, 2, 3]
    assert evals["eval/response_length"].between(1, 6).all()
    assert (evals["eval/accuracy"] == 0).all()  # a random tiny policy cannot add numbers
    assert json.loads((run_dir / "eval.json").read_text())["step"] == 3
    rows = (run_dir / "eval_samples.jsonl").read_text().splitlines()
    assert sorted({json.loads(r)["step"] for r in rows}) == [0, 2, 3] and len(rows) == 12


def test_an_rl_stage_without_an_eval_split_says_how_to_fix_it(tmp_path):
    cfg = compose_config(
        "grpo",
        ["experiment=grpo_smoke", "evaluator=heldout", "stage.iterations=1", "data.batch_size=4"],
        run_dir=tmp_path / "run",
    )
    with pytest.raises(Exception, match="no evaluation split.*data.eval_split"):
        run(cfg)


def test_dynamic_sampling_counts_dropped_groups(tmp_path):
    """A random tiny policy never answers right: every group scores alike, every group is
    dropped, and the iterations make no update."""
    run_dir = tmp_path / "dapo"
    cfg = compose_config(
        "grpo",
        [
            *GRPO_ARITHMETIC,
            "stage.algorithm.dynamic_sampling=true",
            "stage.iterations=2",
            "stage.sampling.max_new_tokens=4",
        ],
        run_dir=run_dir,
    )
    summary = run(cfg)
    rows = pd.read_csv(run_dir / "metrics.csv").dropna(subset=["rollout/dropped_groups"])
    assert rows["rollout/dropped_groups"].tolist() == [4.0, 4.0]
    assert summary["global_step"] == 0


def test_run_directory_as_model_path_loads_its_export(tiny_lm, tmp_path):
    from rlhf_lightning.models.loading import resolve_model_path

    model, tok = tiny_lm
    export_model(model, tok, tmp_path / "run" / "model")
    assert resolve_model_path(str(tmp_path / "run")) == str(tmp_path / "run" / "model")
    assert resolve_model_path(str(tmp_path / "run" / "model")) == str(tmp_path / "run" / "model")
    assert Path(resolve_model_path("gpt2") or "") == Path("gpt2")
