"""The Countdown numbers game as a reward: reach the target with the given numbers.

A completion answers with an arithmetic expression, e.g. ``<answer>(44 - 19) * 3 + 7</answer>``
for numbers ``[3, 7, 19, 44]`` and target 82. It is correct when

* it uses only integers, ``+ - * /`` and parentheses (no unary minus, no other syntax),
* it uses **each given number exactly once** (the TinyZero convention: the sorted numbers of the
  expression equal the sorted given numbers; ``use_all=False`` relaxes this to *at most once*,
  the rule of the original game), and
* its exact value (fractions, no rounding) equals the target.

The expression is parsed with Python's ``ast`` and evaluated by walking the tree over
:class:`fractions.Fraction`; nothing is ever passed to ``eval``. A ``= rhs`` after the
expression is ignored (``3 * 4 = 12`` is read as ``3 * 4``).
"""

from __future__ import annotations

import ast
import operator
import re
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import torch
from torch import Tensor

from rlhf_lightning.errors import RewardError
from rlhf_lightning.rewards.base import check_inputs, check_scores
from rlhf_lightning.rewards.verifiers.common import batch_column, check_score_values
from rlhf_lightning.rewards.verifiers.extract import compile_answer_pattern, extract_answer

_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_ALLOWED_CHARS = re.compile(r"[\d\s+\-*/()]*")
MAX_EXPRESSION_CHARS = 200


class InvalidExpression(ValueError):
    """Not an expression of integers, ``+ - * /`` and parentheses (or longer than allowed)."""


def parse_expression(text: str) -> ast.expr:
    """The syntax tree of an integer ``+ - * /`` expression.

    Raises:
        InvalidExpression: anything else (names, calls, powers, floats, unary minus...).
    """
    text = text.split("=", 1)[0].strip()
    if not text or len(text) > MAX_EXPRESSION_CHARS or not _ALLOWED_CHARS.fullmatch(text):
        raise InvalidExpression(f"not an arithmetic expression: {text[:40]!r}")
    try:
        tree = ast.parse(text, mode="eval").body
    except (SyntaxError, RecursionError, MemoryError, ValueError) as err:
        raise InvalidExpression(str(err)) from err
    for node in ast.walk(tree):
        allowed = isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS
        allowed |= isinstance(node, ast.operator) and type(node) in _OPERATORS
        allowed |= isinstance(node, ast.Constant) and type(node.value) is int
        if not allowed:
            raise InvalidExpression(f"{type(node).__name__} is not allowed")
    return tree


def expression_numbers(tree: ast.expr) -> list[int]:
    """The integers an expression uses, in order of appearance."""
    constants = [node for node in ast.walk(tree) if isinstance(node, ast.Constant)]
    constants.sort(key=lambda node: (node.lineno, node.col_offset))
    return [int(node.value) for node in constants]


def evaluate(tree: ast.expr) -> Fraction:
    """The exact value of a tree from :func:`parse_expression`.

    Raises:
        ZeroDivisionError: a division by zero anywhere in the expression.
    """
    if isinstance(tree, ast.Constant):
        return Fraction(tree.value)
    assert isinstance(tree, ast.BinOp)
    return _OPERATORS[type(tree.op)](evaluate(tree.left), evaluate(tree.right))


def uses_numbers(used: Sequence[int], given: Sequence[int], use_all: bool = True) -> bool:
    """Each given number exactly once (``use_all``) or at most once, and nothing else."""
    used_count, given_count = Counter(used), Counter(int(n) for n in given)
    if use_all:
        return used_count == given_count
    return all(used_count[n] <= given_count[n] for n in used_count)


def solves(expression: str, numbers: Sequence[int], target: int, use_all: bool = True) -> bool:
    """Whether ``expression`` reaches ``target`` with ``numbers`` under the rules above.

    Example:
        >>> solves("(44 - 19) * 3 + 7", [3, 7, 19, 44], 82)
        True
        >>> solves("44 + 19 + 7 + 3", [3, 7, 19, 44], 82)  # 73
        False
        >>> solves("7 / (3 - 3) + 44 - 19", [3, 3, 19, 44, 7], 82)  # division by zero
        False
    """
    try:
        tree = parse_expression(expression)
        return uses_numbers(expression_numbers(tree), numbers, use_all) and evaluate(tree) == target
    except (InvalidExpression, ZeroDivisionError):
        return False


class CountdownReward:
    """``correct`` for an expression that reaches the target, else ``format_score`` or ``wrong``.

    Args:
        numbers_column: The batch column with each row's numbers (a list of ints).
        target_column: The batch column with each row's target (an int).
        extract: Where the expression is (``answer``: ``<answer>...</answer>``; see
            :func:`~rlhf_lightning.rewards.verifiers.extract.extract_answer`).
        use_all: True: each number exactly once (TinyZero); False: each at most once.
        correct: Score of a correct expression.
        format_score: Score of an extracted answer that is not a correct expression (invalid
            syntax, wrong numbers, wrong value, division by zero). TinyZero uses 0.1.
        wrong: Score when no answer can be extracted.

    Example:
        >>> reward = CountdownReward()
        >>> reward(["p"] * 2, ["<answer>(44 - 19) * 3 + 7</answer>", "<answer>82</answer>"],
        ...        numbers=[[3, 7, 19, 44]] * 2, target=[82, 82]).tolist()
        [1.0, 0.0]
    """

    def __init__(
        self,
        numbers_column: str = "numbers",
        target_column: str = "target",
        extract: str = "answer",
        use_all: bool = True,
        correct: float = 1.0,
        format_score: float = 0.0,
        wrong: float = 0.0,
    ) -> None:
        self.source = "countdown reward"
        self.pattern = compile_answer_pattern(extract, self.source)
        check_score_values(self.source, correct=correct, format_score=format_score, wrong=wrong)
        self.numbers_column = numbers_column
        self.target_column = target_column
        self.extract = extract
        self.use_all = use_all
        self.correct = float(correct)
        self.format_score = float(format_score)
        self.wrong = float(wrong)

    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> Tensor:
        """Score the batch. Shapes: ``prompts``/``completions`` length B; returns (B,) float32."""
        batch = check_inputs(prompts, completions, columns, self.source)
        numbers = batch_column(columns, self.numbers_column, batch, self.source)
        targets = batch_column(columns, self.target_column, batch, self.source)
        scores = [
            self.score(completion, row_numbers, target)
            for completion, row_numbers, target in zip(completions, numbers, targets, strict=True)
        ]
        return check_scores(torch.tensor(scores), batch, self.source, prompts=prompts)

    def score(self, completion: str, numbers: Sequence[int], target: Any) -> float:
        """The reward of one completion."""
        expression = extract_answer(completion, self.pattern)
        if expression is None:
            return self.wrong
        try:
            goal = int(target)
            given = [int(n) for n in numbers]
        except (TypeError, ValueError) as err:
            raise RewardError(
                f"{self.source}: numbers={numbers!r}, target={target!r} are not integers. Fix: "
                f"columns '{self.numbers_column}' (lists of ints) and '{self.target_column}' "
                "(ints), as in data.path=countdown."
            ) from err
        if solves(expression, given, goal, self.use_all):
            return self.correct
        return self.format_score

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(numbers_column={self.numbers_column!r}, target_column="
            f"{self.target_column!r}, extract={self.extract!r}, use_all={self.use_all})"
        )
