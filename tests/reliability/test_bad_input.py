"""Malformed input: each case gives one message naming the file/row/prompt and the fix.

The table below is the contract users see; each row builds the bad input, runs the component a
stage would run, and checks the message (never a bare traceback from deep inside).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from rlhf_lightning.api import compose_config
from rlhf_lightning.data import PreferenceDataModule, SFTDataModule
from rlhf_lightning.data.prompts import PromptDataModule, PromptTruncationWarning
from rlhf_lightning.errors import ConfigError, DataError, RewardError
from rlhf_lightning.rewards import CallableReward
from rlhf_lightning.rewards.base import score_within
from rlhf_lightning.train import run


def _jsonl(path: Path, rows: list) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def _latin1(path: Path, rows: list) -> str:
    path.write_bytes("caf\xe9 au lait\nfine line\n".encode("latin-1"))
    return str(path)


OK = {"text": "a fine row"}
PAIR = {"prompt": "p", "chosen": "a", "rejected": "b"}

# name: (DataModule, file name, rows or writer, expected message pieces[, DataModule arguments])
DATA_CASES = {
    "missing file": (SFTDataModule, None, None, ["nope.jsonl: file not found", "Fix:"]),
    "malformed JSON line": (
        SFTDataModule,
        "bad.jsonl",
        ['{"text": "ok"}', '{"text": '],
        ["bad.jsonl as json", "one object per line"],
    ),
    "empty file": (SFTDataModule, "empty.jsonl", [], ["empty.jsonl is empty", "Fix:"]),
    "non-UTF-8 bytes": (
        SFTDataModule,
        "latin1.txt",
        _latin1,
        ["can't decode byte 0xe9", "valid text (UTF-8"],
    ),
    "no usable column": (
        SFTDataModule,
        "nocol.jsonl",
        [{"body": "x"}] * 4,
        ["cannot tell the data format", "data.columns.text=body"],
    ),
    "wrong type": (
        SFTDataModule,
        "type.jsonl",
        [OK] * 3 + [{"text": 5}],
        ["row 3, column 'text'", "got int 5", "drop or repair"],
    ),
    "empty text": (
        SFTDataModule,
        "blank.jsonl",
        [OK] * 3 + [{"text": "  "}],
        ["row 3, column 'text'", "non-empty string"],
    ),
    "chat without an assistant turn": (
        SFTDataModule,
        "chat.jsonl",
        [{"messages": [{"role": "wizard", "content": "x"}]}] * 3,
        ["row 0, column 'messages'", "no message has role 'assistant'"],
    ),
    "pairs missing a side": (
        PreferenceDataModule,
        "pairs.jsonl",
        [{"prompt": "p", "chosen": "a"}] * 4,
        ["column 'rejected' not found", "data.columns.rejected="],
    ),
    "pair with a null side": (
        PreferenceDataModule,
        "null.jsonl",
        [PAIR] * 3 + [{**PAIR, "chosen": None}],
        ["row 3, column 'chosen'", "NoneType None"],
    ),
    "non-text prompt": (
        PromptDataModule,
        "prompts.jsonl",
        [{"prompt": "a"}, {"prompt": 3}],
        ["row 1 has a non-text 'prompt'", "Fix:"],
    ),
    "pairs identical once truncated": (
        PreferenceDataModule,
        "same.jsonl",
        [{**PAIR, "chosen": "same words " * 20 + "yes", "rejected": "same words " * 20 + "no"}] * 4,
        ["train pairs have", "or identical sides", "data.max_length=16", "none is left", "Fix:"],
        {"max_length": 16},
    ),
    "fewer prompts than one batch": (
        PromptDataModule,
        "few.jsonl",
        [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c"}],
        ["3 prompts", "data.batch_size=8", "no iteration", "Fix:"],
        {"batch_size": 8},
    ),
}


@pytest.mark.parametrize("name", list(DATA_CASES))
def test_malformed_data_names_the_problem_and_the_fix(name, tmp_path, tokenizer):
    module_cls, filename, rows, expected, *options = DATA_CASES[name]
    if filename is None:
        path = str(tmp_path / "nope.jsonl")
    elif callable(rows):
        path = rows(tmp_path / filename, [])
    else:
        path = _jsonl(tmp_path / filename, rows)
    kwargs = options[0] if options else {}
    module = (
        module_cls(path=path, **kwargs)
        if module_cls is PromptDataModule
        else module_cls(tokenizer=tokenizer, path=path, **kwargs)
    )
    with pytest.raises(DataError) as err:
        module.setup()
        module.train_dataloader()  # what fit asks for first
    message = str(err.value)
    assert f"data.path={path}" in message
    for piece in expected:
        assert piece in message, message


def _raises(prompts, completions, **columns):
    raise ValueError("scoring server down")


def _too_short(prompts, completions, **columns):
    return [1.0]


def _nan(prompts, completions, **columns):
    return [float("nan")] * len(completions)


def _text(prompts, completions, **columns):
    return ["good"] * len(completions)


def _meta(prompts, completions, **columns):
    return torch.zeros(len(completions), device="meta")


def _hangs(prompts, completions, **columns):
    time.sleep(10)  # stands for a call that never returns
    return [0.0] * len(completions)


REWARD_CASES = {
    "reward function raises": (_raises, ["raised ValueError: scoring server down", "Fix:"]),
    "wrong shape": (_too_short, ["shape (1,) for 2 completions", "shape (2,)"]),
    "NaN reward": (_nan, ["index 0 (prompt 'a') is not finite", "Fix:"]),
    "not a number": (_text, ["index 0 (prompt 'a') is 'good' (str)", "return a float"]),
    "reward tensor on the meta device": (_meta, ["on the meta device", "Fix:"]),
    "reward function hangs": (
        _hangs,
        ["returned no scores within 0.5 s for a batch of 2 (first prompt 'a')", "Fix:"],
    ),
}


@pytest.mark.parametrize("name", list(REWARD_CASES))
def test_bad_reward_functions_name_the_prompt_and_the_fix(name):
    function, expected = REWARD_CASES[name]
    with pytest.raises(RewardError) as err:  # as a stage scores: within its reward deadline
        score_within(CallableReward(function), ["a", "b"], ["x", "y"], {}, timeout_s=0.5)
    for piece in expected:
        assert piece in str(err.value), str(err.value)


def test_over_long_prompts_are_cut_to_their_last_tokens_with_one_warning(tmp_path, tokenizer):
    long_prompt = " ".join(f"word{i}" for i in range(200))
    path = _jsonl(tmp_path / "long.jsonl", [{"prompt": "short"}, {"prompt": long_prompt}] * 2)
    module = PromptDataModule(path=path, max_prompt_tokens=16, tokenizer=tokenizer)
    with pytest.warns(PromptTruncationWarning) as caught:
        module.setup()
    assert len(caught) == 1
    message = str(caught[0].message)
    assert f"data.path={path}: 2 of 4 prompts are longer than data.max_prompt_tokens=16" in message
    assert "the first is row 1" in message and "Fix: raise data.max_prompt_tokens" in message
    assert module.truncated_prompts == 2
    prompts = list(module.rows["prompt"])
    assert prompts[0] == "short"
    cut = tokenizer(prompts[1], add_special_tokens=False)["input_ids"]
    assert len(cut) <= 16
    assert prompts[1].endswith("word199")  # the end, which the response continues, is kept


def test_prompts_within_the_limit_are_untouched(tmp_path, tokenizer, recwarn):
    path = _jsonl(tmp_path / "ok.jsonl", [{"prompt": "a short prompt"}] * 3)
    module = PromptDataModule(path=path, max_prompt_tokens=16, tokenizer=tokenizer)
    module.setup()
    assert module.truncated_prompts == 0
    assert list(module.rows["prompt"]) == ["a short prompt"] * 3
    assert not [w for w in recwarn if issubclass(w.category, PromptTruncationWarning)]


def test_an_rl_run_of_no_iterations_is_refused(tmp_path):
    config = compose_config("ppo", ["experiment=ppo_smoke", "stage.iterations=0"], run_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"stage.iterations=0: nothing would run. Fix: "):
        run(config)
