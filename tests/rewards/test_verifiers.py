"""Verifier rewards: math answers, format rules, countdown expressions, code tests; configs."""

from __future__ import annotations

import time

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from rlhf_lightning.errors import RewardError
from rlhf_lightning.paths import config_dir
from rlhf_lightning.rewards import (
    CodeReward,
    CountdownReward,
    FormatReward,
    MathReward,
    WeightedReward,
    build_reward_source,
)
from rlhf_lightning.rewards.verifiers import extract_answer, extract_code, parse_number, solves


@pytest.fixture(scope="module")
def math_reward():
    reward = MathReward(timeout_s=10.0)  # roomy: no comparison here should hit it
    yield reward
    reward.close()


def score(reward, completions, **columns):
    """Rewards as a plain list, one prompt per completion."""
    result = reward(["p"] * len(completions), completions, **columns)
    assert result.dtype == torch.float32 and result.shape == (len(completions),)
    return result.tolist()


# -- extraction ----------------------------------------------------------------------------


def test_extract_answer_patterns():
    assert extract_answer("<answer>4</answer> no, <answer>\n 5 </answer>") == "5"
    assert extract_answer("no tags here") is None
    nested = r"so \boxed{\frac{1}{\sqrt{2}}} and \boxed{\frac{a}{b}"  # the last box is unclosed
    assert extract_answer(nested, "boxed") == r"\frac{1}{\sqrt{2}}"
    assert extract_answer("3 apples, then -1,250.5 pears.", "last_number") == "-1,250.5"
    assert extract_answer("Answer: 17 (final)", r"Answer:\s*(\S+)") == "17"


def test_extract_code_prefers_the_last_python_block():
    text = "```\nplain\n```\n```python\nfirst\n```\ntext\n```py\nsecond\n```"
    assert extract_code(text) == "second\n"
    assert extract_code("```\nonly plain\n```") == "only plain\n"
    assert extract_code("```python\ncut off") == "cut off"
    assert extract_code("def f(): pass") == "def f(): pass"


# -- math ------------------------------------------------------------------------------------


def test_parse_number_reads_plain_numbers_only():
    assert parse_number("1,250") == 1250 and parse_number("-3/4") == -0.75
    assert parse_number("0.5.") == 0.5 and parse_number("$7$") == 7
    for text in ("x+1", "1e5", "\\frac{1}{2}", "1,25", "9" * 80):
        assert parse_number(text) is None, text


def test_math_numbers_with_tolerance(math_reward):
    completions = [
        "<answer>1,250</answer>",
        "<answer>1250.0000001</answer>",  # within 1e-6 relative
        "<answer>1251</answer>",
        "<answer>-17</answer>",
        "<answer>1/2</answer>",
        "the answer is 1250",  # no tags
    ]
    references = ["1250", "1250", "1250", "-17", "0.5", "1250"]
    assert score(math_reward, completions, answer=references) == [1, 1, 0, 1, 1, 0]


def test_math_symbolic_equivalence(math_reward):
    completions = [
        r"<answer>\frac{1}{2}</answer>",
        r"<answer>\frac{\sqrt{2}}{2}</answer>",
        r"<answer>x = 3</answer>",
        r"<answer>\frac{1}{3}</answer>",
        r"<answer>2^{10}</answer>",
    ]
    references = ["0.5", r"\frac{1}{\sqrt{2}}", "3", "0.5", "1024"]
    assert score(math_reward, completions, answer=references) == [1, 1, 1, 0, 1]


def test_math_boxed_and_last_number_and_scores():
    boxed = MathReward(extract="boxed", symbolic=False, correct=2.0, wrong=-1.0)
    assert score(boxed, [r"\boxed{42}", r"\boxed{41}", "42"], answer=[42, 42, 42]) == [2, -1, -1]
    last = MathReward(extract="last_number", symbolic=False)
    assert score(last, ["5 + 6 = 11", "it is 12 or 11"], answer=["11", "12"]) == [1, 0]
    # Without the symbolic step, LaTeX answers can only match as text.
    assert score(boxed, [r"\boxed{\frac{1}{2}}"], answer=["0.5"]) == [-1]


