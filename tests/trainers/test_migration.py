"""Every rlhf_lightning snippet of docs/migrating-from-trl.md runs, as written, on tiny models."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "migrating-from-trl.md"


def _snippets() -> list[tuple[str, str]]:
    """(section heading, code) of each python block of the page."""
    found, heading = [], ""
    for match in re.finditer(
        r"^## ([^\n]+)$|^```python\n(.*?)^```$", PAGE.read_text(), re.M | re.S
    ):
        if match.group(1):
            heading = match.group(1)
        else:
            found.append((heading, match.group(2)))
    return found


SNIPPETS = _snippets()


def test_the_page_is_linked_from_the_readme_and_covers_trl():
    readme = (PAGE.parents[1] / "README.md").read_text()
    assert "docs/migrating-from-trl.md" in readme
    headings = [h for h, _ in SNIPPETS]
    for name in ("SFTTrainer", "formatting function", "RewardTrainer", "PPO loop", "GRPOTrainer"):
        assert any(name in h for h in headings), name
    # no snippet on this page imports TRL: every one is this project's
    assert not any(re.search(r"^\s*(from|import) trl\b", code, re.M) for _, code in SNIPPETS)


def test_the_trl_05_ppo_example_differs_only_in_its_imports():
    code = next(code for heading, code in SNIPPETS if heading.startswith("The PPO loop"))
    ours = [line for line in code.splitlines() if "rlhf_lightning" in line]
    assert ours == [
        "from rlhf_lightning.trainers import PPOTrainer, PPOConfig, "
        "AutoModelForCausalLMWithValueHead, create_reference_model",
        "from rlhf_lightning.trainers import respond_to_batch",
    ]


@pytest.mark.parametrize(
    "heading, code", SNIPPETS, ids=[f"{i}-{h.split(' ')[0]}" for i, (h, _) in enumerate(SNIPPETS)]
)
def test_snippet_runs(heading, code, trl_workdir, fake_hub):
    namespace = {"__name__": "migration_snippet"}
    exec(compile(code, f"{PAGE.name}: {heading}", "exec"), namespace)
    if "push_to_hub" in code:
        (files,) = fake_hub.files.values()
        assert "README.md" in files and "config.json" in files
    if 'save_model("my-sft-model")' in code:
        card = (trl_workdir / "my-sft-model" / "README.md").read_text()
        assert "library_name: transformers" in card and "`sft` stage" in card
