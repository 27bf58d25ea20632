"""Loading local files, directories, the demo corpus and (offline) hub names."""

from __future__ import annotations

import json

import datasets
import pandas as pd
import pytest

from rlhf_lightning.data import load_table
from rlhf_lightning.data.loading import pick_splits
from rlhf_lightning.errors import DataError

ROWS = [{"prompt": "Hi", "completion": " there"}, {"prompt": "Bye", "completion": " now"}]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl(tmp_path):
    table = load_table(str(write_jsonl(tmp_path / "train.jsonl", ROWS)))
    assert isinstance(table, datasets.Dataset)
    assert table.to_list() == ROWS


def test_nested_messages_jsonl(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}]
    table = load_table(str(write_jsonl(tmp_path / "chat.jsonl", rows)))
    assert table[0]["messages"] == rows[0]["messages"]


def test_json_csv_parquet(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps(ROWS), encoding="utf-8")
    pd.DataFrame(ROWS).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(ROWS).to_parquet(tmp_path / "d.parquet")
    for name in ("d.json", "d.csv", "d.parquet"):
        assert load_table(str(tmp_path / name)).to_list() == ROWS, name


def test_txt_one_text_per_non_empty_line(tmp_path):
    (tmp_path / "d.txt").write_text("first line\n\n  second line  \n", encoding="utf-8")
    assert load_table(str(tmp_path / "d.txt"))["text"] == ["first line", "second line"]


def test_split_none_returns_all_splits(tmp_path):
    splits = load_table(str(write_jsonl(tmp_path / "a.jsonl", ROWS)), split=None)
    assert isinstance(splits, datasets.DatasetDict) and list(splits) == ["train"]


def test_saved_dataset_and_dataset_dict(tmp_path):
    dataset = datasets.Dataset.from_list(ROWS)
    dataset.save_to_disk(str(tmp_path / "one"))
    assert load_table(str(tmp_path / "one")).to_list() == ROWS
    datasets.DatasetDict({"train": dataset, "test": dataset.select([0])}).save_to_disk(
        str(tmp_path / "two")
    )
    splits = load_table(str(tmp_path / "two"), split=None)
    assert sorted(splits) == ["test", "train"] and len(splits["test"]) == 1


def test_directory_of_files_named_by_split(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", ROWS)
    write_jsonl(tmp_path / "validation.jsonl", ROWS[:1])
    splits = load_table(str(tmp_path), split=None)
    assert {name: len(split) for name, split in splits.items()} == {"train": 2, "validation": 1}
    train, val, val_name = pick_splits(splits)
    assert (len(train), len(val), val_name) == (2, 1, "validation")


def test_demo():
    table = load_table("demo")
    assert len(table) > 30_000 and "text" in table.column_names


@pytest.mark.parametrize("path", ["missing.jsonl", "./nope", "~/nope/data.csv", "/no/such/file"])
def test_missing_local_path(path):
    with pytest.raises(DataError) as err:
        load_table(path)
    message = str(err.value)
    assert f"data.path={path}: file not found" in message and "Fix" in message


def test_unknown_extension_and_bad_file(tmp_path):
    (tmp_path / "d.xml").write_text("<a/>")
    with pytest.raises(DataError, match=r"d.xml.*unknown file type '.xml'.*Fix"):
        load_table(str(tmp_path / "d.xml"))
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl.*cannot read.*Fix"):
        load_table(str(tmp_path / "bad.jsonl"))


def test_empty_directory(tmp_path):
    with pytest.raises(DataError, match="no data files.*Fix"):
        load_table(str(tmp_path))


def test_unknown_split(tmp_path):
    with pytest.raises(DataError, match=r"split 'dev' not found \(splits: train\).*Fix"):
        load_table(str(write_jsonl(tmp_path / "a.jsonl", ROWS)), split="dev")
    splits = load_table(str(tmp_path / "a.jsonl"), split=None)
    with pytest.raises(DataError, match="validation split 'val' not found.*Fix"):
        pick_splits(splits, "train", "val", source="data.path=a.jsonl")


def test_hub_name_offline_is_one_clear_error(offline_hub):
    with pytest.raises(DataError) as err:
        load_table("someone/some-dataset")
    message = str(err.value)
    assert "data.path=someone/some-dataset" in message and "hub" in message
    assert "Fix" in message and "local" in message