def test_math_pathological_answer_is_cut_off_by_the_time_bound():
    reward = MathReward(timeout_s=1.0)
    try:
        score(reward, [r"<answer>\frac{1}{2}</answer>"], answer=["0.5"])  # worker started
        start = time.monotonic()
        completions = [r"<answer>9^{9^{9^{9}}}</answer>", "<answer>3</answer>"]
        assert score(reward, completions, answer=["1", "3"]) == [0, 1]
        assert time.monotonic() - start < reward.timeout_s + 3.0
        assert reward.last_timeouts == 1
        # The next symbolic comparison gets a fresh worker.
        assert score(reward, [r"<answer>\frac{2}{4}</answer>"], answer=["1/2"]) == [1]
    finally:
        reward.close()


def test_math_errors_name_the_fix():
    with pytest.raises(RewardError, match="no 'answer' column.*data=arithmetic"):
        MathReward(symbolic=False)(["p"], ["<answer>1</answer>"], reference=["1"])
    with pytest.raises(RewardError, match="has no capturing group"):
        MathReward(extract=r"Answer: \d+")
    with pytest.raises(RewardError, match="valid regular expression"):
        MathReward(extract="(unclosed")
    with pytest.raises(RewardError, match="1 values for 2 completions"):
        MathReward(symbolic=False)(["p", "q"], ["a", "b"], answer=["1"])


# -- format ----------------------------------------------------------------------------------


def test_format_presets_and_regex():
    answer = FormatReward()
    completions = ["<answer>42</answer>", " <answer>4\n2</answer>\n", "So <answer>42</answer>"]
    assert score(answer, [*completions, "<answer></answer>"]) == [1, 1, 0, 0]
    think = FormatReward("think_answer", matched=0.5)
    good = "<think>6*7</think>\n<answer>42</answer>"
    assert score(think, [good, "<answer>42</answer>", good + " extra"]) == [0.5, 0, 0]
    anywhere = FormatReward(r"\d+", full_match=False)
    assert score(anywhere, ["it is 42", "no digits"]) == [1, 0]
    with pytest.raises(RewardError, match="valid regex"):
        FormatReward("[")


# -- countdown --------------------------------------------------------------------------------


def test_countdown_rules():
    reward = CountdownReward(format_score=0.1)
    numbers, target = [3, 7, 19, 44], 82
    completions = {
        "<answer>(44 - 19) * 3 + 7</answer>": 1.0,
        "<answer>(44 - 19) * 3 + 7 = 82</answer>": 1.0,  # "= rhs" is ignored
        "<answer>7 + 3 * (44 - 19)</answer>": 1.0,
        "<answer>44 + 19 + 7 + 3</answer>": 0.1,  # 73
        "<answer>(44 - 19) * 3 + 7 + 7 - 7</answer>": 0.1,  # 7 used three times
        "<answer>(44 - 19) * 3</answer>": 0.1,  # 7 unused
        "<answer>82</answer>": 0.1,
        "<answer>7 / (3 - 3) + 44</answer>": 0.1,  # division by zero
        "<answer>__import__('os').system('true')</answer>": 0.1,  # never evaluated
        "<answer>2 ** 6 + 19 - 1</answer>": 0.1,  # power is not allowed
        "<answer>-3 + 44 + 19 + 7 * 3</answer>": 0.1,  # unary minus is not allowed
        "(44 - 19) * 3 + 7": 0.0,  # no answer tags
    }
    scores = score(
        reward,
        list(completions),
        numbers=[numbers] * len(completions),
        target=[target] * len(completions),
    )
    assert scores == pytest.approx(list(completions.values()))


