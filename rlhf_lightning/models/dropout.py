"""Dropout off and eval mode: rollout, reference and training forwards must see one function."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


def disable_dropout(model: nn.Module) -> nn.Module:
    """Set p=0 on every dropout layer of `model` (in place) and return it."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside the block; every submodule's own flag is restored after it (so a
    frozen part that was in eval mode stays there)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
