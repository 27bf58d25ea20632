"""Where the KL penalty to the reference goes in online RL: in the reward, or in the loss.

One of the four parts of an online-RL algorithm. A placement has two methods, called at two
moments of an iteration:

- ``rewards(scores, logp, ref_logp, mask, coef)`` when the rollout is scored (rollout-time
  log-probs, no gradient) -> :class:`KLShaping`, what the advantage estimator sees;
- ``loss(logp, ref_logp, mask, coef)`` in every minibatch (current log-probs, with gradient)
  -> a per-token term added to the policy loss before aggregation, or None.

The coefficient comes from the caller (a fixed value, or the adaptive controller's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from rlhf_lightning.functional.kl import kl_penalty
from rlhf_lightning.functional.rewards import last_token_index, ppo_token_rewards


class KLShaping(NamedTuple):
    """Rewards of a rollout with the KL penalty placed (or not) inside them."""

    token_rewards: Tensor
    """Per token: ``-coef · KL_t``, plus the score on the last response token. Shape (B, A)."""
    sequence_rewards: Tensor
    """Per response: ``score - coef · Σ_t KL_t``. Shape (B,)."""
    token_kl: Tensor
    """The per-token estimate used, 0 outside the mask. Shape (B, A)."""


@dataclass(frozen=True)
class KLInReward:
    """The KL to the reference as a penalty inside the reward (PPO, RLOO).

    Each response token is rewarded ``-coef · KL_t`` (estimator of the sampled tokens, or the
    exact full-vocabulary KL), and the score sits on the last token (ALGORITHMS.md §1.2 step
    4); a sequence-level estimator sees ``score - coef · Σ_t KL_t``, which is RLOO's penalised
    score for ``k1`` (§4). Nothing is added to the loss.

    Attributes:
        estimator: ``k1``, ``abs``, ``mse``, ``k3``, or ``full`` (exact KL from both models'
            logits, which the caller must then pass as ``full``).
    """

    estimator: Literal["k1", "abs", "mse", "k3", "full"] = "k1"

    @property
    def needs_logits(self) -> bool:
        """Whether the policy's and the reference's full logits are needed (``full``)."""
        return self.estimator == "full"

    def rewards(
        self,
        scores: Tensor,
        logp: Tensor,
        ref_logp: Tensor | None,
        mask: Tensor,
        coef: float,
        full: Tensor | None = None,
    ) -> KLShaping:
        """Place ``-coef · KL`` in the rewards.

        Args:
            scores: One score per response. Shape (B,).
            logp: Rollout-time policy log-probs. Shape (B, A).
            ref_logp: Reference log-probs; None (no reference) means no penalty. Shape (B, A).
            mask: Bool, True = response token. Shape (B, A).
            coef: The KL coefficient (the controller's current value).
            full: The exact per-token KL for ``estimator="full"``. Shape (B, A).

        Returns:
            :class:`KLShaping`.
        """
        if ref_logp is None:
            return score_only(scores, mask)
        estimator = "k1" if self.estimator == "full" else self.estimator
        shaped = ppo_token_rewards(logp, ref_logp, mask, scores, coef, estimator, full)
        return KLShaping(shaped.rewards, scores - coef * shaped.kl.sum(1), shaped.kl)

    def loss(self, logp: Tensor, ref_logp: Tensor | None, mask: Tensor, coef: float) -> None:
        """Nothing: the penalty is in the reward."""
        return None


@dataclass(frozen=True)
class KLInLoss:
    """The KL to the reference as a term of the loss (GRPO, Shao et al. 2024).

    The rewards are the scores alone; each trained token's loss gains ``coef · KL_t`` computed
    from the *current* log-probs (``k3`` by default: unbiased and >= 0, ALGORITHMS.md §4), so
    its gradient pulls the policy back towards the reference.

    Attributes:
        estimator: The per-token estimator (``k3``; ``k1``, ``abs`` and ``mse`` also work).
    """

    estimator: Literal["k1", "abs", "mse", "k3"] = "k3"

    needs_logits = False

    def rewards(
        self,
        scores: Tensor,
        logp: Tensor,
        ref_logp: Tensor | None,
        mask: Tensor,
        coef: float,
        full: Tensor | None = None,
    ) -> KLShaping:
        """The scores alone (see :func:`score_only`)."""
        return score_only(scores, mask)

    def loss(
        self, logp: Tensor, ref_logp: Tensor | None, mask: Tensor, coef: float
    ) -> Tensor | None:
        """``coef · KL_t`` per token, 0 outside the mask; None without a reference or at coef 0.

        Args:
            logp: Current log-probs, with gradient. Shape (B, A).
            ref_logp: Reference log-probs. Shape (B, A).
            mask: Bool, True = trained token. Shape (B, A).
            coef: The KL coefficient.

        Returns:
            Per-token loss term (B, A), or None.
        """
        if ref_logp is None or coef == 0.0:
            return None
        # Outside the mask the reference equals the policy, so the term is exactly 0 there.
        ref_logp = torch.where(mask, ref_logp.detach(), logp.detach())
        return coef * kl_penalty(logp, ref_logp, self.estimator)


def score_only(scores: Tensor, mask: Tensor) -> KLShaping:
    """Rewards without a KL penalty: the score on each response's last token.

    Args:
        scores: One score per response. Shape (B,).
        mask: Bool, True = response token. Shape (B, A).

    Returns:
        :class:`KLShaping` with zero KL.
    """
    zeros = torch.zeros(mask.shape, dtype=scores.dtype, device=scores.device)
    last = last_token_index(mask)
    token_rewards = zeros.scatter_add(1, last[:, None], scores[:, None])
    return KLShaping(token_rewards, scores, zeros)
