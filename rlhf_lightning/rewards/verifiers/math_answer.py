"""A math answer checker as a reward source: the completion's final answer against a reference.

Comparison, cheapest first:

1. the same text after trimming (``"Paris"``/``"Paris"``, ``"x+1"``/``"x + 1"``);
2. both plain numbers (``-12``, ``1,250``, ``0.5``, ``3/4``): equal within ``tolerance``;
3. otherwise ``math_verify`` (``parse`` + ``verify``, LaTeX or plain expressions through
   ``sympy``: ``\\frac{1}{2}`` = ``0.5``, ``\\sqrt{2}/2`` = ``1/\\sqrt{2}``, ``x=3`` = ``3``).

Step 3 runs in a separate worker process, because ``sympy`` can spend unbounded time on a
pathological answer (``9^{9^{9^{9}}}`` asks for an integer with more digits than memory holds)
and a signal cannot interrupt that while it is inside C code: when one comparison takes longer
than ``timeout_s`` the worker is killed (and restarted for the next one) and the answer counts
as wrong. ``math_verify``'s own alarm-based timeouts also run there, in the worker's main thread,
which is the only thread where they work.
"""

from __future__ import annotations

import json
import logging
import math
import re
import select
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rlhf_lightning.errors import RewardError
from rlhf_lightning.rewards.base import check_inputs, check_scores
from rlhf_lightning.rewards.verifiers.common import batch_column, check_score_values
from rlhf_lightning.rewards.verifiers.extract import compile_answer_pattern, extract_answer

log = logging.getLogger(__name__)

# A plain number: optional sign, digits (thousands commas allowed), decimals, or a fraction.
# Bounded length and no exponent, so turning it into a Fraction is always cheap.
_NUMBER = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|[+-]?\.\d+")
_MAX_NUMBER_CHARS = 64
_WORKER = Path(__file__).with_name("_math_worker.py")