def test_countdown_at_most_once_and_exact_fractions():
    assert not solves("44 + 38", [44, 38, 5], 82)  # TinyZero: every number
    assert solves("44 + 38", [44, 38, 5], 82, use_all=False)
    assert not solves("44 + 44 - 6", [44, 6, 5], 82, use_all=False)  # 44 twice
    assert solves("(1 / 3 + 1 / 3 + 1 / 3) * 5", [1, 3, 1, 3, 1, 3, 5], 5)  # exact, not float
    assert not solves("1" * 300, [1], 1)  # longer than allowed


def test_countdown_division_by_zero_scores_zero_by_default():
    reward = CountdownReward()
    assert score(
        reward, ["<answer>4 / (2 - 2) + 1</answer>"], numbers=[[4, 2, 2, 1]], target=[5]
    ) == [0]


# -- code ------------------------------------------------------------------------------------

DOUBLE = "```python\ndef double(x):\n    return 2 * x\n```"
TESTS = ["assert double(2) == 4", "assert double(0) == 0", "assert double(-1) == -3"]


def test_code_fraction_and_all_modes():
    completions = [DOUBLE, "```python\ndef double(x):\n    return x + x - (x < 0)\n```", "oops("]
    tests = [TESTS, TESTS, TESTS]
    fraction = CodeReward(timeout_s=10.0)  # no run should time out, even on a busy machine
    assert score(fraction, completions, tests=tests) == pytest.approx([2 / 3, 1.0, 0.0])
    assert fraction.last_statuses == {"ok": 2, "error": 1}
    assert score(CodeReward(mode="all", timeout_s=10.0), completions, tests=tests) == [0, 1, 0]


def test_code_hostile_completion_scores_zero_and_others_still_count():
    completions = ["```python\nwhile True:\n    pass\n```", DOUBLE]
    start = time.monotonic()
    scores = score(
        CodeReward(timeout_s=1.0), completions, tests=[TESTS[:2], "assert double(3) == 6"]
    )
    assert scores == [0.0, 1.0]
    assert time.monotonic() - start < 3.0


def test_code_errors_name_the_fix():
    reward = CodeReward(timeout_s=1.0)
    with pytest.raises(RewardError, match="has no tests"):
        reward(["p"], [DOUBLE], tests=[[]])
    with pytest.raises(RewardError, match="not a list of test strings"):
        reward(["p"], [DOUBLE], tests=[[1, 2]])
    with pytest.raises(RewardError, match="mode='some'"):
        CodeReward(mode="some")


# -- configs and mixes ----------------------------------------------------------------------


def compose_reward(*overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides)).reward


@pytest.mark.parametrize(
    "name, cls, completions, columns, expected",
    [
        (
            "math",
            MathReward,
            ["<answer>56</answer>", "<answer>5</answer>"],
            {"answer": ["56"] * 2},
            [1, 0],
        ),
        ("format", FormatReward, ["<answer>56</answer>", "56"], {}, [1, 0]),
        (
            "countdown",
            CountdownReward,
            ["<answer>3 * 4 + 2</answer>", "<answer>14</answer>"],
            {"numbers": [[2, 3, 4]] * 2, "target": [14, 14]},
            [1, 0],
        ),
        ("code", CodeReward, [DOUBLE, "pass"], {"tests": [TESTS[:2]] * 2}, [1, 0]),
    ],
)
def test_reward_configs_instantiate_and_score(name, cls, completions, columns, expected):
    reward = instantiate(compose_reward(f"reward={name}"))
    assert isinstance(reward, cls)
    assert score(reward, completions, **columns) == expected
    assert isinstance(build_reward_source(name), cls)


def test_verifiers_mix_in_a_weighted_reward():
    mix = WeightedReward(
        {"correct": MathReward(symbolic=False), "format": FormatReward()},
        {"correct": 1.0, "format": 0.1},
    )
    completions = ["<answer>12</answer>", "12 <answer>12</answer>", "<answer>13</answer>"]
    assert score(mix, completions, answer=["12"] * 3) == pytest.approx([1.1, 1.0, 0.1])
    assert mix.last_components["format"].tolist() == [1.0, 0.0, 1.0]
