"""The one reward interface of every RL stage, and the checks every implementation shares.

A reward source maps a batch of prompts and their completions (plus any extra dataset
columns, e.g. a reference answer) to one float per completion::

    scores = source(prompts, completions, reference=answers)  # Shape (B,), float32, CPU

Every implementation routes what it computed through :func:`check_scores`, so a stage can rely
on the result being a finite float32 CPU tensor of shape (B,), and a broken source fails with
one message that names it and says how to fix it.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from rlhf_lightning.deadline import DeadlineExceeded, call_with_deadline
from rlhf_lightning.errors import RewardError

_PREVIEW_CHARS = 60


@runtime_checkable
class RewardSource(Protocol):
    """Anything that scores completions: ``source(prompts, completions, **columns) -> (B,)``."""

    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> Tensor:
        """Score each completion of its prompt.

        Args:
            prompts: The prompts, as text. Length B.
            completions: The completions, as text, without the prompt. Length B.
            **columns: Extra dataset columns, each a sequence of length B (e.g. ``reference``).

        Returns:
            One reward per completion, float32 on CPU. Shape (B,).
        """
        ...


def score_within(
    source: RewardSource,
    prompts: list[str],
    completions: list[str],
    columns: Mapping[str, Any],
    timeout_s: float | None,
) -> Tensor:
    """``source(prompts, completions, **columns)``, given at most `timeout_s` seconds.

    The call runs in a worker thread (``rlhf_lightning.deadline``), so that a source that
    hangs ends the run with a message and a stop request (SIGTERM, Ctrl+C) still saves a
    checkpoint. ``timeout_s=None`` calls it in this thread, unbounded: for a function that
    needs the main thread (one that sets signal alarms, for instance).

    Raises:
        RewardError: no scores after `timeout_s` seconds.
    """
    if timeout_s is None:
        return source(prompts, completions, **columns)
    try:
        return call_with_deadline(source, (prompts, completions), columns, timeout_s=timeout_s)
    except DeadlineExceeded as err:
        name = getattr(source, "source", None) or f"reward source {type(source).__name__}"
        first = f" (first prompt {preview(prompts[0])})" if prompts else ""
        raise RewardError(
            f"{name}: returned no scores within {timeout_s:g} s for a batch of {len(prompts)}"
            f"{first}; the call was abandoned. Fix: look for a hang in it (a lock, a network "
            "call without a timeout, an endless loop), make it faster, or raise "
            "stage.reward_timeout_s."
        ) from err


def preview(value: Any, limit: int = _PREVIEW_CHARS) -> str:
    """``repr`` of ``value``, a string cut to about ``limit`` characters, for error messages."""
    if not isinstance(value, str):
        text = repr(value)
        return text if len(text) <= limit else text[: limit - 3] + "..."
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")


def check_inputs(
    prompts: Sequence[str], completions: Sequence[str], columns: Mapping[str, Any], source: str
) -> int:
    """Validate a reward call's arguments and return the batch size B.

    Args:
        prompts: Length B.
        completions: Length B.
        columns: Extra columns; those that are sequences (not strings) must have length B.
        source: The reward source's name, for the error message.

    Returns:
        B.

    Raises:
        RewardError: If the lengths disagree or a prompt/completion is not a string.
    """
    if isinstance(prompts, str) or isinstance(completions, str):
        raise RewardError(
            f"{source}: prompts and completions must be lists of strings, got a single string. "
            "Fix: pass [prompt] and [completion] for one example."
        )
    batch = len(prompts)
    if len(completions) != batch:
        raise RewardError(
            f"{source}: got {batch} prompts but {len(completions)} completions. "
            "Fix: pass one completion per prompt (repeat the prompt for several samples)."
        )
    for name, values in (("prompts", prompts), ("completions", completions)):
        for index, value in enumerate(values):
            if not isinstance(value, str):
                raise RewardError(
                    f"{source}: {name}[{index}] is a {type(value).__name__}, not a string. "
                    "Fix: decode token ids to text before scoring (or use score_tokens)."
                )
    for name, values in columns.items():
        if is_batch_column(values) and len(values) != batch:
            raise RewardError(
                f"{source}: column '{name}' has {len(values)} values for {batch} completions. "
                "Fix: give every extra column one value per completion."
            )
    return batch


def is_batch_column(values: Any) -> bool:
    """Whether an extra column holds one value per completion (a sequence, array or tensor)."""
    return isinstance(values, (Sequence, np.ndarray, Tensor)) and not isinstance(
        values, (str, bytes)
    )


def check_scores(
    scores: Any,
    batch_size: int,
    source: str,
    *,
    prompts: Sequence[str] | None = None,
    offset: int = 0,
) -> Tensor:
    """Turn what a reward source returned into a float32 CPU tensor of shape (B,), or fail clearly.

    Accepts a list or tuple of real numbers (bools count as 0/1), a numpy array, or a tensor.

    Args:
        scores: The raw rewards. Shape (B,).
        batch_size: B, the number of completions that were scored.
        source: The reward source's name, used in every error message.
        prompts: The prompts of the batch, to name the prompt of a bad score. Length B.
        offset: Added to indices in messages (for a sub-batch of a larger batch).

    Returns:
        The rewards, float32 on CPU. Shape (B,).

    Raises:
        RewardError: Wrong shape or length, a non-numeric value, or a NaN/inf value; the message
            names the source, the first offending index and its prompt.
    """
    tensor = _as_tensor(scores, source, prompts, offset)
    if tensor.ndim != 1 or tensor.shape[0] != batch_size:
        raise RewardError(
            f"{source}: returned rewards of shape {tuple(tensor.shape)} for {batch_size} "
            f"completions. Fix: return one number per completion, shape ({batch_size},)."
        )
    bad = (~torch.isfinite(tensor)).nonzero()
    if len(bad):
        index = int(bad[0, 0])
        raise RewardError(
            f"{source}: reward {tensor[index].item()} at index {index + offset}"
            f"{_prompt_note(prompts, index)} is not finite (NaN, inf, or beyond float32 range). "
            "Fix: make the source return a finite number for every completion."
        )
    return tensor


def _as_tensor(scores: Any, source: str, prompts: Sequence[str] | None, offset: int) -> Tensor:
    if isinstance(scores, Tensor):
        if scores.is_complex() or not (scores.is_floating_point() or _integral(scores.dtype)):
            raise RewardError(
                f"{source}: returned a tensor of dtype {scores.dtype}. "
                "Fix: return real numbers (float rewards)."
            )
        if scores.device.type == "meta":
            raise RewardError(
                f"{source}: returned a tensor on the meta device, which holds no values. "
                "Fix: compute the rewards on a real device (CPU or GPU) and return them."
            )
        return scores.detach().to(device="cpu", dtype=torch.float32)
    if isinstance(scores, np.ndarray) and scores.dtype.kind in "biuf":
        return torch.from_numpy(scores.astype(np.float32))
    if isinstance(scores, (Sequence, np.ndarray)) and not isinstance(scores, (str, bytes)):
        return torch.tensor(_numbers(scores, source, prompts, offset), dtype=torch.float32)
    raise RewardError(
        f"{source}: returned a {type(scores).__name__}, not one reward per completion. "
        "Fix: return a list, numpy array or tensor of shape (B,)."
    )


def _integral(dtype: torch.dtype) -> bool:
    return dtype == torch.bool or not (dtype.is_floating_point or dtype.is_complex)


def _numbers(
    values: Sequence[Any] | np.ndarray, source: str, prompts: Sequence[str] | None, offset: int
) -> list[float]:
    out = []
    for index, value in enumerate(values):
        size = value.numel() if isinstance(value, Tensor) else getattr(value, "size", None)
        if isinstance(value, (Tensor, np.ndarray, np.generic)) and size == 1:
            value = value.item()
        where = f"at index {index + offset}{_prompt_note(prompts, index)}"
        if is_batch_column(value):
            raise RewardError(
                f"{source}: the reward {where} is itself a sequence (nested rewards). "
                "Fix: return one number per completion, shape (B,)."
            )
        if not isinstance(value, numbers.Real):
            raise RewardError(
                f"{source}: the reward {where} is {preview(value)} ({type(value).__name__}), "
                "not a number. Fix: return a float for every completion."
            )
        out.append(float(value))
    return out


def _prompt_note(prompts: Sequence[str] | None, index: int) -> str:
    if prompts is None or index >= len(prompts):
        return ""
    return f" (prompt {preview(prompts[index])})"
