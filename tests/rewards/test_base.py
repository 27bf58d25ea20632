"""check_scores / check_inputs: every source's output passes through them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlhf_lightning.errors import RewardError, RLHFError
from rlhf_lightning.rewards import CallableReward, RewardSource, check_inputs, check_scores


@pytest.mark.parametrize(
    "scores",
    [
        [1, 2.5, -3],
        (1, 2.5, -3),
        np.array([1, 2.5, -3], dtype=np.float64),
        torch.tensor([1, 2.5, -3], dtype=torch.float64),
        [np.float32(1), torch.tensor(2.5), np.int64(-3)],
    ],
    ids=["list", "tuple", "numpy", "tensor", "mixed scalars"],
)
def test_accepted_forms_become_float32_cpu(scores):
    out = check_scores(scores, 3, "src")
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    assert out.tolist() == [1.0, 2.5, -3.0]


def test_bools_count_as_numbers_and_the_result_is_detached():
    assert check_scores([True, False], 2, "src").tolist() == [1.0, 0.0]
    scores = torch.ones(2, requires_grad=True) * 2
    assert not check_scores(scores, 2, "src").requires_grad


def test_empty_batch():
    assert check_scores([], 0, "src").shape == (0,)


@pytest.mark.parametrize(
    ("scores", "match"),
    [
        ([1.0, 2.0], r"shape \(2,\) for 3 completions.*Fix: return one number per completion"),
        (torch.zeros(3, 1), r"shape \(3, 1\) for 3 completions"),
        (np.zeros((3, 2)), r"shape \(3, 2\)"),
        (1.0, r"returned a float, not one reward per completion"),
        ("0.5", r"returned a str"),
        ([1.0, [2.0], 3.0], r"index 1 .* is itself a sequence"),
        ([1.0, 2.0, "good"], r"index 2 \(prompt 'third prompt'\) is 'good' \(str\), not a number"),
        ([1.0, None, 3.0], r"index 1 .*None.*not a number"),
        (torch.tensor([1j, 2j, 3j]), r"dtype torch.complex64"),
    ],
)
def test_bad_scores_name_the_source_and_the_fix(scores, match):
    with pytest.raises(RewardError, match=match) as err:
        check_scores(scores, 3, "reward function 'my:fn'", prompts=["p1", "p2", "third prompt"])
    assert str(err.value).startswith("reward function 'my:fn'")
    assert "Fix:" in str(err.value)
    assert isinstance(err.value, RLHFError)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 1e300])
def test_non_finite_names_first_index_and_truncated_prompt(bad):
    prompts = ["ok", "x" * 200, "also bad"]
    with pytest.raises(RewardError, match=r"src: reward .* at index 1 \(prompt 'xxx") as err:
        check_scores([0.0, bad, bad], 3, "src", prompts=prompts)
    message = str(err.value)
    assert "x" * 57 + "..." in message and "x" * 61 not in message  # prompt cut to ~60 chars
    assert "not finite" in message and "Fix:" in message


def test_offset_shifts_the_reported_index():
    with pytest.raises(RewardError, match="at index 12"):
        check_scores([0.0, float("nan")], 2, "src", offset=11)


def test_check_inputs_catches_mismatched_batches():
    assert check_inputs(["a", "b"], ["c", "d"], {"ref": ["x", "y"], "k": 3, "s": "one"}, "src") == 2
    with pytest.raises(RewardError, match="src: got 2 prompts but 1 completions"):
        check_inputs(["a", "b"], ["c"], {}, "src")
    with pytest.raises(RewardError, match="column 'ref' has 1 values for 2 completions"):
        check_inputs(["a", "b"], ["c", "d"], {"ref": ["x"]}, "src")
    with pytest.raises(RewardError, match=r"completions\[1\] is a Tensor"):
        check_inputs(["a", "b"], ["c", torch.tensor([1])], {}, "src")
    with pytest.raises(RewardError, match="a single string"):
        check_inputs("a", "b", {}, "src")


def test_implementations_satisfy_the_protocol():
    assert isinstance(CallableReward(lambda p, c: [0.0] * len(c)), RewardSource)
