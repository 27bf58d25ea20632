"""rlhf_lightning: post-train language models with Lightning modules composed by Hydra."""

__version__ = "0.1.0"
