"""Code correctness as a reward: run the completion's program with the row's tests, sandboxed."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from rlhf_lightning.errors import RewardError
from rlhf_lightning.rewards.base import check_inputs, check_scores
from rlhf_lightning.rewards.sandbox import Sandbox, SandboxLimits, SandboxResult
from rlhf_lightning.rewards.verifiers.common import batch_column
from rlhf_lightning.rewards.verifiers.extract import extract_code

log = logging.getLogger(__name__)

MODES = ("fraction", "all")


class CodeReward:
    """The share of a row's tests the completion's code passes (or 1/0 for all of them).

    The program is the last fenced ```python block of the completion (else its whole text); it
    runs in a :class:`~rlhf_lightning.rewards.sandbox.Sandbox`, then each test runs in the
    program's namespace. The batch's programs run concurrently, each within the time limit.
    A program that times out, crashes, raises or exits before the tests keeps only the tests
    that passed before that (usually none).

    Args:
        tests_column: The batch column with each row's tests: a list of statements (usually
            ``assert`` lines) or one string (one test, possibly several lines).
        mode: ``fraction`` (passed / total) or ``all`` (1 only when every test passes).
        timeout_s: Wall-clock seconds per program (code and its tests).
        memory_mb: Address space per program, MiB.
        max_processes: Processes (and threads) per program.
        max_workers: Programs run at once; None: the CPU count, at most 8.
        total_timeout_s: Bound on scoring the whole batch; programs not started by then score 0.
            None: no bound beyond each program's own.

    After each call, ``last_results`` holds each row's
    :class:`~rlhf_lightning.rewards.sandbox.SandboxResult` and ``last_statuses`` counts them
    by status (for logging).

    Example:
        >>> reward = CodeReward(timeout_s=2.0)
        >>> reward(["Write double(x)."], ["```python\\ndef double(x):\\n    return 2 * x\\n```"],
        ...        tests=[["assert double(2) == 4", "assert double(0) == 1"]]).tolist()
        [0.5]
    """

    def __init__(
        self,
        tests_column: str = "tests",
        mode: str = "fraction",
        timeout_s: float = 5.0,
        memory_mb: int = 512,
        max_processes: int = 16,
        max_workers: int | None = None,
        total_timeout_s: float | None = None,
    ) -> None:
        self.source = "code reward"
        if mode not in MODES:
            raise RewardError(f"{self.source}: mode={mode!r}. Fix: one of {', '.join(MODES)}.")
        self.tests_column = tests_column
        self.mode = mode
        self.max_workers = max_workers
        self.total_timeout_s = total_timeout_s
        limits = SandboxLimits(
            timeout_s=timeout_s, memory_mb=memory_mb, max_processes=max_processes
        )
        self.sandbox = Sandbox(limits)
        self.last_results: list[SandboxResult] = []
        self.last_statuses: dict[str, int] = {}

    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> Tensor:
        """Score the batch. Shapes: ``prompts``/``completions`` length B; returns (B,) float32."""
        batch = check_inputs(prompts, completions, columns, self.source)
        tests = [
            self._tests(row_tests, index)
            for index, row_tests in enumerate(
                batch_column(columns, self.tests_column, batch, self.source)
            )
        ]
        jobs = [(extract_code(c), t) for c, t in zip(completions, tests, strict=True)]
        results = self.sandbox.run_many(
            jobs, max_workers=self.max_workers, total_timeout_s=self.total_timeout_s
        )
        self.last_results = results
        self.last_statuses = dict(Counter(result.status for result in results))
        scores = [self.score(result) for result in results]
        return check_scores(torch.tensor(scores), batch, self.source, prompts=prompts)

    def score(self, result: SandboxResult) -> float:
        """``fraction``: passed / total; ``all``: 1.0 when every test passed, else 0.0."""
        if self.mode == "all":
            return float(result.total > 0 and result.passed == result.total)
        return result.fraction

    def _tests(self, row_tests: Any, index: int) -> list[str]:
        if isinstance(row_tests, str):
            row_tests = [row_tests]
        if not isinstance(row_tests, Sequence) or not all(isinstance(t, str) for t in row_tests):
            raise RewardError(
                f"{self.source}: row {index} of column '{self.tests_column}' is "
                f"{type(row_tests).__name__}, not a list of test strings. Fix: give each row a "
                "list of statements such as 'assert f(1) == 2' (or one string)."
            )
        if not row_tests:
            raise RewardError(
                f"{self.source}: row {index} has no tests, so any program would score full "
                "marks. Fix: give every row at least one test."
            )
        return list(row_tests)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(tests_column={self.tests_column!r}, mode={self.mode!r}, "
            f"limits={self.sandbox.limits})"
        )
