"""Data-parallel ranks must end a fit with the same weights; this checks that they do."""

from __future__ import annotations

import logging

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from rlhf_lightning.distributed import gather_rows, rank_and_world
from rlhf_lightning.errors import NumericalError

log = logging.getLogger(__name__)


def weights_fingerprint(module: torch.nn.Module) -> torch.Tensor:
    """Two float64 numbers per trainable tensor (sum, and sum weighted by position) that any
    difference between two copies of the weights changes, in practice. Shape (2 * tensors,)."""
    values = []
    for param in module.parameters():
        if param.requires_grad:
            flat = param.detach().double().flatten()
            ramp = torch.linspace(1.0, 2.0, flat.numel(), dtype=torch.float64, device=flat.device)
            values += [flat.sum(), (flat * ramp).sum()]
    return torch.stack(values) if values else torch.zeros(0, dtype=torch.float64)


class RanksAgree(Callback):
    """At the end of a data-parallel fit, compare every rank's trainable weights.

    DDP keeps replicas equal by averaging gradients; anything that makes ranks take different
    steps (a rank-local decision to skip an update, an unsynchronised buffer) would leave them
    apart silently, and only rank 0's copy is saved. A mismatch stops the run with a message.
    """

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _, world = rank_and_world()
        if world == 1:
            return
        prints, _ = gather_rows(weights_fingerprint(pl_module).unsqueeze(0))
        if not all(torch.equal(prints[0], other) for other in prints[1:]):
            raise NumericalError(
                f"the {world} data-parallel ranks ended the fit with different weights. Fix: "
                "report it with the config; meanwhile run on one process."
            )
        if trainer.is_global_zero:
            log.info("Weights identical on all %d ranks after the fit.", world)
