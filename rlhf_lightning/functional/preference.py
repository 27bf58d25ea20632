"""Preference-optimisation losses beyond DPO: KTO, ORPO, SimPO; online DPO's pair ranking.

Like :func:`rlhf_lightning.functional.losses.dpo_loss`, each returns a NamedTuple whose first
field is the differentiable scalar loss and whose other fields are detached statistics.
Sequence log-probabilities are **sums** over completion tokens (KTO) or **averages** over them
(ORPO, SimPO), as each paper defines its implicit reward.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class KTOLossOutput(NamedTuple):
    loss: Tensor
    """Scalar KTO loss, mean over all rows (desirable and undesirable together)."""
    rewards: Tensor
    """``β (logπ - logπ_ref)`` per row. Shape (B,). Split by ``desirable`` for per-class logs."""
    kl_reference_point: Tensor
    """The reference point z0 the loss used (scalar, detached)."""


class ORPOLossOutput(NamedTuple):
    loss: Tensor
    """Scalar ``NLL_chosen + λ · odds_ratio_loss``."""
    nll: Tensor
    """The chosen NLL that entered the loss (detached)."""
    odds_ratio_loss: Tensor
    """``mean(-log σ(log odds_c - log odds_r))``, before the λ weight."""
    log_odds_ratio: Tensor
    """Mean of ``log odds_c - log odds_r``."""
    accuracy: Tensor
    """Fraction of pairs with ``log odds_c > log odds_r`` (i.e. ``avg_c > avg_r``; ties wrong)."""


class SimPOLossOutput(NamedTuple):
    loss: Tensor
    """Scalar SimPO loss, mean over pairs."""
    chosen_rewards: Tensor
    """``β · avg_c`` per pair. Shape (B,)."""
    rejected_rewards: Tensor
    """``β · avg_r`` per pair. Shape (B,)."""
    accuracy: Tensor
    """Fraction of pairs with ``chosen_rewards > rejected_rewards`` (ties count as wrong)."""
    margin: Tensor
    """Mean of ``chosen_rewards - rejected_rewards`` (compare with γ)."""


def kto_reference_point(policy_kl_logps: Tensor, reference_kl_logps: Tensor) -> Tensor:
    """KTO's reference point ``z0 = max(0, mean(logπ(y'|x) - logπ_ref(y'|x)))``, detached.

    Ethayarajh et al. 2024 (arXiv:2402.01306, §4) estimate the KL term on **mismatched**
    (prompt, completion) pairs: each prompt x is paired with a completion y' of another example
    of the batch (TRL shifts the completions by one). The mean runs over the whole batch; the
    clamp at 0 and the detach are the paper's and TRL's.

    Data parallel: TRL averages the per-process means across processes **before** the clamp
    (``gather(mean).mean().clamp(min=0)``). To reproduce it, all-reduce
    ``(policy_kl_logps - reference_kl_logps).mean()`` and clamp that, rather than averaging the
    clamped values of this function.

    Args:
        policy_kl_logps: Policy sequence log-probs (sums) of the mismatched pairs. Shape (B,).
        reference_kl_logps: Reference sequence log-probs of the same pairs. Shape (B,).

    Returns:
        Scalar z0 >= 0, detached.
    """
    kl = (policy_kl_logps.detach() - reference_kl_logps.detach()).mean()
    return kl.clamp(min=0.0)


def kto_loss(
    policy_logps: Tensor,
    reference_logps: Tensor,
    desirable: Tensor,
    kl_reference_point: Tensor | float,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> KTOLossOutput:
    """Kahneman-Tversky optimisation loss (Ethayarajh et al. 2024, arXiv:2402.01306, §4).

    With the implicit reward ``r = logπ(y|x) - logπ_ref(y|x)`` (sequence sums) and the
    reference point z0 (see :func:`kto_reference_point`), per row::

        desirable:    w_d · (1 - σ(β (r - z0)))
        undesirable:  w_u · (1 - σ(β (z0 - r)))

    which is the paper's ``λ_y - v(x, y)``. The loss is the mean over **all** rows of the
    batch, so each class weighs by its share of the batch; this is TRL's ``KTOTrainer``
    (``losses.nanmean()`` over the concatenated desirable and undesirable losses), not a mean
    per class. z0 is detached. The paper advises choosing the weights so that
    ``w_d·n_d / (w_u·n_u)`` lies in [1, 4/3] (n_d, n_u: counts of each class).

    Args:
        policy_logps: Policy sequence log-probs of the completions (sums). Shape (B,).
        reference_logps: Reference sequence log-probs of the same completions. Shape (B,).
        desirable: Bool, True = desirable (thumbs-up) completion. Shape (B,).
        kl_reference_point: z0, a scalar, usually from :func:`kto_reference_point`; detached
            here. 0.0 drops the reference point (TRL uses z0 = 0 when it skips the KL pass).
        beta: β, the implicit-reward scale (TRL default 0.1).
        desirable_weight: w_d (λ_D in the paper).
        undesirable_weight: w_u (λ_U in the paper).

    Returns:
        :class:`KTOLossOutput`.

    Raises:
        TypeError: If ``desirable`` is not a bool tensor.
        ValueError: If the shapes differ.
    """
    if desirable.dtype != torch.bool:
        raise TypeError(f"desirable must be a bool tensor, got dtype {desirable.dtype}")
    if not policy_logps.shape == reference_logps.shape == desirable.shape:
        raise ValueError(
            "policy_logps, reference_logps and desirable must share one shape (B,), got "
            f"{tuple(policy_logps.shape)}, {tuple(reference_logps.shape)}, "
            f"{tuple(desirable.shape)}"
        )
    z0 = torch.as_tensor(
        kl_reference_point, dtype=policy_logps.dtype, device=policy_logps.device
    ).detach()
    logratio = policy_logps - reference_logps.detach()
    # 1 - σ(x) = σ(-x): desirable rows push r above z0, undesirable rows push it below.
    desirable_losses = desirable_weight * torch.sigmoid(-beta * (logratio - z0))
    undesirable_losses = undesirable_weight * torch.sigmoid(-beta * (z0 - logratio))
    losses = torch.where(desirable, desirable_losses, undesirable_losses)
    return KTOLossOutput(
        loss=losses.mean(),
        rewards=beta * logratio.detach(),
        kl_reference_point=z0,
    )


def _log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, accurate at both ends.

    Mächler 2012 ("Accurately computing log(1 - exp(-|a|))"): ``log(-expm1(x))`` near 0, where
    ``1 - exp(x)`` cancels, and ``log1p(-exp(x))`` below ``-log 2``.
    """
    # Each branch is evaluated where it is accurate; the other side is clamped so that neither
    # produces an inf/NaN that would reach the gradient through torch.where.
    near_zero = torch.log(-torch.expm1(x.clamp(min=-0.6931471805599453)))
    far = torch.log1p(-torch.exp(x.clamp(max=-0.6931471805599453)))
    return torch.where(x > -0.6931471805599453, near_zero, far)


def orpo_loss(
    chosen_avg_logps: Tensor,
    rejected_avg_logps: Tensor,
    chosen_nll: Tensor,
    lam: float = 0.1,
) -> ORPOLossOutput:
    """Odds-ratio preference optimisation (Hong et al. 2024, arXiv:2403.07691, eqs. 4-7).

    With ``p = exp(avg token log-prob)`` of a completion, ``log odds(y) = log p - log(1 - p)``,
    and per pair ``L_OR = -log σ(log odds_c - log odds_r)``; the loss is
    ``NLL_chosen + λ · mean(L_OR)``. ``log(1 - p)`` is computed as ``log1mexp(avg)``, stable for
    averages near 0 and very negative ones. The averages must be < 0 (p < 1): at exactly 0 the
    odds are infinite.

    TRL's ``ORPOTrainer`` calls λ ``beta`` (default 0.1) and computes ``loss = nll -
    beta · mean(logsigmoid(log_odds))``, the same thing. Its logged "rewards" are
    ``beta · avg``; since the log-odds increase with ``avg``, ``accuracy`` here equals TRL's
    ``rewards/accuracies``.

    Args:
        chosen_avg_logps: Average token log-prob of each chosen completion. Shape (B,).
        rejected_avg_logps: Average token log-prob of each rejected completion. Shape (B,).
        chosen_nll: The SFT term, mean NLL over the chosen completion tokens. Scalar.
        lam: λ, weight of the odds-ratio term.

    Returns:
        :class:`ORPOLossOutput`.
    """
    log_odds_chosen = chosen_avg_logps - _log1mexp(chosen_avg_logps)
    log_odds_rejected = rejected_avg_logps - _log1mexp(rejected_avg_logps)
    log_odds_ratio = log_odds_chosen - log_odds_rejected
    odds_ratio_loss = -F.logsigmoid(log_odds_ratio).mean()
    log_odds_ratio = log_odds_ratio.detach()
    return ORPOLossOutput(
        loss=chosen_nll + lam * odds_ratio_loss,
        nll=chosen_nll.detach(),
        odds_ratio_loss=odds_ratio_loss.detach(),
        log_odds_ratio=log_odds_ratio.mean(),
        accuracy=(log_odds_ratio > 0).float().mean(),
    )


def simpo_loss(
    chosen_avg_logps: Tensor,
    rejected_avg_logps: Tensor,
    beta: float = 2.0,
    gamma: float = 1.0,
    label_smoothing: float = 0.0,
) -> SimPOLossOutput:
    """Simple preference optimisation (Meng et al. 2024, arXiv:2405.14734, §2).

    Reference-free: the implicit reward is the length-normalised log-likelihood ``β · avg``,
    and ``γ`` is a target reward margin::

        L = -log σ(β · avg_c - β · avg_r - γ)

    With ``label_smoothing`` ls (as cDPO and the SimPO code):
    ``-(1 - ls) log σ(z) - ls · log σ(-z)`` with ``z = β · avg_c - β · avg_r - γ``.

    Parametrisations of γ: here γ is the margin in reward units, as in the paper. The authors'
    code takes ``gamma_beta_ratio`` = γ/β (``logits = Δavg - gamma_beta_ratio``, then
    ``β · logits``), so ``gamma = beta * gamma_beta_ratio``. TRL's ``CPOConfig(loss_type="simpo",
    simpo_gamma=g)`` computes ``β·(Δavg - g/β)``, so ``simpo_gamma`` *is* γ (TRL default 0.5 at
    β = 0.1); note that TRL's CPO also adds ``cpo_alpha`` (default 1.0) times the chosen NLL,
    which plain SimPO sets to 0.

    Args:
        chosen_avg_logps: Average token log-prob of each chosen completion. Shape (B,).
        rejected_avg_logps: Average token log-prob of each rejected completion. Shape (B,).
        beta: β, the reward scale (the paper tunes it per model, 2.0-2.5 in its main runs).
        gamma: γ, the target reward margin (tuned per model; the default is γ/β = 0.5).
        label_smoothing: Probability that a label is flipped, in [0, 0.5).

    Returns:
        :class:`SimPOLossOutput`.

    Raises:
        ValueError: If ``label_smoothing`` is outside [0, 0.5).
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    chosen_rewards = beta * chosen_avg_logps
    rejected_rewards = beta * rejected_avg_logps
    logits = chosen_rewards - rejected_rewards - gamma
    losses = -F.logsigmoid(logits) * (1.0 - label_smoothing)
    if label_smoothing:
        losses = losses - F.logsigmoid(-logits) * label_smoothing
    chosen_rewards, rejected_rewards = chosen_rewards.detach(), rejected_rewards.detach()
    return SimPOLossOutput(
        loss=losses.mean(),
        chosen_rewards=chosen_rewards,
        rejected_rewards=rejected_rewards,
        accuracy=(chosen_rewards > rejected_rewards).float().mean(),
        margin=(chosen_rewards - rejected_rewards).mean(),
    )


def rank_pairs(values: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
    """Split prompt-major pairs of rows into (chosen, rejected) by their scores (online DPO).

    Rows ``2i`` and ``2i + 1`` are two answers to prompt i (the online stages' group layout);
    the higher-scored one is chosen, and a tie keeps row ``2i`` (TRL's ``OnlineDPOTrainer``:
    ``first >= second``).

    Args:
        values: Anything per row, e.g. sequence log-probs. Shape (2P, ...).
        scores: The rows' scores. Shape (2P,).

    Returns:
        ``(chosen, rejected)``, each of shape (P, ...).

    Raises:
        ValueError: If the rows do not pair up or ``values`` and ``scores`` differ in rows.
    """
    if scores.ndim != 1 or scores.shape[0] % 2 or values.shape[0] != scores.shape[0]:
        raise ValueError(
            f"rank_pairs needs an even number of rows with one score each, got values "
            f"{tuple(values.shape)} and scores {tuple(scores.shape)}"
        )
    first_wins = (scores[0::2] >= scores[1::2]).view(-1, *([1] * (values.ndim - 1)))
    first, second = values[0::2], values[1::2]
    return torch.where(first_wins, first, second), torch.where(first_wins, second, first)
