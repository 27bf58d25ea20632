"""Verifiers: rewards computed by checking a completion against a known right answer.

Each is a reward source (``source(prompts, completions, **columns) -> (B,) float32``) that reads
its reference from a batch column, so it pairs with a dataset that has one (the built-in tasks
``data=arithmetic``, ``countdown`` and ``code_tasks``) and mixes with other sources in
:class:`~rlhf_lightning.rewards.WeightedReward`:

* :class:`MathReward`: the final answer (``<answer>``, ``\\boxed{}``, last number, a regex)
  against the ``answer`` column: as text, as numbers within a tolerance, or symbolically with
  ``math_verify`` under a time bound.
* :class:`FormatReward`: the completion matches the expected structure (a regex).
* :class:`CountdownReward`: an arithmetic expression reaching ``target`` with ``numbers``.
* :class:`CodeReward`: the share of ``tests`` the completion's program passes in the sandbox.
"""

from rlhf_lightning.rewards.verifiers.code_tests import CodeReward
from rlhf_lightning.rewards.verifiers.countdown import CountdownReward, solves
from rlhf_lightning.rewards.verifiers.extract import extract_answer, extract_code, last_boxed
from rlhf_lightning.rewards.verifiers.format_rule import FORMATS, FormatReward
from rlhf_lightning.rewards.verifiers.math_answer import MathReward, SymbolicChecker, parse_number

__all__ = [
    "FORMATS",
    "CodeReward",
    "CountdownReward",
    "FormatReward",
    "MathReward",
    "SymbolicChecker",
    "extract_answer",
    "extract_code",
    "last_boxed",
    "parse_number",
    "solves",
]
