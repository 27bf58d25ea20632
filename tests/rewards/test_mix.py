"""WeightedReward: Σ w_i r_i on literal numbers, components kept for logging."""

from __future__ import annotations

import pytest
import torch

from rlhf_lightning.errors import RewardError
from rlhf_lightning.rewards import CallableReward, WeightedReward


def constant(*values: float) -> CallableReward:
    return CallableReward(lambda prompts, completions: list(values))


def test_weighted_sum_on_literal_numbers():
    mix = WeightedReward(
        {"a": constant(1.0, 2.0, -1.0), "b": constant(10.0, 0.0, 4.0)},
        {"a": 0.5, "b": -0.25},
    )
    scores = mix(["p"] * 3, ["c"] * 3)
    # a: 0.5*1 - 0.25*10 = -2.0;  0.5*2 - 0 = 1.0;  0.5*-1 - 0.25*4 = -1.5
    assert scores.tolist() == [-2.0, 1.0, -1.5]
    assert scores.dtype == torch.float32
    assert set(mix.last_components) == {"a", "b"}
    assert mix.last_components["a"].tolist() == [1.0, 2.0, -1.0]  # unweighted
    assert mix.last_components["b"].tolist() == [10.0, 0.0, 4.0]


def test_every_source_gets_the_same_call_with_columns():
    seen = {}

    def record(name):
        def fn(prompts, completions, **columns):
            seen[name] = (prompts, completions, columns)
            return [1.0] * len(completions)

        return CallableReward(fn)

    mix = WeightedReward({"x": record("x"), "y": record("y")}, {"x": 1, "y": 2})
    assert mix(["p1", "p2"], ["c1", "c2"], reference=["r1", "r2"]).tolist() == [3.0, 3.0]
    assert seen["x"] == seen["y"] == (["p1", "p2"], ["c1", "c2"], {"reference": ["r1", "r2"]})


def test_a_plain_function_is_a_source_too_and_its_output_is_checked():
    mix = WeightedReward({"raw": lambda p, c, **k: [1.0]}, {"raw": 1.0})
    with pytest.raises(RewardError, match=r"weighted reward component 'raw': .*shape \(1,\) for 2"):
        mix(["a", "b"], ["c", "d"])


@pytest.mark.parametrize(
    ("sources", "weights", "match"),
    [
        ({}, {}, "no sources"),
        ({"a": constant(1.0)}, {"b": 1.0}, r"sources \['a'\] and weights \['b'\]"),
        ({"a": "not a source"}, {"a": 1.0}, "source 'a' is a str"),
        ({"a": constant(1.0)}, {"a": float("nan")}, "weight of 'a' is nan"),
        ({"a": constant(1.0)}, {"a": "1"}, "weight of 'a' is '1'"),
    ],
)
def test_bad_mixes_are_refused(sources, weights, match):
    with pytest.raises(RewardError, match=match):
        WeightedReward(sources, weights)
