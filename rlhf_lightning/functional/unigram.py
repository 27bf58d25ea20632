"""Unigram perplexity: the no-context baseline a language model must beat."""

from __future__ import annotations

import torch
from torch import Tensor


def _check_tokens(name: str, tokens: Tensor, vocab_size: int) -> None:
    if tokens.ndim != 1 or tokens.dtype != torch.long:
        raise ValueError(
            f"{name} must be a 1-D long tensor, got shape {tuple(tokens.shape)} "
            f"dtype {tokens.dtype}"
        )
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(f"{name} holds ids outside [0, vocab_size={vocab_size})")


def unigram_perplexity(
    train_tokens: Tensor,
    eval_tokens: Tensor,
    vocab_size: int,
    smoothing: float = 1.0,
) -> float:
    """Perplexity of ``eval_tokens`` under an add-``smoothing`` unigram model of ``train_tokens``.

    ``p(v) = (count_train(v) + smoothing) / (N + smoothing * vocab_size)`` (Laplace smoothing
    when ``smoothing`` is 1), and ``ppl = exp(-mean_{eval} log p(token))``.

    Args:
        train_tokens: Token ids the counts come from. Shape (N,), long.
        eval_tokens: Token ids to score. Shape (M,), long, M >= 1.
        vocab_size: Number of token ids; every id must lie in ``[0, vocab_size)``.
        smoothing: Pseudo-count added to every vocabulary entry, >= 0.

    Returns:
        The perplexity as a Python float; ``inf`` when ``smoothing`` is 0 and an eval token never
        occurs in the training tokens.

    Raises:
        ValueError: On non-1-D or non-long tokens, out-of-range ids, empty ``eval_tokens``,
            negative ``smoothing``, or a model with no mass (no train tokens and no smoothing).
    """
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing}")
    _check_tokens("train_tokens", train_tokens, vocab_size)
    _check_tokens("eval_tokens", eval_tokens, vocab_size)
    if eval_tokens.numel() == 0:
        raise ValueError("eval_tokens is empty; perplexity over no tokens is undefined")
    total = train_tokens.numel() + smoothing * vocab_size
    if total == 0:
        raise ValueError("no train tokens and smoothing=0: the unigram model has no mass")

    # float64: counts up to ~1e9 tokens and log of tiny probabilities stay exact enough.
    counts = torch.bincount(train_tokens.cpu(), minlength=vocab_size).double()
    probs = (counts + smoothing) / total
    mean_nll = -torch.log(probs[eval_tokens.cpu()]).mean()
    # torch.exp saturates to inf where math.exp would raise OverflowError.
    return torch.exp(mean_nll).item()
