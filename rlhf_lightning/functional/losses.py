"""Training losses of the supervised and offline stages: SFT, pairwise reward model, DPO.

Each loss returns a NamedTuple whose first field is the differentiable scalar loss and whose
other fields are detached statistics for logging. Inputs that are constants of the objective
(old log-probabilities, advantages, returns, reference log-probabilities) are detached here, so a
caller cannot leak gradient into them by accident.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from rlhf_lightning.functional.logprobs import shifted_token_logprobs
from rlhf_lightning.functional.masked import masked_mean


class SFTLossOutput(NamedTuple):
    loss: Tensor
    """Scalar: mean negative log-likelihood over the target tokens."""
    num_tokens: Tensor
    """Scalar long: how many tokens the mean ran over (weight for cross-batch averaging)."""


class PairwiseLossOutput(NamedTuple):
    loss: Tensor
    """Scalar Bradley-Terry loss (plus the centering term when asked)."""
    accuracy: Tensor
    """Fraction of pairs with ``r_chosen > r_rejected`` (ties count as wrong)."""
    margin_mean: Tensor
    """Mean of ``r_chosen - r_rejected``."""
    tie_rate: Tensor
    """Fraction of pairs with ``r_chosen == r_rejected`` (TRL's accuracy drops these)."""


class DPOLossOutput(NamedTuple):
    loss: Tensor
    """Scalar DPO loss, mean over pairs."""
    chosen_rewards: Tensor
    """``β (π_c - ref_c)`` per pair. Shape (B,)."""
    rejected_rewards: Tensor
    """``β (π_r - ref_r)`` per pair. Shape (B,)."""
    accuracy: Tensor
    """Fraction of pairs with ``chosen_rewards > rejected_rewards``."""
    margin: Tensor
    """Mean of ``chosen_rewards - rejected_rewards``."""


def sft_loss(logits: Tensor, input_ids: Tensor, loss_mask: Tensor) -> SFTLossOutput:
    """Next-token cross-entropy over the target tokens, token-weighted.

    ``loss_mask[b, t]`` True means token t is a training target; it is predicted by the logits at
    t-1, so the mask used is ``loss_mask[:, 1:]`` (ALGORITHMS.md §5.1). A mask at t = 0 is
    ignored: the first token has no prefix.

    Args:
        logits: Model output. Shape (B, T, V).
        input_ids: Token ids. Shape (B, T).
        loss_mask: Bool, True = target token (e.g. response, not prompt or pad). Shape (B, T).

    Returns:
        :class:`SFTLossOutput`.

    Raises:
        ValueError: If no token is a target.
    """
    target_mask = loss_mask[:, 1:]
    if logits.dtype in (torch.float32, torch.float64):
        # Fused log-softmax + NLL: the same numbers as log_softmax + gather, with a cheaper
        # backward (one (B, T, V) gradient pass instead of two; ~25% of the loss's time).
        shifted = logits[:, :-1]
        nll = F.cross_entropy(
            shifted.reshape(-1, shifted.shape[-1]), input_ids[:, 1:].reshape(-1), reduction="none"
        ).view(target_mask.shape)
    else:  # half precision: the row-wise fp32 upcast of shifted_token_logprobs
        nll = -shifted_token_logprobs(logits, input_ids)
    return SFTLossOutput(masked_mean(nll, target_mask), target_mask.sum().detach())


def pairwise_loss(
    r_chosen: Tensor,
    r_rejected: Tensor,
    margin: Tensor | None = None,
    center_coef: float | None = None,
) -> PairwiseLossOutput:
    """Bradley-Terry reward-model loss ``-log σ(r_c - r_r - margin)`` (ALGORITHMS.md §3).

    With ``center_coef`` c, adds ``c · mean((r_c + r_r)²)`` (TRL ``center_rewards_coefficient``,
    Eisenstein et al. 2023) to keep the rewards centred on 0.

    Args:
        r_chosen: Reward of the preferred completion. Shape (B,).
        r_rejected: Reward of the other completion. Shape (B,).
        margin: Optional required gap per pair. Shape (B,).
        center_coef: Optional weight of the centering term.

    Returns:
        :class:`PairwiseLossOutput`.
    """
    gap = r_chosen - r_rejected
    logits = gap if margin is None else gap - margin.detach()
    loss = -F.logsigmoid(logits).mean()
    if center_coef is not None:
        loss = loss + center_coef * (r_chosen + r_rejected).square().mean()
    gap = gap.detach()
    return PairwiseLossOutput(
        loss=loss,
        accuracy=(gap > 0).float().mean(),
        margin_mean=gap.mean(),
        tie_rate=(gap == 0).float().mean(),
    )


def dpo_loss(
    pi_c: Tensor,
    pi_r: Tensor,
    ref_c: Tensor,
    ref_r: Tensor,
    beta: float,
    loss_type: Literal["sigmoid", "hinge", "ipo"] = "sigmoid",
    label_smoothing: float = 0.0,
) -> DPOLossOutput:
    """Direct preference optimisation loss family (ALGORITHMS.md §4).

    ``logits = (π_c - π_r) - (ref_c - ref_r)``, then per pair:

    - ``"sigmoid"`` (Rafailov et al. 2023): ``-log σ(β·logits)``; with label smoothing ls
      (cDPO) ``-(1-ls)·log σ(β·logits) - ls·log σ(-β·logits)``.
    - ``"hinge"`` (SLiC): ``relu(1 - β·logits)``.
    - ``"ipo"`` (Azar et al. 2023): ``(logits - 1/(2β))²``. IPO expects **length-averaged**
      log-probabilities: pass each sequence log-prob divided by its completion length.

    Args:
        pi_c: Policy sequence log-prob of the chosen completion (a sum over tokens). Shape (B,).
        pi_r: Policy sequence log-prob of the rejected completion. Shape (B,).
        ref_c: Reference sequence log-prob of the chosen completion. Shape (B,).
        ref_r: Reference sequence log-prob of the rejected completion. Shape (B,).
        beta: β, strength of the implicit KL constraint.
        loss_type: ``"sigmoid"``, ``"hinge"`` or ``"ipo"``.
        label_smoothing: Probability that a label is flipped, in [0, 0.5); sigmoid only.

    Returns:
        :class:`DPOLossOutput`.

    Raises:
        ValueError: On an unknown loss type, or label smoothing with a non-sigmoid loss.
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if label_smoothing and loss_type != "sigmoid":
        raise ValueError(f"label_smoothing only applies to loss_type='sigmoid', not {loss_type!r}")
    ref_c, ref_r = ref_c.detach(), ref_r.detach()
    chosen_logratio = pi_c - ref_c
    rejected_logratio = pi_r - ref_r
    logits = chosen_logratio - rejected_logratio
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * logits) * (1.0 - label_smoothing)
        if label_smoothing:
            losses = losses - F.logsigmoid(-beta * logits) * label_smoothing
    elif loss_type == "hinge":
        losses = torch.relu(1.0 - beta * logits)
    elif loss_type == "ipo":
        losses = (logits - 1.0 / (2.0 * beta)).square()
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected 'sigmoid', 'hinge' or 'ipo'")
    chosen_rewards = beta * chosen_logratio.detach()
    rejected_rewards = beta * rejected_logratio.detach()
    return DPOLossOutput(
        loss=losses.mean(),
        chosen_rewards=chosen_rewards,
        rejected_rewards=rejected_rewards,
        accuracy=(chosen_rewards > rejected_rewards).float().mean(),
        margin=(chosen_rewards - rejected_rewards).mean(),
    )
