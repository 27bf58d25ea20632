"""The synthetic QA preference data (data.path=demo_qa): shape, determinism, held-out questions."""

from __future__ import annotations

from rlhf_lightning.data.demo_qa import build_demo_qa, format_prompt
from rlhf_lightning.data.loading import load_table


def test_splits_columns_and_counts():
    data = load_table("demo_qa", split=None)
    assert data is build_demo_qa()  # built once per process
    assert {name: len(split) for name, split in data.items()} == {"train": 762, "validation": 84}
    for split in data.values():
        assert split.column_names == ["prompt", "chosen", "rejected", "answer"]


def test_rows_are_well_formed_and_questions_held_out():
    data = build_demo_qa()
    train, val = data["train"][:], data["validation"][:]
    for rows in (train, val):
        assert len(set(rows["prompt"])) == len(rows["prompt"])  # one pair per question
        for prompt, chosen, rejected, answer in zip(
            rows["prompt"], rows["chosen"], rows["rejected"], rows["answer"], strict=True
        ):
            assert prompt.startswith("Question: ") and prompt.endswith("\nAnswer:")
            assert chosen.startswith(" ") and rejected.startswith(" ") and chosen != rejected
            assert answer in chosen
    assert not set(train["prompt"]) & set(val["prompt"])


def test_known_rows():
    rows = {r["prompt"]: r for r in build_demo_qa()["train"]} | {
        r["prompt"]: r for r in build_demo_qa()["validation"]
    }
    paris = rows[format_prompt("What is the capital of France?")]
    assert (paris["chosen"], paris["answer"]) == (" The capital of France is Paris.", "Paris")
    foot = rows[format_prompt("How many inches are in 1 foot?")]
    assert foot["chosen"] == " There are 12 inches in 1 foot."
    assert rows[format_prompt("What is 7 times 8?")]["answer"] == "56"
