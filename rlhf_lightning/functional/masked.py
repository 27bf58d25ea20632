"""Reductions over the True positions of a bool mask.

Mask convention (whole package): a bool tensor, True = real token, broadcastable to ``x``.
Positions under a False mask never reach the result: they are selected away with
``torch.where`` rather than multiplied by 0, so padding that holds ``inf``/``NaN`` or a
placeholder such as TRL's ``INVALID_LOGPROB = 1.0`` cannot leak into sums or gradients.

Empty masks: :func:`masked_sum` returns 0; :func:`masked_mean`, :func:`masked_var` and
:func:`masked_whiten` raise ``ValueError``, because a mean over nothing is a bug upstream
(an all-padding minibatch), not a number. A single masked element is a real batch (one
one-token response beside an empty one): its variance is 0 and it whitens to 0.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_mask(x: Tensor, mask: Tensor) -> Tensor:
    """Validate the mask convention and broadcast ``mask`` to ``x``'s shape."""
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = real token), got dtype {mask.dtype}")
    try:
        return mask.expand_as(x)
    except RuntimeError as err:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to x of shape {tuple(x.shape)}"
        ) from err


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of ``x`` over the positions where ``mask`` is True.

    Args:
        x: Values. Shape (...), e.g. (B, A).
        mask: Bool, True = include. Shape broadcastable to ``x``.
        dim: Dimension to reduce; ``None`` reduces over all elements.

    Returns:
        The masked sum: a scalar when ``dim`` is None, else ``x``'s shape without ``dim``.
        An empty mask (or an empty slice along ``dim``) sums to 0.
    """
    mask = _check_mask(x, mask)
    selected = torch.where(mask, x, 0)
    return selected.sum() if dim is None else selected.sum(dim=dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over the positions where ``mask`` is True.

    Args:
        x: Values. Shape (...), e.g. (B, A).
        mask: Bool, True = include. Shape broadcastable to ``x``.
        dim: Dimension to reduce; ``None`` reduces over all elements.

    Returns:
        The masked mean: a scalar when ``dim`` is None, else ``x``'s shape without ``dim``.

    Raises:
        ValueError: If the mask selects no element (or, with ``dim``, no element in some slice).
    """
    mask = _check_mask(x, mask)
    count = mask.sum() if dim is None else mask.sum(dim=dim)
    if bool((count == 0).any()):
        where = "" if dim is None else f" along dim={dim} for at least one slice"
        raise ValueError(f"masked_mean: the mask selects no element{where}; the mean is undefined")
    return masked_sum(x, mask, dim) / count


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of ``x`` over all positions where ``mask`` is True.

    TRL's ``masked_var`` is unbiased (Bessel n/(n-1)); the Huang et al. 2024 code (SFD) uses the
    biased one (ALGORITHMS.md §5.8), hence the flag. One element has no spread to estimate and
    Bessel's factor would divide by zero, so its variance is 0 either way.

    Args:
        x: Values. Shape (...), e.g. (B, A).
        mask: Bool, True = include. Shape broadcastable to ``x``.
        unbiased: Apply Bessel's correction n/(n-1).

    Returns:
        Scalar variance; 0 for a single masked element.

    Raises:
        ValueError: If the mask is empty.
    """
    mask = _check_mask(x, mask)
    n = int(mask.sum())
    centered = x - masked_mean(x, mask)
    variance = masked_mean(centered**2, mask)
    return variance * (n / (n - 1)) if unbiased and n > 1 else variance


def masked_whiten(
    x: Tensor,
    mask: Tensor,
    keep_mean: bool = False,
    unbiased: bool = True,
    eps: float = 1e-8,
) -> Tensor:
    """Standardise ``x`` with the mean and variance of its masked positions.

    ``(x - mean) * rsqrt(var + eps)``, plus ``mean`` when ``keep_mean`` (ALGORITHMS.md §1.2 step 5:
    advantages are zero-centred, ``whiten_rewards`` keeps the mean; TRL calls the latter
    ``shift_mean=False``).

    Positions where ``mask`` is False are set to 0 in the output, which is what TRL's new PPO does
    right after whitening (ALGORITHMS.md §2), so padding never carries large values downstream.

    Args:
        x: Values. Shape (...), e.g. (B, A).
        mask: Bool, True = include. Shape broadcastable to ``x``.
        keep_mean: Add the masked mean back after scaling (only the scale is normalised).
        unbiased: Use the unbiased variance (TRL) instead of the biased one (SFD).
        eps: Added to the variance inside the rsqrt.

    Returns:
        Whitened values, 0 outside the mask. Same shape as ``x``.

    Raises:
        ValueError: If the mask is empty (a single element whitens to 0).
    """
    mask = _check_mask(x, mask)
    mean = masked_mean(x, mask)
    var = masked_var(x, mask, unbiased=unbiased)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if keep_mean:
        whitened = whitened + mean
    return torch.where(mask, whitened, 0)


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions that count real tokens only: the exclusive cumulative sum of the mask.

    TRL ``forward()``: ``mask.cumsum(1) - mask``. A left-padded row then gets the positions the
    unpadded row would have (ALGORITHMS.md §5.2): mask ``[0, 0, 1, 1, 1]`` -> ``[0, 0, 0, 1, 2]``.
    A forward without position ids would use ``[0..4]`` and silently shift every position.

    Args:
        attention_mask: True (or 1) at real tokens. Shape (B, T).

    Returns:
        Long position ids. Shape (B, T).
    """
    mask = attention_mask.long()
    return mask.cumsum(dim=1) - mask
