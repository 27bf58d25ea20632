"""Turns ``data.path`` into a ``datasets.DatasetDict``: the demo corpus, a built-in task, a
local file or directory, or a hub dataset name.

Everything that can go wrong for a user (missing file, unreadable file, unknown split, hub not
reachable) becomes one ``DataError`` that names the path and the fix.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import datasets

from rlhf_lightning.data.demo_corpus import load_demo_corpus
from rlhf_lightning.data.demo_qa import DEMO_QA, build_demo_qa
from rlhf_lightning.data.demo_toxic import DEMO_TOXIC, build_demo_toxic_prompts
from rlhf_lightning.data.tasks import TASKS, build_task, task_name
from rlhf_lightning.errors import DataError

DEMO = "demo"
# Extension -> reader name. ``.txt`` is ours (one example per non-empty line); the others are
# datasets' packaged builders, which work offline.
EXTENSIONS = {
    ".jsonl": "json",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".txt": "text",
}
VALIDATION_NAMES = ("validation", "valid", "val", "dev", "test")
_SPLIT_FILE_NAMES = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev", "eval"),
    "test": ("test", "testing"),
}
# A hub id is "name" or "owner/name" with these characters only.
_HUB_ID = re.compile(r"^[\w.-]+(?:/[\w.-]+)?$")
_FIX_LOCAL = "pass a local .jsonl/.json/.csv/.parquet/.txt file or a dataset directory"


def load_table(path: str, split: str | None = "train") -> datasets.DatasetDict | datasets.Dataset:
    """Loads a dataset from the demo corpus, a local file or directory, or the hub.

    Args:
        path: ``"demo"`` (embedded corpus, one ``train`` split); ``"demo_qa"`` (synthetic
            question-answer pairs, ``train`` and ``validation``); ``"arithmetic"``,
            ``"countdown"``, ``"code_tasks"`` (tasks with right answers for verifier rewards,
            ``train`` and ``validation``, see :mod:`rlhf_lightning.data.tasks`; arguments
            after a ``?``: ``arithmetic?max_digits=2&operations=+-``); a local file
            (``.jsonl``, ``.json``, ``.csv``, ``.parquet``, or ``.txt`` with one ``text`` per
            non-empty line); a local directory (saved with ``save_to_disk``, or holding data
            files whose names give the split: ``train.jsonl``, ``validation.jsonl``...); else a
            hub dataset name.
        split: the split to return; ``None`` returns every split as a ``DatasetDict``.

    Returns:
        The ``Dataset`` of ``split``, or a ``DatasetDict`` of all splits when ``split`` is None.

    Raises:
        DataError: the path does not exist, cannot be read, lacks ``split``, or the hub dataset
            cannot be reached.
    """
    splits = _load_splits(path)
    if split is None:
        return splits
    if split not in splits:
        raise DataError(
            f"data.path={path}: split '{split}' not found (splits: {', '.join(splits)}). "
            f"Fix: set data.split to one of them."
        )
    return splits[split]


def pick_splits(
    splits: datasets.DatasetDict,
    split: str = "train",
    val_split: str | None = None,
    *,
    source: str = "data",
) -> tuple[datasets.Dataset, datasets.Dataset | None, str | None]:
    """Picks the training split and, when there is one, a validation split.

    Args:
        splits: all splits of a dataset.
        split: name of the training split.
        val_split: name of the validation split; ``None`` takes the first of ``validation``,
            ``valid``, ``val``, ``dev``, ``test`` that exists (other than ``split``).
        source: what the data is (``data.path=...``), for error messages.

    Returns:
        ``(train, validation, validation_name)``; the last two are None when ``val_split`` is
        None and no split has a validation name (the caller may then hold out part of train).
    """
    names = ", ".join(splits)
    if split not in splits:
        raise DataError(
            f"{source}: split '{split}' not found (splits: {names}). "
            "Fix: set data.split to one of them."
        )
    if val_split is not None:
        if val_split not in splits:
            raise DataError(
                f"{source}: validation split '{val_split}' not found (splits: {names}). "
                "Fix: set data.val_split to one of them, or data.val_split=null to hold out "
                "data.val_fraction of the training split."
            )
        return splits[split], splits[val_split], val_split
    for name in VALIDATION_NAMES:
        if name in splits and name != split:
            return splits[split], splits[name], name
    return splits[split], None, None


def _load_splits(path: str) -> datasets.DatasetDict:
    if path == DEMO:
        return datasets.DatasetDict({"train": load_demo_corpus()})
    if path == DEMO_QA:
        return build_demo_qa()
    if path == DEMO_TOXIC:
        return build_demo_toxic_prompts()
    if task_name(path) in TASKS:
        try:
            return build_task(path)
        except ValueError as err:
            raise DataError(
                f"data.path={path}: {err}. Fix: drop the argument or correct its value "
                "(rlhf_lightning/data/tasks)."
            ) from err
    local = Path(os.path.expanduser(path))
    if local.is_file():
        return datasets.DatasetDict({"train": _read_file(local, path)})
    if local.is_dir():
        return _read_dir(local, path)
    if _looks_local(path):
        raise DataError(
            f"data.path={path}: file not found (resolved to {local.absolute()}). "
            f"Fix: check the path, {_FIX_LOCAL}, or use data.path=demo."
        )
    return _load_hub(path)


def _looks_local(path: str) -> bool:
    """Whether ``path`` is meant as a local path rather than a hub id.

    ``/`` alone does not decide it: hub ids are ``owner/name``.
    """
    if path.startswith((".", "~", "/")) or (os.sep != "/" and os.sep in path):
        return True
    if Path(path).suffix.lower() in EXTENSIONS:
        return True
    return not _HUB_ID.match(path)


def _read_file(file: Path, path: str) -> datasets.Dataset:
    reader = EXTENSIONS.get(file.suffix.lower())
    if reader is None:
        raise DataError(
            f"data.path={path}: unknown file type '{file.suffix}'. "
            f"Fix: {_FIX_LOCAL} (the extension picks the reader)."
        )
    if file.stat().st_size == 0:
        raise DataError(
            f"data.path={path}: {file} is empty. Fix: point data.path at a file with rows."
        )
    try:
        if reader == "text":
            return _read_lines(file)
        return datasets.load_dataset(reader, data_files=str(file), split="train")
    except (
        OSError,
        ValueError,
        UnicodeDecodeError,
        datasets.exceptions.DatasetGenerationError,
    ) as err:
        raise DataError(
            f"data.path={path}: cannot read {file} as {reader} ({_short(err)}). "
            f"Fix: check the file is valid {reader} (UTF-8; JSON lines: one object per line)."
        ) from err


def _read_lines(file: Path) -> datasets.Dataset:
    lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    return datasets.Dataset.from_dict({"text": [line for line in lines if line]})


def _read_dir(directory: Path, path: str) -> datasets.DatasetDict:
    if (directory / "dataset_dict.json").is_file() or (directory / "state.json").is_file():
        try:
            loaded = datasets.load_from_disk(str(directory))
        except (OSError, ValueError) as err:
            raise DataError(
                f"data.path={path}: cannot load the saved dataset ({_short(err)}). "
                "Fix: re-save it with Dataset.save_to_disk or DatasetDict.save_to_disk."
            ) from err
        if isinstance(loaded, datasets.Dataset):
            return datasets.DatasetDict({"train": loaded})
        return loaded
    files = sorted(f for f in directory.iterdir() if f.is_file() and f.suffix.lower() in EXTENSIONS)
    if not files:
        raise DataError(
            f"data.path={path}: directory has no data files and is not a saved dataset. "
            f"Fix: put train.jsonl (or .json/.csv/.parquet/.txt) in it, or {_FIX_LOCAL}."
        )
    by_split: dict[str, list[datasets.Dataset]] = {}
    for file in files:
        by_split.setdefault(_split_of(file), []).append(_read_file(file, path))
    try:
        return datasets.DatasetDict(
            {name: datasets.concatenate_datasets(parts) for name, parts in by_split.items()}
        )
    except ValueError as err:
        raise DataError(
            f"data.path={path}: the files of one split have different columns ({_short(err)}). "
            "Fix: give every file of a split the same columns."
        ) from err


def _split_of(file: Path) -> str:
    """Split named by a file: ``train.jsonl``, ``my-validation.csv`` ...; else ``train``."""
    words = re.split(r"[^a-z]+", file.stem.lower())
    for split, names in _SPLIT_FILE_NAMES.items():
        if any(word in names for word in words):
            return split
    return "train"


def _load_hub(path: str) -> datasets.DatasetDict:
    try:
        loaded = datasets.load_dataset(path)
    # Broad on purpose: offline, unknown name, gated, bad config all reach the user the same way.
    except Exception as err:
        raise DataError(
            f"data.path={path}: could not load '{path}' from the Hugging Face hub "
            f"({type(err).__name__}: {_short(err)}). This machine may be offline. "
            f"Fix: {_FIX_LOCAL}, use data.path=demo, or check the name."
        ) from err
    if isinstance(loaded, datasets.Dataset):
        return datasets.DatasetDict({"train": loaded})
    return loaded


def _short(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
