"""Data: loading (demo corpus, files, hub), SFT and preference formats, collation, DataModules."""

from rlhf_lightning.data.collate import pack_sequences, pad_batch
from rlhf_lightning.data.demo_corpus import load_demo_corpus
from rlhf_lightning.data.demo_pairs import build_demo_pairs
from rlhf_lightning.data.formats import detect_format
from rlhf_lightning.data.kto import KTODataModule
from rlhf_lightning.data.loading import load_table
from rlhf_lightning.data.preference import PreferenceDataModule
from rlhf_lightning.data.prompts import PromptDataModule
from rlhf_lightning.data.sft import SFTDataModule

__all__ = [
    "KTODataModule",
    "PreferenceDataModule",
    "PromptDataModule",
    "SFTDataModule",
    "build_demo_pairs",
    "detect_format",
    "load_demo_corpus",
    "load_table",
    "pack_sequences",
    "pad_batch",
]
