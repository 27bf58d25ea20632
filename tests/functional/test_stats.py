"""Rollout and critic diagnostics against hand counts."""

import torch

from rlhf_lightning.functional import distinct_n, explained_variance, sequence_kl


def test_distinct_n_counts_distinct_ngrams_over_real_tokens():
    ids = torch.tensor([[1, 2, 1, 2], [7, 7, 9, 9]])
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    # bigrams: (1,2) (2,1) (1,2) and (7,7): 3 distinct of 4
    assert distinct_n(ids, mask, 2) == 3 / 4
    assert distinct_n(ids, mask, 1) == 3 / 6  # unigrams {1, 2, 7} of 6 tokens
    assert distinct_n(ids[:, :1], mask[:, :1], 2) == 0.0  # no bigram at all


def test_explained_variance_perfect_mean_and_nan():
    returns = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[True, True, True, False]])
    assert explained_variance(returns, returns, mask).item() == 1.0
    # predicting the mean explains nothing: residual variance equals the returns' variance
    assert explained_variance(torch.full_like(returns, 2.0), returns, mask).item() == 0.0
    assert explained_variance(returns, returns, torch.tensor([[True, False, False, False]])).isnan()


def test_sequence_kl_sums_the_log_ratio_over_real_tokens():
    logp = torch.tensor([[-1.0, -2.0, 5.0]])
    ref = torch.tensor([[-1.5, -1.0, 0.0]])
    mask = torch.tensor([[True, True, False]])
    assert sequence_kl(logp, ref, mask).item() == -0.5  # 0.5 - 1.0
