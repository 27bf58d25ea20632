"""Starting policies for the built-in multi-turn environments, built on first use.

``demo:guess_number``: a small GPT-2 (the demo architecture and tokenizer) trained from
scratch on conversations of the guess-the-number game played by a scripted player who
guesses within the range still open, in its middle a quarter of the time and anywhere in it
otherwise (``envs.guess_number.demonstrations``, on the training games only). It learns the
format (one number per turn, read the answers), to keep to the open range, and both ways of
guessing; ``stage=grpo env=guess_number`` then learns to prefer the one that wins, measured by
sampled play on the held-out games (``eval/success_rate``).
"""

from __future__ import annotations

from pathlib import Path

import datasets

from rlhf_lightning.data.tasks import build_guess_number
from rlhf_lightning.demo.policy import ensure_model_from_stage
from rlhf_lightning.demo.tokenizer import ensure_demo_tokenizer
from rlhf_lightning.envs.guess_number import demonstrations

# Scripted games per training game: each replay guesses differently.
REPLAYS = 24
# The share of the scripted guesses that halve the open range (the rest guess anywhere in it).
HALVING_SHARE = 0.25


def guess_number_games() -> datasets.Dataset:
    """The warm-up conversations (``messages``), from the training games only."""
    rows = list(build_guess_number()["train"])
    return datasets.Dataset.from_dict(
        {"messages": demonstrations(rows * REPLAYS, seed=0, halving_share=HALVING_SHARE)}
    )


def ensure_guess_number_policy() -> Path:
    """The directory of ``demo:guess_number``, training it first if needed (see above)."""

    def overrides() -> list[str]:
        return [
            "model=demo",
            f"model.tokenizer={ensure_demo_tokenizer()}",
            "model.arch.n_layer=2",
            "model.arch.n_embd=128",
            "data.format=messages",
            "data.max_length=96",
            "data.batch_size=32",
            "trainer.max_steps=300",
            "trainer.val_check_interval=100",
            "stage.num_samples=0",
            "checkpoint.every_n_steps=300",
            "report=false",
        ]

    return ensure_model_from_stage(
        "guess_number_mixed", "sft", "about 4 minutes", overrides, guess_number_games
    )
