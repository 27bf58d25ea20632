"""token/shifted/sequence log-probs and entropy against ALGORITHMS.md §5 and python-math loops."""

import math

import pytest
import torch

from rlhf_lightning.functional import (
    entropy_from_logits,
    indexed_token_logprobs,
    sequence_logprobs,
    shifted_token_logprobs,
    token_logprobs,
)


def naive_log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    log_z = top + math.log(sum(math.exp(v - top) for v in row))
    return [v - log_z for v in row]


def test_log_softmax_numbers_algorithms_5_1():
    # ALGORITHMS.md §5.1: L1 = [1, 2, 3]; score every token of the vocab at one position
    logits = torch.tensor([[[1.0, 2.0, 3.0]] * 3])  # (B=1, T=3, V=3)
    tokens = torch.tensor([[0, 1, 2]])
    torch.testing.assert_close(
        token_logprobs(logits, tokens),
        torch.tensor([[-2.40760596, -1.40760596, -0.40760596]]),
        atol=1e-6,
        rtol=0,
    )
    torch.testing.assert_close(
        token_logprobs(logits, tokens, temperature=0.7),
        torch.tensor([[-3.11726126, -1.68868983, -0.26011840]]),
        atol=1e-6,
        rtol=0,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_no_underflow_for_very_unlikely_token(dtype):
    # ALGORITHMS.md §5.4: [0, -200] -> log_softmax [0, -200]; log(softmax) would give -inf
    logits = torch.tensor([[[0.0, -200.0], [0.0, -200.0]]], dtype=dtype)
    out = token_logprobs(logits, torch.tensor([[0, 1]]))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[0.0, -200.0]]), atol=1e-6, rtol=0)


def test_half_precision_is_upcast_and_matches_fp32():
    gen = torch.Generator().manual_seed(0)
    logits = (4 * torch.randn(2, 5, 11, generator=gen)).to(torch.bfloat16)
    tokens = torch.randint(0, 11, (2, 5), generator=gen)
    # bf16 -> fp32 is exact, so both code paths see the same numbers
    expected = token_logprobs(logits.float(), tokens, temperature=0.7)
    out = token_logprobs(logits, tokens, temperature=0.7)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_fp64_stays_fp64_and_matches_naive_loop():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 6, generator=gen, dtype=torch.float64)
    tokens = torch.randint(0, 6, (2, 4), generator=gen)
    out = token_logprobs(logits, tokens, temperature=1.3)
    assert out.dtype == torch.float64
    for b in range(2):
        for t in range(4):
            row = [v / 1.3 for v in logits[b, t].tolist()]
            expected = naive_log_softmax(row)[tokens[b, t].item()]
            assert out[b, t].item() == pytest.approx(expected, abs=1e-12)


def test_shifted_logits_at_t_score_token_t_plus_1():
    # ALGORITHMS.md §5.1: logits[:, :-1] pair with ids[:, 1:]
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [9.0, -9.0, 9.0]]])
    ids = torch.tensor([[1, 2, 0]])
    out = shifted_token_logprobs(logits, ids)
    assert out.shape == (1, 2)
    # position 0 scores id 2 under [1, 2, 3]; position 1 scores id 0 under uniform: log 1/3
    assert out[0, 0].item() == pytest.approx(naive_log_softmax([1.0, 2.0, 3.0])[2], abs=1e-6)
    assert out[0, 1].item() == pytest.approx(math.log(1 / 3), abs=1e-6)
    # the last position's logits and the first id are never used
    logits[0, -1] = 1e6
    ids[0, 0] = 0
    torch.testing.assert_close(shifted_token_logprobs(logits, ids), out)


def test_gradient_is_finite_for_extreme_logits():
    logits = torch.tensor([[[0.0, -200.0]]], requires_grad=True)
    token_logprobs(logits, torch.tensor([[1]])).sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), temperature=0)
    with pytest.raises(ValueError, match="vocab dim"):
        token_logprobs(torch.zeros(1, 2, 3), torch.zeros(1, 3, dtype=torch.long))


def test_sequence_logprobs_sums_over_mask():
    token_logps = torch.tensor([[-1.0, -2.0, 1.0], [-0.5, 1.0, 1.0]])  # 1.0 = padding placeholder
    mask = torch.tensor([[True, True, False], [True, False, False]])
    # -1 - 2 = -3 and -0.5
    torch.testing.assert_close(sequence_logprobs(token_logps, mask), torch.tensor([-3.0, -0.5]))


def test_entropy_literals():
    # uniform over 4 -> log 4
    assert entropy_from_logits(torch.zeros(4)).item() == pytest.approx(math.log(4), abs=1e-6)
    # p = [.7, .2, .1] -> -sum p log p
    p = [0.7, 0.2, 0.1]
    expected = -sum(q * math.log(q) for q in p)
    logits = torch.log(torch.tensor(p)) + 5.0  # shift invariance
    assert entropy_from_logits(logits).item() == pytest.approx(expected, abs=1e-6)
    # banned tokens at -inf contribute 0, not NaN
    banned = torch.tensor([[0.0, -math.inf, -math.inf], [0.0, 0.0, -math.inf]])
    torch.testing.assert_close(entropy_from_logits(banned), torch.tensor([0.0, math.log(2)]))


def test_entropy_matches_naive_loop_in_half_precision():
    gen = torch.Generator().manual_seed(2)
    logits = (3 * torch.randn(3, 7, generator=gen)).to(torch.bfloat16)
    out = entropy_from_logits(logits)
    assert out.dtype == torch.float32
    for i in range(3):
        logps = naive_log_softmax(logits[i].float().tolist())
        expected = -sum(math.exp(lp) * lp for lp in logps)
        assert out[i].item() == pytest.approx(expected, abs=1e-5)


def test_indexed_logprobs_share_a_row_between_tokens():
    # Row 0 is [0, ln 3]: probabilities 1/4 and 3/4; row 1 is uniform over 2 tokens.
    logits = torch.tensor([[0.0, math.log(3.0)], [5.0, 5.0]])
    got = indexed_token_logprobs(logits, torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]))
    expected = torch.tensor([math.log(0.25), math.log(0.75), math.log(0.5)])
    torch.testing.assert_close(got, expected)
    # At temperature 2 row 0 is [0, ln 3 / 2]: 1 / (1 + sqrt 3) and sqrt 3 / (1 + sqrt 3).
    got = indexed_token_logprobs(logits, torch.tensor([0]), torch.tensor([1]), temperature=2.0)
    torch.testing.assert_close(got, torch.tensor([math.log(3**0.5 / (1 + 3**0.5))]))
    half = indexed_token_logprobs(logits.bfloat16(), torch.tensor([1]), torch.tensor([0]))
    assert half.dtype == torch.float32 and half.item() == pytest.approx(math.log(0.5))
