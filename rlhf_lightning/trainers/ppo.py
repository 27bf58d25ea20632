"""PPOTrainer: classic TRL's PPO loop (``generate``, ``step``, ``log_stats``) and ``train()``.

    trainer = PPOTrainer(PPOConfig(batch_size=16), model, ref_model, tokenizer)
    responses = trainer.generate(queries, return_prompt=False)   # token tensors, or strings
    stats = trainer.step(queries, responses, scores)             # one PPO iteration
    trainer.log_stats(stats, {"query": q_texts, "response": r_texts}, scores)
    trainer.save_pretrained("ppo-model")                         # model, value head, tokenizer, card

``step`` runs the same ``OnlineRLCore`` as the ``stage=ppo`` LightningModule (GAE, clipped
token loss, token mean, KL in the reward); only the optimiser loop around it (plain torch
here, Lightning's manual optimisation there) differs. ``train()`` runs ``stage=ppo`` itself on
a prompt dataset with ``reward_funcs``, through the CLI's code path.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from rlhf_lightning.api import StageResult, run_stage
from rlhf_lightning.config import default_run_dir
from rlhf_lightning.errors import ConfigError
from rlhf_lightning.loggers import build_loggers
from rlhf_lightning.models import ModelCard, disable_dropout, export_model, load_tokenizer
from rlhf_lightning.models.hub import push_model_dir
from rlhf_lightning.models.reference import FrozenCopyReference, build_reference
from rlhf_lightning.models.value_head import CausalLMWithValueHead
from rlhf_lightning.modules.online import OnlineRLCore
from rlhf_lightning.modules.online.records import iteration_metrics
from rlhf_lightning.rollout import SamplingConfig, generate_rollout
from rlhf_lightning.rundir import append_samples
from rlhf_lightning.trainers.inputs import copy_trained_weights, reward_overrides
from rlhf_lightning.trainers.ppo_config import PPOConfig
from rlhf_lightning.trainers.ppo_rollout import Tokens, experience_rollout, scores_tensor

# Hugging Face generate() arguments that mean nothing here: responses are padded with the
# tokenizer's pad token and never forced to a minimum length (TRL's samples pass -1).
_IGNORED_GENERATE_ARGS = ("pad_token_id", "min_length", "batch_size")


class PPOTrainer:
    """One PPO iteration per ``step(queries, responses, scores)``, or a whole ``stage=ppo`` run
    with ``train()``.

    Args:
        config: the settings (``PPOConfig``).
        model: a model directory / hub id (a value head is added when none was saved), a causal
            LM, or a ``CausalLMWithValueHead`` (TRL's ``AutoModelForCausalLMWithValueHead``).
        ref_model: the frozen reference (e.g. ``create_reference_model(model)``); None builds
            one (`reference`).
        tokenizer: needed unless `model` is a path.
        dataset: ``train()``'s prompts (a ``prompt`` or ``query`` column), a
            ``datasets.Dataset`` or a path.
        reward_funcs: ``train()``'s reward: functions, reward sources or a reward model
            directory (see ``GRPOTrainer``).
        reference: without `ref_model`: ``auto`` (adapter-off base for LoRA, else a frozen
            copy), ``copy`` or ``adapter_off``.
    """

    def __init__(
        self,
        config: PPOConfig | None = None,
        model: str | Path | nn.Module | None = None,
        ref_model: nn.Module | None = None,
        tokenizer: Any = None,
        dataset: Any = None,
        *,
        reward_funcs: Any = None,
        reference: str = "auto",
    ) -> None:
        if config is not None and not isinstance(config, PPOConfig):
            raise ConfigError(
                f"PPOTrainer: the first argument is the PPOConfig (TRL's order: config, model, "
                f"ref_model, tokenizer), got a {type(config).__name__}. Fix: "
                "PPOTrainer(PPOConfig(...), model, tokenizer=tokenizer)."
            )
        if model is None:
            raise ConfigError("PPOTrainer needs a model. Fix: PPOTrainer(config, model, ...).")
        if isinstance(model, (str, Path)):
            tokenizer = tokenizer or load_tokenizer(str(model))
            model = CausalLMWithValueHead.from_pretrained(str(model))
        elif not isinstance(model, CausalLMWithValueHead):
            model = CausalLMWithValueHead(model)
        if tokenizer is None:
            raise ConfigError(
                "PPOTrainer needs the tokenizer when given a model object. Fix: "
                "PPOTrainer(config, model, ref_model, tokenizer)."
            )
        self.config = config or PPOConfig()
        self.policy = disable_dropout(model)
        self.tokenizer = tokenizer
        self.reference = (
            FrozenCopyReference(ref_model, copy=False)
            if ref_model is not None
            else build_reference(self.policy, mode=reference)
        )
        self.core = OnlineRLCore(
            self.policy, self.reference, self.config.algorithm(), self.config.temperature
        )
        params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=self.config.learning_rate)
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.dataset = dataset
        self.reward_funcs = reward_funcs
        self.output_dir = Path(self.config.output_dir or default_run_dir("ppo")).resolve()
        self.result: StageResult | None = None
        self.last_stats: dict[str, float] = {}
        self._loggers: list[Any] | None = None
        self._logged = 0

    @property
    def model(self) -> CausalLMWithValueHead:
        """The policy being trained, with its value head."""
        return self.policy

    @property
    def dataloader(self) -> DataLoader:
        """Shuffled batches of ``batch_size`` rows of ``dataset``, each a dict of column lists
        (TRL's collator), for a loop over ``generate`` / ``step``."""
        if self.dataset is None or isinstance(self.dataset, (str, Path)):
            raise ConfigError(
                "PPOTrainer.dataloader needs an in-memory dataset. Fix: PPOTrainer(config, "
                "model, tokenizer=tok, dataset=datasets.Dataset.from_dict({...}))."
            )
        return DataLoader(
            self.dataset,
            batch_size=self.config.batch_size or 1,
            shuffle=True,
            drop_last=True,
            generator=torch.Generator().manual_seed(self.config.seed),
            collate_fn=lambda rows: {key: [row[key] for row in rows] for key in rows[0]},
        )

    def generate(
        self,
        query_tensor: str | Sequence[str] | Tensor | Sequence[Tokens],
        return_prompt: bool = True,
        length_sampler: Any = None,
        seed: int | None = None,
        **generation_kwargs: Any,
    ) -> Any:
        """Sample one response per query (one batched ``generate`` with the KV cache).

        Args:
            query_tensor: text (one string or a list: the completions come back as strings), or
                token ids as TRL takes them (one 1-D tensor: a (1, L) tensor back; a list of
                1-D tensors: a list back, each with the query in front unless
                ``return_prompt=False``).
            length_sampler: a callable giving ``max_new_tokens`` (TRL's ``LengthSampler``).
            seed: seed for this call only.
            **generation_kwargs: ``SamplingConfig`` fields (``max_new_tokens``, ``top_k``,
                ``top_p``, ``temperature``, ``do_sample``, ``min_new_tokens``); TRL's
                ``pad_token_id`` / ``min_length`` / ``batch_size`` are accepted and unused.
        """
        sampling = {k: v for k, v in generation_kwargs.items() if k not in _IGNORED_GENERATE_ARGS}
        if length_sampler is not None:
            sampling["max_new_tokens"] = int(length_sampler())
        if "top_k" in sampling:
            sampling["top_k"] = int(sampling["top_k"])
        if "eos_token_id" in sampling:
            stop = sampling.pop("eos_token_id")
            sampling["stop_token_ids"] = stop if isinstance(stop, list) else [stop]
        config = SamplingConfig(**{"temperature": self.config.temperature, **sampling})
        if isinstance(query_tensor, str) or (
            isinstance(query_tensor, (list, tuple))
            and query_tensor
            and isinstance(query_tensor[0], str)
        ):
            texts = [query_tensor] if isinstance(query_tensor, str) else list(query_tensor)
            out = generate_rollout(
                self.policy, self.tokenizer, texts, config=config, generator_seed=seed
            )
            return out.completions[0] if isinstance(query_tensor, str) else out.completions
        single = isinstance(query_tensor, Tensor) and query_tensor.dim() == 1
        rows = [query_tensor] if single else list(query_tensor)
        queries = [torch.as_tensor(q, dtype=torch.long).reshape(-1).cpu() for q in rows]
        out = generate_rollout(
            self.policy,
            self.tokenizer,
            query_ids=[q.tolist() for q in queries],
            config=config,
            generator_seed=seed,
        )
        lengths = out.response_mask.sum(dim=1).tolist()
        responses = [out.response_ids[i, :n].cpu() for i, n in enumerate(lengths)]
        if return_prompt:
            responses = [torch.cat([q, r]) for q, r in zip(queries, responses, strict=True)]
        return responses[0].unsqueeze(0) if single else responses

    def step(
        self,
        queries: Sequence[str] | Sequence[Tokens],
        responses: Sequence[str] | Sequence[Tokens],
        scores: Sequence[float] | Sequence[Tensor] | Tensor,
    ) -> dict[str, float]:
        """Run one PPO iteration on the given experience and return its statistics.

        Args:
            queries: B prompts, as text or token ids (lists or 1-D tensors).
            responses: B responses, as text or token ids, without the query.
            scores: B scalar rewards (floats, 0-d tensors, or one (B,) tensor).

        Returns:
            The iteration's metrics (``rollout/*``, ``train/*``, ``kl_coef``, ``perf/*``).
        """
        start = time.perf_counter()
        size = self.config.batch_size
        if size is not None and len(queries) != size:
            raise ConfigError(
                f"step: {len(queries)} queries, but PPOConfig(batch_size={size}). Fix: pass "
                "batch_size samples per step, or set batch_size=None."
            )
        rollout = experience_rollout(self.tokenizer, list(queries), list(responses))
        rollout = rollout.to(next(self.policy.parameters()).device)
        scores_t = scores_tensor(scores)
        if scores_t.numel() != len(rollout):
            raise ConfigError(f"step: {scores_t.numel()} scores for {len(rollout)} responses.")
        minibatches = self.config.minibatches_for(len(rollout))
        if minibatches != self.core.algorithm.num_minibatches:
            self.core.algorithm = replace(
                self.core.algorithm,
                num_minibatches=minibatches,
                gradient_accumulation_steps=min(
                    self.config.gradient_accumulation_steps, minibatches
                ),
            )
        self.policy.train()
        experience = self.core.make_experience(rollout, scores_t.to(rollout.query_ids.device))
        stats = self.core.optimise(
            experience, Tensor.backward, self._optimizer_step, self.generator
        )
        mean_kl = self.core.update_kl_controller(experience)
        metrics = iteration_metrics(
            rollout, scores_t, stats, mean_kl, self.core.kl_controller.value,
            time.perf_counter() - start,
        )  # fmt: skip
        self.last_stats = {k: float(v) for k, v in metrics.items()}
        return self.last_stats

    def log_stats(
        self,
        stats: dict[str, float],
        batch: dict[str, Sequence[Any]] | None = None,
        rewards: Sequence[Any] | Tensor | None = None,
        columns_to_log: Sequence[str] = ("query", "response"),
    ) -> None:
        """Append `stats` to ``<output_dir>/metrics.csv`` (and the ``log_with`` trackers); with
        `batch` text columns and `rewards`, the samples to ``samples.jsonl``."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self._loggers is None:
            wanted = self.config.log_with
            names = [wanted] if isinstance(wanted, str) else list(wanted or [])
            specs = {name: _TRACKERS[name] for name in names if name in _TRACKERS}
            self._loggers = build_loggers(specs, self.output_dir, run_name=self.output_dir.name)
        self._logged += 1
        for logger in self._loggers:
            logger.log_metrics({k: float(v) for k, v in stats.items()}, step=self._logged)
            logger.save()
        if batch is not None and rewards is not None:
            texts = {c: list(batch[c]) for c in columns_to_log if c in batch}
            values = [float(r) for r in rewards]
            rows = [
                {"step": self._logged, **{c: texts[c][i] for c in texts}, "reward": values[i]}
                for i in range(len(values))
            ]
            append_samples(self.output_dir, rows)

    def save_pretrained(self, save_directory: str | Path) -> Path:
        """Model (only the adapter for LoRA), value head, tokenizer and a model card."""
        card = ModelCard(
            kind="value_head",
            stage="ppo",
            trained_by="PPOTrainer",
            adapter=self.policy.is_peft,
            base_model=getattr(self.policy.config, "_name_or_path", None) or None,
            config={k: v for k, v in vars(self.config).items() if k not in ("overrides",)},
            metrics=self.last_stats,
        )
        return export_model(self.policy, self.tokenizer, save_directory, card=card)

    def push_to_hub(
        self, repo_id: str, *, token: str | None = None, private: bool | None = None,
        endpoint: str | None = None, commit_message: str = "Upload PPO model",
    ) -> str:  # fmt: skip
        """Save to ``<output_dir>/model`` and upload it to the Hub; returns the commit URL."""
        directory = self.save_pretrained(self.output_dir / "model")
        return push_model_dir(
            directory, repo_id, commit_message=commit_message, token=token, private=private,
            endpoint=endpoint,
        )  # fmt: skip

    def train(self) -> StageResult:
        """Run ``stage=ppo`` from the current weights on ``dataset`` with ``reward_funcs``
        (the CLI's code path); the trained weights are loaded back into ``model``."""
        if self.reward_funcs is None:
            raise ConfigError(
                "PPOTrainer.train needs reward_funcs. Fix: PPOTrainer(config, model, "
                "tokenizer=tok, dataset=prompts, reward_funcs=my_reward)."
            )
        start = self.save_pretrained(self.output_dir / "input_model")
        overrides = [*reward_overrides(self.reward_funcs), *self.config.stage_overrides()]
        columns = getattr(self.dataset, "column_names", None) or []
        if "prompt" not in columns and "query" in columns:
            overrides.append("data.prompt_column=query")
        self.result = run_stage(
            "ppo", start, dataset=self.dataset, output_dir=self.output_dir, overrides=overrides
        )
        trained = CausalLMWithValueHead.from_pretrained(self.result.model_dir)
        copy_trained_weights(self.policy, trained)
        return self.result

    def _optimizer_step(self) -> None:
        if self.config.max_grad_norm is not None:
            params = [p for p in self.policy.parameters() if p.requires_grad]
            torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


# log_with names -> logger specs (conf/logger/): metrics.csv is always written.
_TRACKERS = {
    "tensorboard": {"_target_": "lightning.pytorch.loggers.TensorBoardLogger"},
    "wandb": {
        "_target_": "rlhf_lightning.loggers.wandb_logger",
        "project": "rlhf_lightning",
        "mode": "auto",
    },
}
