"""Data: loading (demo corpus, local files, hub), SFT formats, collation and DataModules."""

from rlhf_lightning.data.collate import pack_sequences, pad_batch
from rlhf_lightning.data.demo_corpus import load_demo_corpus
from rlhf_lightning.data.formats import detect_format
from rlhf_lightning.data.loading import load_table
from rlhf_lightning.data.sft import SFTDataModule

__all__ = [
    "SFTDataModule",
    "detect_format",
    "load_demo_corpus",
    "load_table",
    "pack_sequences",
    "pad_batch",
]
