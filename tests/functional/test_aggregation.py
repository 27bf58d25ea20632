"""Loss aggregations (GRPO, bnpo/PPO, Dr. GRPO, DAPO) against hand arithmetic (ALGORITHMS.md §4)."""

import pytest
import torch

from rlhf_lightning.functional import (
    AggregationContext,
    constant_normalizer,
    global_token_mean,
    sequence_mean,
    token_mean,
)

PER_TOKEN = torch.tensor([[1.0, 1.0, 99.0, 99.0], [2.0, 2.0, 2.0, 2.0]])  # 99 under the mask
MASK = torch.tensor([[True, True, False, False], [True, True, True, True]])
CTX = AggregationContext(num_items=6, max_completion_length=4)


@pytest.mark.parametrize(
    ("aggregate", "expected"),
    [
        (sequence_mean, 1.5),  # mean(2/2, 8/4)
        (token_mean, 10 / 6),  # (2 + 8) / 6 real tokens
        (constant_normalizer, 1.25),  # 10 / (2 rows * 4)
        (global_token_mean, 10 / 6),  # 10 / num_items 6
    ],
)
def test_aggregations_algorithms_4(aggregate, expected):
    assert aggregate(PER_TOKEN, MASK, CTX).item() == pytest.approx(expected)


def test_global_token_mean_divides_by_the_whole_batch_count():
    # a minibatch holding 6 of the batch's 24 tokens, split into 2 minibatches: num_items 12
    ctx = AggregationContext(num_items=12, max_completion_length=4)
    assert global_token_mean(PER_TOKEN, MASK, ctx).item() == pytest.approx(10 / 12)


def test_empty_rows_contribute_zero():
    mask = torch.tensor([[False, False, False, False], [True, True, True, True]])
    assert sequence_mean(PER_TOKEN, mask, CTX).item() == pytest.approx(1.0)  # mean(0, 8/4)
    empty = torch.zeros_like(MASK)
    assert token_mean(PER_TOKEN, empty, CTX).item() == 0.0


@pytest.mark.parametrize(
    "aggregate", [token_mean, sequence_mean, constant_normalizer, global_token_mean]
)
def test_sequence_level_losses_are_averaged_over_rows(aggregate):
    assert aggregate(torch.tensor([0.5, -1.5]), MASK, CTX).item() == pytest.approx(-0.5)
