"""Built-in tasks with right answers: shape, determinism, held-out problems, correct references,
and the columns reaching a verifier through the RL prompt DataModule."""

from __future__ import annotations

import operator
import re
from fractions import Fraction

import pytest

from rlhf_lightning.data.loading import load_table
from rlhf_lightning.data.prompts import PromptDataModule
from rlhf_lightning.data.tasks import (
    PROBLEMS,
    TASKS,
    build_arithmetic,
    build_code_tasks,
    build_countdown,
    build_task,
)
from rlhf_lightning.errors import DataError
from rlhf_lightning.rewards import CodeReward, CountdownReward, MathReward
from rlhf_lightning.rewards.sandbox import Sandbox, SandboxLimits
from rlhf_lightning.rewards.verifiers import solves

SIZES = {
    "arithmetic": {"train": 4000, "validation": 400},
    "countdown": {"train": 4000, "validation": 400},
    "code_tasks": {"train": 40, "validation": 8},
    "tool_arithmetic": {"train": 2000, "validation": 200},
    "guess_number": {"train": 208, "validation": 64},
    "codebreaker": {"train": 48, "validation": 16},
}
COLUMNS = {
    "arithmetic": ["prompt", "answer", "digits", "completion"],
    "countdown": ["prompt", "numbers", "target", "solution", "completion"],
    "code_tasks": ["prompt", "entry_point", "tests", "solution", "completion"],
    "tool_arithmetic": ["prompt", "answer"],
    "guess_number": ["prompt", "secret", "high", "max_guesses"],
    "codebreaker": ["prompt", "code"],
}
# What makes two rows the same problem: the prompt, or for the games (one instruction for
# every game) the hidden state the environment plays from.
PROBLEM = {"guess_number": ("secret", "high", "max_guesses"), "codebreaker": ("code",)}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_splits_sizes_columns_and_no_shared_problem(name):
    data = load_table(name, split=None)
    assert data is load_table(name, split=None)  # built once per process
    assert {split: len(rows) for split, rows in data.items()} == SIZES[name]
    for rows in data.values():
        assert rows.column_names == COLUMNS[name]
    key = PROBLEM.get(name, ("prompt",))
    train, validation = (
        {tuple(row[k] for k in key) for row in data[s]} for s in ("train", "validation")
    )
    assert len(train) == SIZES[name]["train"] and len(validation) == SIZES[name]["validation"]
    assert not train & validation


def test_generation_is_deterministic():
    for build in (build_arithmetic, build_countdown):
        first, again = build.__wrapped__(), build.__wrapped__()
        for split in ("train", "validation"):
            assert first[split][:] == again[split][:]
    assert build_arithmetic.__wrapped__(seed=1)["train"][:5] != build_arithmetic()["train"][:5]


ARITHMETIC_PROMPT = re.compile(
    r"Compute (\d+) ([-+*]) (\d+)\. Answer with <answer>number</answer>\."
)


def test_arithmetic_answers_and_difficulty():
    data = build_arithmetic()
    ops = {"+": operator.add, "-": operator.sub, "*": operator.mul}
    problems = {}
    for split in ("train", "validation"):
        for row in data[split]:
            a, op, b = ARITHMETIC_PROMPT.fullmatch(row["prompt"]).groups()
            assert int(row["answer"]) == ops[op](int(a), int(b)) >= 0
            assert row["digits"] == max(len(a), len(b)) <= 3
            # a + b and b + a are one problem: never one in each split
            key = (op, *sorted((int(a), int(b)))) if op != "-" else (op, int(a), int(b))
            assert problems.setdefault(key, split) == split
    assert {row["digits"] for row in data["train"]} == {1, 2, 3}
    harder = build_arithmetic.__wrapped__(num_train=50, num_validation=10, max_digits=5)
    assert max(harder["train"]["digits"]) == 5


