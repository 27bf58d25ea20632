"""KL estimators between the policy and the reference, and KL-coefficient controllers."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from rlhf_lightning.functional.logprobs import _upcast

KLEstimator = Literal["k1", "abs", "mse", "k3"]


def kl_penalty(logp: Tensor, ref_logp: Tensor, estimator: KLEstimator = "k1") -> Tensor:
    """Per-token estimate of KL(π‖ref) from the log-probabilities of the sampled tokens.

    With ``d = logp - ref_logp`` (ALGORITHMS.md §1.2 step 4 and §2; J. Schulman,
    "Approximating KL divergence", 2020):

    - ``"k1"``: ``d``. Unbiased, can be negative per token (TRL ``"kl"``).
    - ``"abs"``: ``|d|``.
    - ``"mse"``: ``0.5 * d²``.
    - ``"k3"``: ``exp(-d) - 1 + d``. Unbiased and >= 0 per token (TRL new PPO, GRPO).

    All four are exactly 0 when ``logp == ref_logp``.

    Args:
        logp: Policy log-probabilities of the sampled tokens. Shape (B, A).
        ref_logp: Reference log-probabilities of the same tokens. Shape (B, A).
        estimator: One of ``"k1"``, ``"abs"``, ``"mse"``, ``"k3"``.

    Returns:
        Per-token KL estimate. Shape (B, A).

    Raises:
        ValueError: On an unknown estimator.
    """
    diff = logp - ref_logp
    if estimator == "k1":
        return diff
    if estimator == "abs":
        return diff.abs()
    if estimator == "mse":
        return 0.5 * diff.square()
    if estimator == "k3":
        # (exp(logr) - 1) - logr with logr = ref - logp; expm1 keeps it accurate near 0.
        log_ratio = -diff
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; expected 'k1', 'abs', 'mse' or 'k3'")


def full_kl(logits: Tensor, ref_logits: Tensor) -> Tensor:
    """Exact KL(π‖ref) over the whole vocabulary: ``Σ_v p(v) (log p(v) - log q(v))``.

    TRL's ``kl_penalty="full"`` (ALGORITHMS.md §1.2 step 4), computed in fp32.

    Args:
        logits: Policy logits. Shape (..., V).
        ref_logits: Reference logits. Shape (..., V).

    Returns:
        KL per position, >= 0. Shape (...).
    """
    logp = torch.log_softmax(_upcast(logits), dim=-1)
    logq = torch.log_softmax(_upcast(ref_logits), dim=-1)
    probs = logp.exp()
    # Tokens with p = 0 contribute 0; masking the log-ratio (not the product) keeps both the value
    # and the gradient free of 0 * -inf = NaN.
    log_ratio = torch.where(probs > 0, logp - logq, 0.0)
    return (probs * log_ratio).sum(dim=-1)


class AdaptiveKLController:
    """Proportional controller of the KL coefficient (Ziegler et al. 2019, arXiv:1909.08593).

    ``e = clip(current_kl / target - 1, -0.2, 0.2)``; ``value *= 1 + e * n_steps / horizon``
    (ALGORITHMS.md §1.2 step 9; openai/lm-human-preferences ``train_policy.py``).

    Args:
        init_kl_coef: Starting coefficient β.
        target: KL (summed over the sequence, mean over the batch) to steer towards.
        horizon: Number of samples over which an error is corrected.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target and horizon must be > 0, got {target} and {horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float | Tensor, n_steps: int) -> None:
        """Move ``value`` towards the target after ``n_steps`` samples (batch size × processes)."""
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        """The mutable state; target and horizon come from the constructor (the config)."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore ``value`` from :meth:`state_dict`."""
        self.value = float(state["value"])


class FixedKLController:
    """Constant KL coefficient (TRL ``adap_kl_ctrl=False``; TRL new PPO and SFD always).

    Args:
        kl_coef: The coefficient β.
    """

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float | Tensor, n_steps: int) -> None:
        """No-op, so callers can update either controller unconditionally."""

    def state_dict(self) -> dict[str, float]:
        """The coefficient, so a checkpoint can store either controller the same way."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore ``value`` from :meth:`state_dict`."""
        self.value = float(state["value"])
