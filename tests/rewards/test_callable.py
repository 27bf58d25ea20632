"""CallableReward: functions named as package.module:function, columns as keyword arguments."""

from __future__ import annotations

import sys
import textwrap
import uuid

import pytest
import torch

from rlhf_lightning.errors import RewardError
from rlhf_lightning.rewards import CallableReward
from rlhf_lightning.rewards.examples import exact_match, length_penalty, positive_words

PROMPTS = ["How was it?", "Tell me.", "Say something."]
COMPLETIONS = ["I love it, great day", "it was bad and sad", "meh"]


@pytest.fixture
def tmp_module(tmp_path, monkeypatch):
    """Write a module into a fresh directory on sys.path; returns its (unique) name."""

    def write(source: str) -> str:
        name = f"reward_mod_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.syspath_prepend(str(tmp_path))
        return name

    yield write
    for name in [m for m in sys.modules if m.startswith("reward_mod_")]:
        del sys.modules[name]


def test_examples_by_name_match_hand_computed_scores():
    reward = CallableReward("rlhf_lightning.rewards.examples:positive_words")
    # (love, great) - () over 5 words; () - (bad, sad) over 5 words; no lexicon word in "meh".
    assert reward(PROMPTS, COMPLETIONS).tolist() == pytest.approx([0.4, -0.4, 0.0])
    length = CallableReward("rlhf_lightning.rewards.examples:length_penalty", target=5)
    # 5, 5 and 1 words against a target of 5.
    assert length(PROMPTS, COMPLETIONS).tolist() == pytest.approx([0.0, 0.0, -0.8])


def test_examples_are_plain_functions():
    assert positive_words([], []) == []
    assert length_penalty(["p"], ["a b c d"], target=2) == [-1.0]
    assert exact_match(["q", "q"], ["Paris.", "Lyon"], reference=["paris", "paris"]) == [1.0, 0.0]


def test_function_from_a_module_on_sys_path(tmp_module):
    name = tmp_module(
        """
        def shout(prompts, completions, bonus=0.0):
            return [float(c.count("!")) + bonus for c in completions]
        """
    )
    reward = CallableReward(f"{name}:shout", bonus=0.5)
    scores = reward(["a", "b"], ["hi!!", "no"])
    assert scores.dtype == torch.float32
    assert scores.tolist() == [2.5, 0.5]
    assert repr(reward) == f"CallableReward('{name}:shout', bonus=0.5)"


def test_extra_columns_reach_the_function_as_keyword_arguments(tmp_module):
    name = tmp_module(
        """
        SEEN = {}

        def graded(prompts, completions, reference, weight=1.0, **columns):
            SEEN.update(columns, reference=reference, weight=weight)
            return [weight * (c == r) for c, r in zip(completions, reference)]
        """
    )
    reward = CallableReward(f"{name}:graded", weight=2.0)
    scores = reward(["q1", "q2"], ["4", "5"], reference=["4", "6"], difficulty=[1, 2])
    assert scores.tolist() == [2.0, 0.0]
    seen = sys.modules[name].SEEN
    assert seen == {"reference": ["4", "6"], "weight": 2.0, "difficulty": [1, 2]}
    by_name = CallableReward("rlhf_lightning.rewards.examples:exact_match")
    assert by_name(["q"], ["Four"], reference=["four"]).tolist() == [1.0]


def test_columns_a_function_does_not_name_are_not_passed():
    def only_reference(prompts, completions, reference):
        return [float(len(r)) for r in reference]

    reward = CallableReward(only_reference)
    assert reward(["q"], ["c"], reference=["abc"], unused=["x"]).tolist() == [3.0]
    positive = CallableReward("rlhf_lightning.rewards.examples:positive_words")
    assert positive(["q"], ["love"], reference=["x"]).tolist() == [1.0]


def test_a_missing_required_column_is_named():
    reward = CallableReward("rlhf_lightning.rewards.examples:exact_match")
    with pytest.raises(RewardError, match=r"needs the argument\(s\) \['reference'\].*Fix: add"):
        reward(["q"], ["c"], answer=["c"])


def test_a_column_clashing_with_a_fixed_argument_is_refused():
    reward = CallableReward("rlhf_lightning.rewards.examples:length_penalty", target=3)
    with pytest.raises(RewardError, match=r"column\(s\) \['target'\] are also given"):
        reward(["q"], ["c"], target=[5])


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("no_colon_here", r"expected 'package.module:function'.*Fix:"),
        ("rlhf_lightning.no_such_module:fn", r"no module named 'rlhf_lightning.no_such_module'"),
        (
            "rlhf_lightning.rewards.examples:no_such_fn",
            r"has no attribute 'no_such_fn'.*positive_words",
        ),
        ("rlhf_lightning.rewards.examples:POSITIVE_WORDS", r"is a frozenset, not callable"),
    ],
)
def test_bad_names_give_one_clear_error(name, match):
    with pytest.raises(RewardError, match=match) as err:
        CallableReward(name)
    assert name in str(err.value) and "Fix:" in str(err.value)


def test_module_that_fails_to_import(tmp_module):
    broken = tmp_module("import a_package_that_is_not_installed_xyz\n")
    with pytest.raises(
        RewardError, match=r"importing .* failed.*a_package_that_is_not_installed_xyz"
    ):
        CallableReward(f"{broken}:fn")
    raising = tmp_module("raise RuntimeError('boom at import')\n")
    with pytest.raises(RewardError, match=r"raised RuntimeError: boom at import"):
        CallableReward(f"{raising}:fn")


def test_a_raising_function_is_wrapped_with_its_name_and_cause(tmp_module):
    name = tmp_module(
        """
        def fragile(prompts, completions):
            raise KeyError("missing label")
        """
    )
    reward = CallableReward(f"{name}:fragile")
    with pytest.raises(
        RewardError, match=rf"reward function '{name}:fragile' raised KeyError"
    ) as err:
        reward(["a"], ["b"])
    assert isinstance(err.value.__cause__, KeyError)


@pytest.mark.parametrize(
    ("output", "match"),
    [
        ([1.0], r"shape \(1,\) for 2 completions"),
        ([1.0, float("nan")], r"at index 1 \(prompt 'second'\) is not finite"),
        (["high", "low"], r"at index 0 \(prompt 'first'\) is 'high'"),
    ],
)
def test_bad_outputs_name_the_function(output, match):
    def bad(prompts, completions):
        return output

    reward = CallableReward(bad)
    with pytest.raises(RewardError, match=match) as err:
        reward(["first", "second"], ["x", "y"])
    assert "test_bad_outputs_name_the_function.<locals>.bad" in str(err.value)
