"""The built-in environments and tools, played by hand (no model)."""

from __future__ import annotations

import math

import pytest

from rlhf_lightning.data.tasks import build_codebreaker, build_guess_number, build_tool_arithmetic
from rlhf_lightning.envs import Calculator, Codebreaker, GuessNumber, ToolArithmetic
from rlhf_lightning.envs.base import checked_step
from rlhf_lightning.envs.codebreaker import feedback
from rlhf_lightning.envs.tools import parse_tool_call
from rlhf_lightning.errors import EnvError


def test_guess_number_answers_higher_lower_and_rewards_the_find():
    env = GuessNumber(guess_cost=0.1)
    env.reset({"prompt": "p", "secret": 5, "max_guesses": 3})
    assert env.step("8") == ([{"role": "user", "content": "Lower."}], -0.1, False, {
        "success": False, "guesses": 1})  # fmt: skip
    assert env.step("two")[0] == [{"role": "user", "content": "Reply with one number."}]
    last = env.step("5")
    assert last.done and last.info["success"] and last.reward == pytest.approx(0.9)


def test_guess_number_ends_when_the_guesses_run_out():
    env = GuessNumber()
    env.reset({"prompt": "p", "secret": 5, "max_guesses": 1})
    out = env.step("3")
    assert out.done and not out.info["success"] and out.reward == 0.0


def test_mastermind_feedback_counts_each_digit_once():
    assert feedback("123", "123") == (3, 0)
    assert feedback("123", "321") == (1, 2)
    assert feedback("112", "211") == (1, 2)
    assert feedback("114", "444") == (1, 0)  # one 4 in the code: counted once


def test_codebreaker_plays_a_game():
    env = Codebreaker(max_guesses=3)
    env.reset({"prompt": "p", "code": "142"})
    assert env.step("124").messages == [{"role": "user", "content": "1 in place, 2 elsewhere."}]
    assert env.step("hmm").messages[0]["content"].startswith("Reply with 3 digits")
    out = env.step("142")
    assert out.done and out.info["success"] and out.reward == 1.0


def test_calculator_computes_and_refuses_what_is_not_arithmetic():
    calc = Calculator()
    assert calc(expression="347 * 89") == "30883"
    assert calc(expression="(2 + 3) ** 2 / 5") == "5"
    assert calc(expression="1 / 0").startswith("Error: ZeroDivisionError")
    assert calc(expression="9 ** 9 ** 9").startswith("Error")  # bounded, answered at once
    assert calc(expression="__import__('os').system('true')").startswith("Error")


def test_tool_calls_are_parsed_or_explained():
    text = 'Let me compute. <tool_call>{"name": "calculator", "arguments": {"expression": "2*3"}}</tool_call>'
    assert parse_tool_call(text) == ("calculator", {"expression": "2*3"})
    assert parse_tool_call("The answer is 6.") is None
    assert parse_tool_call("<tool_call>{oops</tool_call>").startswith(
        "Error: the tool call is not JSON"
    )


def test_tool_arithmetic_runs_the_calculator_then_scores_the_answer():
    env = ToolArithmetic()
    assert env.tools[0]["function"]["name"] == "calculator"
    env.reset({"prompt": "What is 347 * 89?", "answer": "30883"})
    call = '<tool_call>{"name": "calculator", "arguments": {"expression": "347 * 89"}}</tool_call>'
    out = env.step(call)
    assert out.messages == [{"role": "tool", "content": "30883"}] and not out.done
    unknown = env.step('<tool_call>{"name": "web", "arguments": {}}</tool_call>')
    assert "no tool 'web'" in unknown.messages[0]["content"]
    final = env.step("It is 30,883.")  # out of tool calls or not, a turn without a call ends it
    assert final.done and final.info == {"success": True, "tool_calls": 2} and final.reward == 1.0