def parse_number(text: str) -> Fraction | None:
    """``text`` as an exact number when it is a plain one (``-1,250.5``, ``3/4``), else None.

    Surrounding ``$``, a trailing period and spaces are ignored.

    Example:
        >>> parse_number("$1,250$"), parse_number("-3/4"), parse_number("x+1")
        (Fraction(1250, 1), Fraction(-3, 4), None)
    """
    cleaned = text.strip().strip("$").strip().rstrip(".").replace(" ", "")
    if len(cleaned) > _MAX_NUMBER_CHARS or not _NUMBER.fullmatch(cleaned):
        return None
    try:
        return Fraction(cleaned.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


def numbers_close(predicted: Fraction, reference: Fraction, tolerance: float) -> bool:
    """``|predicted - reference| <= tolerance * max(1, |reference|)``: absolute near zero,
    relative for large numbers."""
    return abs(predicted - reference) <= Fraction(tolerance) * max(1, abs(reference))


class MathReward:
    """``correct`` when the completion's final answer equals the reference answer, else ``wrong``.

    Args:
        answer_column: The batch column with the reference answers (strings or numbers).
        extract: Where the answer is: ``answer`` (``<answer>...</answer>``), ``boxed``
            (``\\boxed{...}``), ``last_number``, or a regex whose group 1 is the answer. The last
            match counts; a completion without one scores ``wrong``.
        tolerance: Plain numbers match when ``|a - b| <= tolerance * max(1, |b|)``.
        symbolic: Whether answers that are not plain numbers go to ``math_verify`` (LaTeX and
            expressions); False: only text and number comparison.
        timeout_s: Longest one symbolic comparison may take (a longer one counts as wrong).
        correct: Score of a correct answer.
        wrong: Score of a wrong or missing answer.

    After each call, ``last_timeouts`` counts the comparisons that ran out of time.

    Example:
        >>> reward = MathReward()
        >>> reward(["Compute 6*7."] * 2, ["<answer>42</answer>", "<answer>41</answer>"],
        ...        answer=["42", "42"]).tolist()
        [1.0, 0.0]
    """

    def __init__(
        self,
        answer_column: str = "answer",
        extract: str = "answer",
        tolerance: float = 1e-6,
        symbolic: bool = True,
        timeout_s: float = 5.0,
        correct: float = 1.0,
        wrong: float = 0.0,
    ) -> None:
        self.source = "math reward"
        self.pattern = compile_answer_pattern(extract, self.source)
        if not (tolerance >= 0 and timeout_s > 0):
            raise RewardError(
                f"{self.source}: tolerance={tolerance}, timeout_s={timeout_s}. Fix: tolerance "
                ">= 0 and timeout_s > 0."
            )
        check_score_values(self.source, correct=correct, wrong=wrong)
        self.answer_column = answer_column
        self.extract = extract
        self.tolerance = tolerance
        self.symbolic = symbolic
        self.timeout_s = timeout_s
        self.correct = float(correct)
        self.wrong = float(wrong)
        self.last_timeouts = 0
        self._checker = SymbolicChecker(timeout_s) if symbolic else None

    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> Tensor:
        """Score the batch. Shapes: ``prompts``/``completions`` length B; returns (B,) float32."""
        batch = check_inputs(prompts, completions, columns, self.source)
        references = batch_column(columns, self.answer_column, batch, self.source)
        self.last_timeouts = 0
        scores = [
            self.correct if self.is_correct(completion, reference) else self.wrong
            for completion, reference in zip(completions, references, strict=True)
        ]
        return check_scores(torch.tensor(scores), batch, self.source, prompts=prompts)

    def is_correct(self, completion: str, reference: Any) -> bool:
        """Whether ``completion``'s extracted answer equals ``reference``."""
        answer = extract_answer(completion, self.pattern)
        if not answer:
            return False
        return self.same_answer(answer, str(reference).strip())

    def same_answer(self, answer: str, reference: str) -> bool:
        """Compare two answers as text, then as numbers, then symbolically (see the module)."""
        if " ".join(answer.split()) == " ".join(reference.split()):
            return True
        predicted, expected = parse_number(answer), parse_number(reference)
        if predicted is not None and expected is not None:
            return numbers_close(predicted, expected, self.tolerance)
        if self._checker is None:
            return False
        verdict = self._checker.check(reference, answer)
        if verdict is None:
            self.last_timeouts += 1
            return False
        return verdict

    def close(self) -> None:
        """Stop the symbolic worker process (it also stops with this process)."""
        if self._checker is not None:
            self._checker.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_checker"] = None  # a process does not pickle; a copy starts its own
        state["_restart_checker"] = self._checker is not None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        restart = state.pop("_restart_checker")
        self.__dict__.update(state)
        self._checker = SymbolicChecker(self.timeout_s) if restart else None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(answer_column={self.answer_column!r}, "
            f"extract={self.extract!r}, tolerance={self.tolerance}, symbolic={self.symbolic}, "
            f"timeout_s={self.timeout_s})"
        )


class SymbolicChecker:
    """``math_verify`` comparisons in a worker process, each bounded by ``timeout_s``.

    The worker (``_math_worker.py``, JSON lines over pipes) starts on first use (importing
    sympy takes about a second) and is replaced after a comparison that ran out of time.
    Thread-safe: comparisons are serialised.
    """

    def __init__(self, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None

    def check(self, reference: str, answer: str) -> bool | None:
        """True/False: ``math_verify`` says equal or not; None: it took longer than the bound."""
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._start()
            assert self._process is not None and self._process.stdin is not None
            try:
                self._process.stdin.write(json.dumps([reference, answer]) + "\n")
                self._process.stdin.flush()
                reply = self._read_line(self.timeout_s)
            except (OSError, ValueError):  # the worker died (out of memory)
                reply = None
            if reply is not None:
                return bool(json.loads(reply))
            log.warning(
                "math reward: comparing %r with reference %r took over %.1f s; scored as wrong",
                answer[:80],
                reference[:80],
                self.timeout_s,
            )
            self._stop()
            return None

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _start(self) -> None:
        timeout = max(1, math.ceil(self.timeout_s))
        self._process = subprocess.Popen(
            [sys.executable, "-c", _WORKER.read_text(encoding="utf-8"), str(timeout)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # math_verify logs every unparsable answer
            text=True,
            bufsize=1,
        )
        # The first line waits for sympy's import: give it its own, longer bound.
        ready = self._read_line(60.0)
        if ready is None or json.loads(ready) != "ready":
            self._stop()
            problem = "did not start within 60 s" if ready is None else json.loads(ready)
            raise RewardError(
                f"math reward: the math_verify worker failed ({problem}). Fix: pip install "
                "math-verify (check that `python -c 'import math_verify'` works)."
            )

    def _read_line(self, timeout_s: float) -> str | None:
        """One reply line, or None when none came within ``timeout_s`` (or the worker died)."""
        assert self._process is not None and self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], timeout_s)
        if not ready:
            return None
        line = self._process.stdout.readline()
        return line or None

    def _stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            for stream in (self._process.stdin, self._process.stdout):
                if stream is not None:
                    stream.close()
        self._process = None

    def __del__(self) -> None:
        process = getattr(self, "_process", None)
        if process is not None and process.poll() is None:
            process.kill()
