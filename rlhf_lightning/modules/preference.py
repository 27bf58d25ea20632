"""What the offline preference stages share: completion log-probs, the reference, the loop.

DPO, KTO, ORPO and SimPO are each a loss over the sequence log-probs of completions. They score
them here, through the one scoring path (``rollout.score_tokens``), take the reference's the
same way (live, or precomputed before training), and log one ``train/<name>`` and one
``val/<name>`` per statistic their loss returns. A stage implements ``compute_loss``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.data import PreferenceDataModule
from rlhf_lightning.errors import ConfigError
from rlhf_lightning.functional import DPOLossOutput, SimPOLossOutput, sequence_logprobs
from rlhf_lightning.models import build_reference, disable_dropout
from rlhf_lightning.models.reference import Reference, ReferenceMode, initial_reference
from rlhf_lightning.modules.offline import OfflineStage
from rlhf_lightning.modules.optim import OptimizerFactory, SchedulerFactory
from rlhf_lightning.rollout import score_tokens

log = logging.getLogger(__name__)

PAIR_PREFIXES = ("chosen_", "rejected_")
# What the pairwise losses with implicit rewards (DPO, online DPO, SimPO) log.
PAIR_STATISTICS = ("accuracy", "margin", "rewards_chosen", "rewards_rejected")


def pair_statistics(out: DPOLossOutput | SimPOLossOutput) -> dict[str, Tensor]:
    """``accuracy``, ``margin`` and the mean implicit reward of each side."""
    return {
        "accuracy": out.accuracy,
        "margin": out.margin,
        "rewards_chosen": out.chosen_rewards.mean(),
        "rewards_rejected": out.rejected_rewards.mean(),
    }


def completion_logps(
    model: nn.Module | Reference,
    input_ids: Tensor,
    attention_mask: Tensor,
    target_mask: Tensor,
    start: int = 1,
    length_normalize: bool = False,
) -> Tensor:
    """Each row's summed (or averaged) log-prob of its target tokens, from one forward.

    Args:
        model: the policy or a reference (``rollout.score_tokens``' call convention).
        input_ids: token ids. Shape (B, T).
        attention_mask: 1 at real tokens. Shape (B, T).
        target_mask: True at the scored tokens to count, columns ``start .. T-1``.
            Shape (B, T - start).
        start: the first scored column: 1 for right-padded sequences (every token after the
            first), the query width for a left-padded rollout.
        length_normalize: average over the target tokens instead of summing.

    Returns:
        Shape (B,), fp32.
    """
    logps = score_tokens(model, input_ids, attention_mask, start=start).logprobs  # (B, T-start)
    sums = sequence_logprobs(logps, target_mask)
    return sums / target_mask.sum(1).clamp_min(1) if length_normalize else sums


def side_logps(
    model: nn.Module | Reference,
    batch: dict[str, Tensor],
    prefixes: Sequence[str],
    length_normalize: bool = False,
) -> tuple[Tensor, ...]:
    """One (B,) log-prob per sequence prefix of `batch`, from one forward over all of them.

    Args:
        model: the policy or a reference.
        batch: ``{prefix}input_ids`` / ``attention_mask`` / ``completion_mask`` per prefix, all
            (B, T) with one T (``data.pairs.collate_sides``).
        prefixes: e.g. ``chosen_``, ``rejected_`` (pairs) or ``""``, ``kl_`` (KTO).
        length_normalize: average over completion tokens instead of summing (IPO, ORPO, SimPO).
    """
    ids = torch.cat([batch[f"{prefix}input_ids"] for prefix in prefixes])
    mask = torch.cat([batch[f"{prefix}attention_mask"] for prefix in prefixes])
    targets = torch.cat([batch[f"{prefix}completion_mask"] for prefix in prefixes])
    sums = completion_logps(model, ids, mask, targets[:, 1:].bool(), 1, length_normalize)
    return sums.chunk(len(prefixes))


def pair_logps(
    model: nn.Module | Reference, batch: dict[str, Tensor], length_normalize: bool = False
) -> tuple[Tensor, Tensor]:
    """(chosen, rejected) sequence log-probs, each (B,), from one forward over 2B rows.

    Args:
        model: the policy or a reference (``rollout.score_tokens``' call convention).
        batch: a ``collate_pairs`` batch (each side (B, T), one T for both sides).
        length_normalize: average over completion tokens instead of summing (IPO).
    """
    chosen, rejected = side_logps(model, batch, PAIR_PREFIXES, length_normalize)
    return chosen, rejected


@torch.no_grad()
def score_batches(
    scorer: Callable[[dict[str, Tensor]], tuple[Tensor, ...]],
    batches: Iterable[dict[str, Tensor]],
    device: torch.device | str = "cpu",
) -> tuple[Tensor, ...]:
    """`scorer(batch)`'s columns over all `batches`, concatenated: each (N,), fp32 on CPU."""
    columns: list[list[Tensor]] = []
    for batch in batches:
        scored = scorer({k: v.to(device) for k, v in batch.items()})
        columns = columns or [[] for _ in scored]
        for column, values in zip(columns, scored, strict=True):
            column.append(values.float().cpu())
    return tuple(torch.cat(column) for column in columns)


class PreferenceModule(OfflineStage):
    """An offline preference stage: ``compute_loss(batch) -> (loss, statistics)``, trained with
    automatic optimisation; every statistic is logged as ``train/<name>`` and, averaged over
    the validation rows, ``val/<name>``.

    Args:
        model: the causal LM being trained (optionally LoRA-wrapped); dropout is turned off so
            that the policy's and the reference's log-probs are comparable.
        tokenizer: its tokenizer (for the export).
        optimizer / scheduler: factories (Hydra `_partial_`).
        max_consecutive_bad_steps: skipped non-finite updates in a row before the run stops.
    """

    model_head = "causal_lm"
    datamodule_class: type[PreferenceDataModule] = PreferenceDataModule
    # The statistics `compute_loss` returns (besides the loss), in logging order.
    statistics: tuple[str, ...] = ()

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase | None = None,
        optimizer: OptimizerFactory = torch.optim.AdamW,
        scheduler: SchedulerFactory | None = None,
        max_consecutive_bad_steps: int = 10,
    ) -> None:
        super().__init__(tokenizer, optimizer, scheduler, max_consecutive_bad_steps)
        self.policy = disable_dropout(model)
        self.val_metrics = nn.ModuleDict(
            {name: MeanMetric() for name in ("loss", *self.statistics)}
        )

    def compute_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss of `batch` and its detached scalar statistics (names in `statistics`)."""
        raise NotImplementedError

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, stats = self.compute_loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        for name, value in stats.items():
            self.log(f"train/{name}", value)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        loss, stats = self.compute_loss(batch)
        rows = next(iter(batch.values())).shape[0]
        for name, value in {"loss": loss, **stats}.items():
            self.val_metrics[name].update(value, weight=rows)

    def on_validation_epoch_end(self) -> None:
        for name, metric in self.val_metrics.items():
            if metric.update_count:
                self.log(f"val/{name}", metric.compute(), prog_bar=name == "accuracy")
            metric.reset()

    @property
    def trained_model(self) -> nn.Module:
        return self.policy


class ReferenceScoring:
    """Mixin for stages against a frozen reference (DPO, KTO): its log-probs live, or stored
    as dataset columns before training (``precompute_reference``: the untrained policy, or its
    adapter-off base with LoRA, scores every example once; no reference is held after).

    The stage calls ``init_reference`` in its constructor and implements ``score_reference``;
    the columns are the datamodule's ``reference_logp_keys``, in ``score_reference`` order.
    """

    policy: nn.Module
    trainer: L.Trainer
    reference: Reference | None

    def init_reference(
        self, model: nn.Module, reference: Reference | ReferenceMode | None, precompute: bool
    ) -> None:
        self.reference_mode: ReferenceMode = reference if isinstance(reference, str) else "auto"
        self.precompute_reference = precompute
        if isinstance(reference, str):
            reference = None if precompute else build_reference(model, reference)
        self.reference = reference

    def score_reference(
        self, reference: Reference | nn.Module, batch: dict[str, Tensor]
    ) -> tuple[Tensor, ...]:
        """The reference's log-probs of `batch`, one (B,) tensor per stored column."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        if not self.precompute_reference or datamodule is None:
            return
        keys = datamodule.reference_logp_keys
        train = getattr(datamodule, "train_dataset", None)
        if train is not None and keys[0] in train.column_names:
            return  # already scored (validate_at_start ran first)
        # Before training the policy is its own reference: no copy is made at all.
        device = self.trainer.strategy.root_device
        self.policy.to(device)
        reference = initial_reference(self.policy, mode=self.reference_mode)
        datamodule.add_reference_logps(
            lambda loader: score_batches(
                lambda b: self.score_reference(reference, b), loader, device
            )
        )
        self.policy.to("cpu")
        log.info(
            "Precomputed reference log-probs for %d training and %d validation examples; "
            "no reference model is held during training.",
            datamodule.num_train_examples,
            datamodule.num_val_examples,
        )

    def reference_logps(self, batch: dict[str, Tensor], keys: Sequence[str]) -> tuple[Tensor, ...]:
        """The batch's stored reference columns `keys`, else the live reference's scores."""
        if all(key in batch for key in keys):
            return tuple(batch[key] for key in keys)
        if self.reference is None:
            raise ConfigError(
                f"{type(self).__name__} has no reference model and the batch carries no "
                "precomputed reference log-probs. Fix: set stage.precompute_reference=true (the "
                "stage adds them) or pass a reference."
            )
        with torch.no_grad():
            return self.score_reference(self.reference, batch)
