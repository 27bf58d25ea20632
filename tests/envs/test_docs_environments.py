"""docs/environments.md: its "write your own" snippet is under 40 lines, plays as documented,
and trains with GRPO through `env=custom`."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd

from rlhf_lightning.api import compose_config
from rlhf_lightning.train import run

PAGE = Path(__file__).resolve().parents[2] / "docs" / "environments.md"


def _snippet() -> str:
    (code,) = re.findall(r"^```python\n(.*?)^```$", PAGE.read_text(), re.M | re.S)
    return code


def test_the_custom_environment_is_under_40_lines_and_plays_as_documented():
    code = _snippet()
    assert len(code.strip().splitlines()) < 40
    scope: dict = {}
    exec(compile(code, str(PAGE), "exec"), scope)
    env = scope["Reverse"]()
    assert env.reset({"prompt": "reverse", "word": "module"})[0]["content"] == (
        "Write module backwards."
    )
    hint = env.step("eludo")
    assert hint.messages[0]["content"].startswith("No. It starts with e") and not hint.done
    last = env.step("eludom")
    assert last.done and last.info["success"] and abs(last.reward - 0.8) < 1e-9


def test_the_custom_environment_trains_with_env_custom(tmp_path, monkeypatch):
    (tmp_path / "my_envs.py").write_text(_snippet())
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_envs", raising=False)
    words = tmp_path / "words"
    words.mkdir()
    for split, names in {
        "train": ["lightning", "module", "reward"],
        "validation": ["policy"],
    }.items():
        rows = [json.dumps({"prompt": "reverse", "word": w}) for w in names * 4]
        (words / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    overrides = [
        "env=custom",
        "stage.env._target_=my_envs.Reverse",
        "+stage.env.retries=2",
        f"data.path={words}",
        "model=tiny",
        "data.batch_size=4",
        "stage.iterations=2",
        "stage.algorithm.group_size=2",
        "stage.sampling.max_new_tokens=4",
        "stage.turns.unfinished_turns=close",
        "stage.compare_prompts=0",
        "report=false",
        "trainer.log_every_n_steps=1",
    ]
    run(compose_config("grpo", overrides, run_dir=tmp_path / "run"))
    metrics = pd.read_csv(tmp_path / "run/metrics.csv")
    assert metrics["env/turns"].dropna().eq(3).all()  # 2 retries: 3 turns per game
    assert metrics["eval/success_rate"].notna().sum() == 2  # before and after
