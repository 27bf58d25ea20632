"""Reward sources: one call, ``source(prompts, completions, **columns) -> (B,) float32``.

Implementations (each Hydra-instantiable, see ``conf/reward/``):

* :class:`ModelReward`: a sequence-classification reward model (any tokenizer: text is
  re-tokenised; :meth:`ModelReward.score_tokens` is the fast path for shared tokenizers).
* :class:`CallableReward`: a Python function named ``package.module:function``.
* :class:`HTTPReward`: a JSON endpoint, with timeout and retries.
* :class:`WeightedReward`: a weighted sum of named sources.
* Verifiers, which check against a known right answer (:mod:`rlhf_lightning.rewards.verifiers`):
  :class:`MathReward`, :class:`FormatReward`, :class:`CountdownReward`, and :class:`CodeReward`,
  which runs code in the :class:`Sandbox`.

Offline scorers of real text, used as callables (``reward=sentiment``, ``reward=toxicity``):

* :func:`rlhf_lightning.rewards.sentiment.vader_sentiment`: VADER ``compound``, in [-1, 1].
* :func:`rlhf_lightning.rewards.profanity.non_offensive`: minus alt-profanity-check's
  offensive probability, in [-1, 0].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlhf_lightning.errors import RewardError
from rlhf_lightning.rewards.adapter import AdapterReward
from rlhf_lightning.rewards.base import RewardSource, check_inputs, check_scores
from rlhf_lightning.rewards.callable import CallableReward
from rlhf_lightning.rewards.encoding import encode_for_reward
from rlhf_lightning.rewards.http import HTTPReward
from rlhf_lightning.rewards.mix import WeightedReward
from rlhf_lightning.rewards.model import ModelReward
from rlhf_lightning.rewards.sandbox import Sandbox, SandboxLimits, SandboxResult
from rlhf_lightning.rewards.verifiers import (
    CodeReward,
    CountdownReward,
    FormatReward,
    MathReward,
)

__all__ = [
    "AdapterReward",
    "CallableReward",
    "CodeReward",
    "CountdownReward",
    "FormatReward",
    "HTTPReward",
    "MathReward",
    "ModelReward",
    "RewardError",
    "RewardSource",
    "Sandbox",
    "SandboxLimits",
    "SandboxResult",
    "WeightedReward",
    "build_reward_source",
    "check_inputs",
    "check_scores",
    "encode_for_reward",
]

_KINDS = ("callable", "code", "countdown", "format", "http", "math", "mix", "model")
_VERIFIERS = {
    "code": CodeReward,
    "countdown": CountdownReward,
    "format": FormatReward,
    "math": MathReward,
}


def build_reward_source(kind: str, **kwargs: Any) -> RewardSource:
    """Build a reward source by kind, without Hydra.

    Args:
        kind: ``model`` (kwargs of :meth:`ModelReward.from_pretrained`, ``path`` first),
            ``callable`` (``function`` and fixed kwargs), ``http`` (:class:`HTTPReward`'s), or
            ``mix`` (``sources``: name -> a source or a ``{"kind": ..., ...}`` dict; ``weights``),
            or a verifier, ``math``, ``format``, ``countdown``, ``code`` (their constructors'
            arguments).

    Example:
        >>> source = build_reward_source(
        ...     "callable", function="rlhf_lightning.rewards.examples:positive_words"
        ... )
    """
    if kind == "model":
        return ModelReward.from_pretrained(**kwargs)
    if kind == "callable":
        return CallableReward(**kwargs)
    if kind == "http":
        return HTTPReward(**kwargs)
    if kind in _VERIFIERS:
        return _VERIFIERS[kind](**kwargs)
    if kind == "mix":
        sources = {
            name: build_reward_source(**spec) if isinstance(spec, Mapping) else spec
            for name, spec in dict(kwargs.pop("sources", {})).items()
        }
        return WeightedReward(sources, **kwargs)
    raise RewardError(f"reward kind '{kind}' is unknown. Fix: one of {', '.join(_KINDS)}.")