def test_the_python_tool_runs_in_the_sandbox():
    env = ToolArithmetic(python=True)
    env.reset({"prompt": "p", "answer": "6"})
    out = env.step(
        '<tool_call>{"name": "python", "arguments": {"code": "print(2 * 3)"}}</tool_call>'
    )
    assert out.messages[0]["content"].strip() == "6"
    env.reset({"prompt": "p", "answer": "6"})
    err = env.step('<tool_call>{"name": "python", "arguments": {"code": "1/0"}}</tool_call>')
    assert "ZeroDivisionError" in err.messages[0]["content"]


def test_a_malformed_step_is_one_clear_error():
    with pytest.raises(EnvError, match="Fix: return"):
        checked_step(("Higher.", float("nan"), False, {}), GuessNumber())


@pytest.mark.parametrize(
    ("build", "columns"),
    [
        (build_guess_number, {"prompt", "secret", "high", "max_guesses"}),
        (build_tool_arithmetic, {"prompt", "answer"}),
        (build_codebreaker, {"prompt", "code"}),
    ],
)
def test_each_game_set_holds_out_a_disjoint_validation_split(build, columns):
    splits = build()
    assert set(splits["train"].column_names) == columns
    key = [c for c in sorted(columns) if c not in ("prompt",)]

    def games(split):
        return {tuple(row[k] for k in ["prompt", *key]) for row in splits[split]}

    assert games("train").isdisjoint(games("validation")) and len(splits["validation"]) > 0


def test_guess_number_charges_a_wasted_guess_on_its_own_turn():
    env = GuessNumber(wasted_cost=0.5)
    env.reset({"prompt": "p", "secret": 5, "high": 8, "max_guesses": 4})
    assert env.step("7").reward == 0.0  # in range: Lower, open range now 1..6
    assert env.step("7").reward == -0.5  # already ruled out
    assert env.step("none").reward == -0.5
    assert env.step("5").reward == 1.0


def test_scripted_games_halve_the_open_range_as_often_as_asked():
    from rlhf_lightning.envs.guess_number import demonstrations

    rows = [{"prompt": "p", "secret": 1, "high": 16, "max_guesses": 4}] * 400
    first = [int(c[1]["content"]) for c in demonstrations(rows, seed=0, halving_share=0.25)]
    middle = sum(g in (8, 9) for g in first) / len(first)
    assert 0.25 < middle < 0.25 + 0.12 + 0.06  # 1/4 halving + 3/4 x 2/16 uniform, +- noise
    always = demonstrations(rows[:50], seed=0, halving_share=1.0)
    assert all(int(c[1]["content"]) in (8, 9) for c in always)


def test_guess_number_pays_each_guess_for_the_information_its_answer_is_expected_to_give():
    env = GuessNumber(success_reward=0.0, information_reward=0.9)
    env.reset({"prompt": "p", "secret": 5, "high": 8, "max_guesses": 5})  # log2(8) = 3 bits
    # 4 of 1..8: found for 1 secret, higher for 4 (5..8), lower for 3 (1..3).
    halving = 1 / 8 * math.log2(8) + 4 / 8 * math.log2(8 / 4) + 3 / 8 * math.log2(8 / 3)
    assert halving == pytest.approx(1.406, abs=1e-3)
    assert env.step("4").reward == pytest.approx(0.9 * halving / 3)  # Higher: 5..8 open
    assert env.step("1").reward == 0.0  # already ruled out: its answer is known
    # 8 of 5..8: found for 1, lower for 3 (5..7): an edge guess tells less than halving.
    edge = 1 / 4 * math.log2(4) + 3 / 4 * math.log2(4 / 3)
    assert edge == pytest.approx(0.811, abs=1e-3)
    assert env.step("8").reward == pytest.approx(0.9 * edge / 3)  # Lower: 5..7 open
    assert env.step("none").reward == 0.0
    # 5 of 5..7: found for 1, higher for 2; and found.
    low_edge = 1 / 3 * math.log2(3) + 2 / 3 * math.log2(3 / 2)
    assert low_edge == pytest.approx(0.918, abs=1e-3)
    assert env.step("5").reward == pytest.approx(0.9 * low_edge / 3)
