"""unigram_perplexity against hand-computed literals."""

import math

import pytest
import torch

from rlhf_lightning.functional import unigram_perplexity


def test_laplace_example_by_hand():
    # counts [2, 1, 0] + 1 each over 3 + 3 = 6 -> probs [3/6, 2/6, 1/6]
    # eval [0, 2]: exp(-(log 1/2 + log 1/6) / 2) = sqrt(2 * 6) = sqrt(12)
    train = torch.tensor([0, 0, 1])
    ppl = unigram_perplexity(train, torch.tensor([0, 2]), vocab_size=3, smoothing=1.0)
    assert isinstance(ppl, float)
    assert ppl == pytest.approx(math.exp(-(math.log(0.5) + math.log(1 / 6)) / 2), abs=1e-6)
    assert ppl == pytest.approx(math.sqrt(12.0), abs=1e-6)


def test_no_smoothing():
    # probs [2/3, 1/3, 0]; eval [0, 1]: exp(-(log 2/3 + log 1/3) / 2) = sqrt(9 / 2)
    train = torch.tensor([0, 0, 1])
    ppl = unigram_perplexity(train, torch.tensor([0, 1]), vocab_size=3, smoothing=0.0)
    assert ppl == pytest.approx(math.sqrt(4.5), abs=1e-6)
    # an unseen eval token has probability 0 -> infinite perplexity, no exception
    assert unigram_perplexity(train, torch.tensor([2]), vocab_size=3, smoothing=0.0) == math.inf


def test_uniform_when_no_train_tokens():
    # smoothing only: every token has probability 1/V, so perplexity is V
    empty = torch.tensor([], dtype=torch.long)
    assert unigram_perplexity(empty, torch.tensor([0, 3]), vocab_size=5) == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("train", "evaluate", "match"),
    [
        (torch.tensor([0, 3]), torch.tensor([0]), "outside"),
        (torch.tensor([0, 1]), torch.tensor([-1]), "outside"),
        (torch.tensor([0, 1]), torch.tensor([], dtype=torch.long), "empty"),
        (torch.tensor([0.0, 1.0]), torch.tensor([0]), "long"),
        (torch.tensor([[0, 1]]), torch.tensor([0]), "1-D"),
    ],
)
def test_invalid_inputs_raise(train, evaluate, match):
    with pytest.raises(ValueError, match=match):
        unigram_perplexity(train, evaluate, vocab_size=3)


def test_no_mass_raises():
    empty = torch.tensor([], dtype=torch.long)
    with pytest.raises(ValueError, match="no mass"):
        unigram_perplexity(empty, torch.tensor([0]), vocab_size=3, smoothing=0.0)
