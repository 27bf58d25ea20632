"""A sequence-classification reward model as a reward source.

Text layout (:func:`encode_for_reward`): the prompt and the completion are re-tokenised with
the reward model's OWN tokenizer, so any reward model works with any policy. Its own special
tokens are kept (BERT ``[CLS] ... [SEP]``); where it adds none, BOS goes first and EOS last,
i.e. ``[BOS] prompt completion EOS`` as in the SFT and preference data (Llama: ``<s> ... </s>``;
GPT-2 style: ``<|endoftext|> ... <|endoftext|>``). The rule for causal-LM tokenizers is: append
EOS unless the tokenizer appends something itself. The EOS matters: a decoder reward model is
read at its last real token, and with EOS there that token has seen the whole completion and
"the text ends here". A text longer than ``max_length`` loses tokens from its START (the
prompt's beginning), so the end of the completion, where the score is read, is always kept.

The score is ``logits[:, 0]`` of an ``AutoModelForSequenceClassification`` with
``num_labels=1``. Decoder classifiers (GPT-2, Llama, ...) pool at the last token that is not the
pad token; this framework keeps pad != EOS, so that is the EOS. Batches are right-padded.

Calibration: when ``model.config.reward_calibration = {"mean": m, "std": s}`` (written by the
reward stage after training), scores are returned as ``(score - m) / s``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from peft import AutoPeftModelForSequenceClassification
from torch import Tensor, nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from rlhf_lightning.errors import RewardError
from rlhf_lightning.models.dropout import disable_dropout
from rlhf_lightning.rewards.base import check_inputs, check_scores
from rlhf_lightning.rewards.encoding import encode_for_reward, left_align, right_pad

log = logging.getLogger(__name__)

# Where a LoRA reward-model export keeps its calibration (it has no model config of its own).
CALIBRATION_FILE = "reward_calibration.json"
ADAPTER_CONFIG = "adapter_config.json"

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


class ModelReward:
    """Scores completions with a reward model (``AutoModelForSequenceClassification``, 1 label).

    The model is put in eval mode with every dropout probability set to 0, and scored under
    ``torch.no_grad()`` in right-padded batches sorted by length (results do not depend on the
    batching: scores equal those of one text at a time).

    Args:
        model: The reward model; ``model.config.num_labels`` must be 1.
        tokenizer: The reward model's own tokenizer, with a pad token.
        batch_size: Texts per forward pass.
        max_length: Tokens per text, special tokens included; longer texts lose their start.
            Capped at the model's position limit when the config has one.
        device: Move the model there (e.g. ``"cuda"``); None keeps it where it is.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        *,
        batch_size: int = 32,
        max_length: int = 512,
        device: str | torch.device | None = None,
    ) -> None:
        config = model.config
        self.name = getattr(config, "_name_or_path", "") or type(model).__name__
        if getattr(config, "num_labels", None) != 1:
            raise RewardError(
                f"{self.source}: the model has num_labels={getattr(config, 'num_labels', None)}, "
                "so it is not a scalar reward model. Fix: use a model trained by stage=reward "
                "(AutoModelForSequenceClassification with num_labels=1)."
            )
        if batch_size < 1 or max_length < 2:
            raise RewardError(
                f"{self.source}: batch_size={batch_size}, max_length={max_length}. "
                "Fix: batch_size >= 1 and max_length >= 2."
            )
        self.pad_token_id = _pad_token_id(model, tokenizer, self.source)
        if device is not None:
            model.to(device)
        model.eval()
        disable_dropout(model)
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = min(max_length, _position_limit(config) or max_length)
        self.calibration = _calibration(config, self.source)
        self.vocab_size = model.get_input_embeddings().num_embeddings

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        *,
        tokenizer: str | None = None,
        dtype: str | None = None,
        trust_remote_code: bool = False,
        **kwargs: Any,
    ) -> ModelReward:
        """Load a reward model and its tokenizer saved by ``save_pretrained`` (or a cached hub id).

        Args:
            path: Local directory (e.g. ``<reward run>/model``) or hub id.
            tokenizer: Tokenizer directory or hub id when it is not beside the model.
            dtype: ``float32`` (default), ``bfloat16`` or ``float16``.
            trust_remote_code: Run model code shipped with the checkpoint.
            **kwargs: ``batch_size``, ``max_length``, ``device`` (see the class).

        Raises:
            RewardError: If the directory is missing, cannot be loaded, or holds no trained
                reward head (e.g. a causal LM checkpoint).
        """
        _check_local_dir(path)
        if dtype is not None and dtype not in _DTYPES:
            raise RewardError(
                f"reward model {path}: dtype={dtype} is unknown. Fix: one of {sorted(_DTYPES)}."
            )
        try:
            model, info = _load_classifier(path, _DTYPES[dtype or "float32"], trust_remote_code)
            tok = AutoTokenizer.from_pretrained(
                tokenizer or path, trust_remote_code=trust_remote_code
            )
        except (OSError, ValueError) as err:
            raise RewardError(
                f"reward model {path}: cannot load it ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}). Fix: point reward.path at the "
                "directory a reward run exported (<run_dir>/model), with config.json, weights and "
                "tokenizer files, or at a hub id cached on this machine."
            ) from err
        if (Path(path) / ADAPTER_CONFIG).is_file():
            # A LoRA export saves no model config: the base's may name another pad token than
            # the tokenizer the reward model was trained with, which is saved beside it.
            model.config.pad_token_id = tok.pad_token_id
        calibration = Path(path) / CALIBRATION_FILE  # a LoRA export keeps it beside the adapter
        if calibration.is_file() and getattr(model.config, "reward_calibration", None) is None:
            model.config.reward_calibration = json.loads(calibration.read_text())
        missing = sorted(info.get("missing_keys", ()))
        if missing:
            raise RewardError(
                f"reward model {path}: the checkpoint lacks {missing[:4]}, so the reward head would "
                "be random (is it a causal LM or a bare encoder?). Fix: train a reward model with "
                "stage=reward and point reward.path at its <run_dir>/model."
            )
        return cls(model, tok, **kwargs)

    @property
    def source(self) -> str:
        """How error messages name this source."""
        return f"reward model '{self.name}'"

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (inputs are moved there)."""
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> ModelReward:
        """Move the model to ``device``; returns self."""
        self.model.to(device)
        return self

    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> Tensor:
        """Score ``prompt + completion`` texts (extra columns are ignored).

        Returns:
            Calibrated scores, float32 on CPU. Shape (B,).
        """
        batch = check_inputs(prompts, completions, columns, self.source)
        rows = encode_for_reward(self.tokenizer, prompts, completions, self.max_length)
        scores = torch.zeros(batch)
        # Longest first: similar lengths share a batch, so little padding is computed.
        order = sorted(range(batch), key=lambda i: len(rows[i]), reverse=True)
        for start in range(0, batch, self.batch_size):
            chunk = order[start : start + self.batch_size]
            input_ids, attention_mask = right_pad([rows[i] for i in chunk], self.pad_token_id)
            scores[chunk] = self._forward(input_ids, attention_mask)
        return check_scores(scores, batch, self.source, prompts=prompts)

    def score_tokens(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Fast path: score token ids already in the reward model's vocabulary.

        For a caller whose policy shares the reward model's tokenizer: no decoding and no
        re-tokenising. Rows may be padded on either side (or both, as with left-padded queries
        followed by right-padded responses); real tokens are moved to the left first. The ids
        are scored as given (no truncation, no tokens added), so they should follow the layout of
        :func:`encode_for_reward`: BOS first (where the tokenizer has one) and EOS last.

        Args:
            input_ids: Token ids. Shape (B, T).
            attention_mask: True (or 1) = real token. Shape (B, T).

        Returns:
            Calibrated scores, float32 on CPU. Shape (B,).
        """
        if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
            raise RewardError(
                f"{self.source}: score_tokens got input_ids {tuple(input_ids.shape)} and "
                f"attention_mask {tuple(attention_mask.shape)}. Fix: pass two (B, T) tensors."
            )
        mask = attention_mask.bool()
        empty = (~mask.any(dim=1)).nonzero()
        if len(empty):
            raise RewardError(
                f"{self.source}: row {int(empty[0, 0])} of attention_mask has no real token. "
                "Fix: drop empty sequences before scoring."
            )
        input_ids, mask = left_align(input_ids, mask, self.pad_token_id)
        scores = []
        for start in range(0, len(input_ids), self.batch_size):
            ids = input_ids[start : start + self.batch_size]
            rows_mask = mask[start : start + self.batch_size]
            width = int(rows_mask.sum(dim=1).max())
            scores.append(self._forward(ids[:, :width], rows_mask[:, :width]))
        return check_scores(torch.cat(scores), len(input_ids), self.source)

    @torch.no_grad()
    def _forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Calibrated scores of right-padded rows. Shapes: (b, t) in, (b,) float32 CPU out."""
        top = int(input_ids.max())
        if top >= self.vocab_size or int(input_ids.min()) < 0:
            raise RewardError(
                f"{self.source}: token id {top} is outside the model's vocabulary of "
                f"{self.vocab_size}. Fix: score_tokens needs ids from the reward model's own "
                "tokenizer; otherwise call the source with text."
            )
        if self.model.training:  # e.g. a parent LightningModule switched to train mode
            self.model.eval()
        device = self.device
        logits = self.model(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device, torch.long)
        ).logits  # (b, 1)
        scores = logits[:, 0].float().cpu()
        if self.calibration is not None:
            mean, std = self.calibration
            scores = (scores - mean) / std
        return scores

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, batch_size={self.batch_size}, "
            f"max_length={self.max_length}, calibration={self.calibration})"
        )


def _pad_token_id(model: nn.Module, tokenizer: PreTrainedTokenizerBase, source: str) -> int:
    """The pad id shared by tokenizer and model config (set on the config when it has none)."""
    pad = tokenizer.pad_token_id
    if pad is None:
        raise RewardError(
            f"{source}: its tokenizer has no pad token, so batches cannot be padded. Fix: save "
            "the reward model with a tokenizer that has a pad token distinct from EOS (models "
            "trained by stage=reward have one)."
        )
    config = model.config
    if config.pad_token_id is None:
        config.pad_token_id = pad
    elif config.pad_token_id != pad:
        raise RewardError(
            f"{source}: model.config.pad_token_id={config.pad_token_id} but the tokenizer pads "
            f"with {pad}, so the score would be read at the wrong token. Fix: load the tokenizer "
            "saved with this reward model."
        )
    if pad == tokenizer.eos_token_id:
        log.warning(
            "%s: pad == EOS, so the score is read at the token before the final EOS", source
        )
    return int(pad)


def _position_limit(config: Any) -> int | None:
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _calibration(config: Any, source: str) -> tuple[float, float] | None:
    calibration = getattr(config, "reward_calibration", None)
    if calibration is None:
        return None
    try:
        mean, std = float(calibration["mean"]), float(calibration["std"])
    except (KeyError, TypeError, ValueError) as err:
        raise RewardError(
            f"{source}: config.reward_calibration={calibration!r} is malformed. Fix: "
            '{"mean": <float>, "std": <float > 0>}, or remove it.'
        ) from err
    if not (std > 0 and abs(mean) < float("inf") and std < float("inf")):
        raise RewardError(
            f"{source}: config.reward_calibration has mean={mean}, std={std}. Fix: a finite "
            "mean and a finite std > 0."
        )
    return mean, std


def _check_local_dir(path: str) -> None:
    looks_local = str(path).startswith((".", "/", "~")) or Path(path).exists()
    if not looks_local:
        return
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise RewardError(
            f"reward model {path}: no such directory. Fix: set reward.path to the directory a "
            "reward run exported (<run_dir>/model)."
        )
    if not any((directory / name).is_file() for name in ("config.json", ADAPTER_CONFIG)):
        raise RewardError(
            f"reward model {path}: the directory has no config.json (nor adapter_config.json). "
            "Fix: point reward.path at a directory written by save_pretrained (<run_dir>/model "
            "of a reward run)."
        )


def _load_classifier(
    path: str, dtype: torch.dtype, trust_remote_code: bool
) -> tuple[nn.Module, dict[str, Any]]:
    """A sequence classifier and its loading info; a LoRA export is merged into its base (the
    adapter's score head included), so scoring runs one plain model."""
    if (Path(path) / ADAPTER_CONFIG).is_file():
        adapted = AutoPeftModelForSequenceClassification.from_pretrained(
            path, num_labels=1, dtype=dtype, trust_remote_code=trust_remote_code
        )
        return adapted.merge_and_unload(), {"missing_keys": []}
    return AutoModelForSequenceClassification.from_pretrained(
        path, dtype=dtype, trust_remote_code=trust_remote_code, output_loading_info=True
    )
