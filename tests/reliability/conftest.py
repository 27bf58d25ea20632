"""Fixtures for the reliability tests."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from rlhf_lightning.api import compose_config
from rlhf_lightning.models import load_model_and_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    """The tokenizer of `model=tiny` (the demo tokenizer, built offline on first use)."""
    _, tok = load_model_and_tokenizer(
        instantiate(compose_config("sft", ["model=tiny"]).model, _convert_="all")
    )
    return tok
