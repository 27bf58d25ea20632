"""Evaluation metrics over sampled completions."""

from __future__ import annotations

import torch
from torch import Tensor


def _as_counts(x: Tensor | int, name: str) -> Tensor:
    """Integer counts as an int64 tensor; a float tensor must hold whole numbers."""
    counts = torch.as_tensor(x)
    if counts.is_floating_point():
        if not bool((counts == counts.round()).all()):
            raise ValueError(f"{name} must hold whole numbers, got {counts}")
    elif counts.dtype == torch.bool:
        raise TypeError(f"{name} must be integer counts, not a bool tensor")
    return counts.long()


def pass_at_k(num_samples: Tensor | int, num_correct: Tensor | int, k: int) -> Tensor:
    """Unbiased pass@k estimator (Chen et al. 2021, arXiv:2107.03374, §2.1).

    With n samples of which c are correct, the probability that at least one of k samples
    drawn without replacement is correct is::

        pass@k = 1 - C(n - c, k) / C(n, k) = 1 - prod_{i = n-c+1}^{n} (1 - k / i)

    The product form (the paper's numerically stable Figure 3) avoids the huge binomials; it is
    evaluated here as ``-expm1(sum(log1p(-k / i)))`` in float64. When ``n - c < k`` every draw
    of k contains a correct sample and the estimate is exactly 1. Average the result over
    problems for the benchmark's pass@k (``eval/pass@k``).

    Args:
        num_samples: n, samples drawn per problem. Int or integer tensor, shape (P,) or ().
        num_correct: c, correct samples per problem. Int or integer tensor, broadcastable
            with ``num_samples``.
        k: Budget of attempts, ``1 <= k <= n`` for every problem.

    Returns:
        pass@k per problem, float64. Shape: the broadcast shape of n and c (0-d for ints).

    Raises:
        ValueError: If ``k < 1``, ``k > n`` for some problem, or ``c`` is outside ``[0, n]``.
        TypeError: If the counts are bool tensors.
    """
    n = _as_counts(num_samples, "num_samples")
    c = _as_counts(num_correct, "num_correct")
    n, c = torch.broadcast_tensors(n, c)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n.numel() == 0:
        return torch.zeros(n.shape, dtype=torch.float64)
    if bool((k > n).any()):
        raise ValueError(f"k={k} exceeds the number of samples n={int(n.min())} of some problem")
    if bool(((c < 0) | (c > n)).any()):
        raise ValueError("num_correct must lie in [0, num_samples] for every problem")
    # i = 1..max(n) on a trailing axis; each problem multiplies the factors with n-c < i <= n.
    i = torch.arange(1, int(n.max()) + 1, dtype=torch.float64)  # (N,)
    n_, c_ = n.unsqueeze(-1), c.unsqueeze(-1)  # (..., 1)
    in_product = (i > n_ - c_) & (i <= n_)  # (..., N)
    # i > k keeps log1p away from log(0) on rows with n - c < k, which are answered by 1 below.
    log_factors = torch.where(in_product & (i > k), torch.log1p(-k / i), 0.0)
    estimate = -torch.expm1(log_factors.sum(dim=-1))
    return torch.where(n - c < k, 1.0, estimate)