@pytest.mark.parametrize(
    ("path", "sizes", "max_number", "max_target"),
    [
        ("countdown", (3, 4), 50, 200),
        # What experiment=rlvr_countdown trains on.
        ("countdown?max_numbers=3&max_number=15&max_target=60", (3,), 15, 60),
    ],
)
def test_countdown_problems_are_solvable_by_their_reference(path, sizes, max_number, max_target):
    data = build_task(path)
    assert (len(data["train"]), len(data["validation"])) == (4000, 400)
    for split in ("train", "validation"):
        for row in data[split]:
            numbers, target, solution = row["numbers"], row["target"], row["solution"]
            assert len(numbers) in sizes and all(1 <= n <= max_number for n in numbers)
            assert 1 <= target <= max_target and str(numbers) in row["prompt"]
            assert solves(solution, numbers, target)
            # An independent check of the reference: exact arithmetic on the trusted string.
            exact = re.sub(r"(\d+)", r"Fraction(\1)", solution)
            assert eval(exact, {"Fraction": Fraction}) == target
    pairs = {(tuple(sorted(r["numbers"])), r["target"]) for r in data["validation"]}
    assert not pairs & {(tuple(sorted(r["numbers"])), r["target"]) for r in data["train"]}


def test_countdown_problem_sizes_are_an_argument():
    two = build_countdown.__wrapped__(num_train=20, num_validation=5, min_numbers=2, max_numbers=2)
    assert {len(n) for n in two["train"]["numbers"]} == {2}
    with pytest.raises(ValueError, match="min_numbers <= max_numbers"):
        build_countdown.__wrapped__(min_numbers=4, max_numbers=3)


def test_code_references_pass_their_tests_and_a_wrong_solution_fails_them():
    sandbox = Sandbox(SandboxLimits(timeout_s=5.0))
    assert len(PROBLEMS) == 48 and len({p.entry_point for p in PROBLEMS}) == 48
    references = sandbox.run_many([(p.solution, p.tests) for p in PROBLEMS])
    failures = [
        (p.entry_point, r) for p, r in zip(PROBLEMS, references, strict=True) if r.fraction != 1.0
    ]
    assert not failures
    wrong = [
        (f"def {p.entry_point}(*args, **kwargs):\n    return None\n", p.tests) for p in PROBLEMS
    ]
    assert all(result.passed == 0 for result in sandbox.run_many(wrong))
    rows = build_code_tasks()["train"]
    for row in rows:
        assert row["prompt"].startswith(f"Write a Python function `{row['entry_point']}(")
        assert row["prompt"].endswith("Answer with the code in a ```python block.")
        assert 3 <= len(row["tests"]) <= 6


def prompt_batch(path: str, n: int) -> dict[str, list]:
    datamodule = PromptDataModule(path=path, num_prompts=None, batch_size=n)
    datamodule.setup()
    first = datamodule.first_batch(n)
    batch = next(iter(datamodule.train_dataloader()))
    assert set(batch) == set(first) and len(batch["prompts"]) == n
    return batch


def test_prompt_datamodule_carries_the_columns_to_the_verifiers():
    """The extra columns (lists included) reach the reward call as keyword arguments."""
    batch = prompt_batch("countdown", 4)
    prompts, columns = batch.pop("prompts"), batch
    assert all(isinstance(numbers, list) for numbers in columns["numbers"])
    # The `completion` column (SFT targets) is the reference in the asked format.
    assert columns["completion"] == [f"<answer>{s}</answer>" for s in columns["solution"]]
    assert CountdownReward()(prompts, columns["completion"], **columns).tolist() == [1.0] * 4

    batch = prompt_batch("arithmetic", 4)
    prompts = batch.pop("prompts")
    assert batch["completion"] == [f"<answer>{a}</answer>" for a in batch["answer"]]
    assert MathReward(symbolic=False)(prompts, batch["completion"], **batch).tolist() == [1.0] * 4

    batch = prompt_batch("code_tasks", 2)
    prompts = batch.pop("prompts")
    assert all(isinstance(tests, list) for tests in batch["tests"])
    assert batch["completion"] == [f"```python\n{s}```" for s in batch["solution"]]
    assert CodeReward(timeout_s=5.0)(prompts, batch["completion"], **batch).tolist() == [1.0, 1.0]


def test_task_arguments_after_a_question_mark():
    data = load_table("arithmetic?max_digits=2&operations=+-&num_train=40&num_validation=8", None)
    assert {split: len(rows) for split, rows in data.items()} == {"train": 40, "validation": 8}
    for row in data["train"]:
        a, op, b = ARITHMETIC_PROMPT.fullmatch(row["prompt"]).groups()
        assert op in "+-" and max(len(a), len(b)) <= 2
    with pytest.raises(DataError, match=r"'digits=2' is not an argument of the arithmetic task"):
        load_table("arithmetic?digits=2", None)
    with pytest.raises(DataError, match="operations must be some of"):
        load_table("arithmetic?operations=/", None)
