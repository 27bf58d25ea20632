"""PPO for custom loops: bring queries, responses and scores; get PPO statistics back.

    trainer = PPOTrainer("outputs/sft/<time>/model")
    responses = trainer.generate(queries)                 # or your own generation
    scores = [human_rating(q, r) for q, r in zip(queries, responses)]
    stats = trainer.step(queries, responses, scores)     # one PPO iteration

The same `OnlineRLCore` as the `stage=ppo` LightningModule does the work, with the same
algorithm (GAE, clipped token loss, token mean, KL in the reward): only the optimiser loop
around it (plain torch here, Lightning's manual optimisation there) differs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from rlhf_lightning.functional import (
    KLInReward,
    clipped_token_loss,
    gae_advantages,
    token_mean,
)
from rlhf_lightning.models import disable_dropout, export_model, load_tokenizer
from rlhf_lightning.models.reference import build_reference
from rlhf_lightning.models.value_head import CausalLMWithValueHead
from rlhf_lightning.modules.online import OnlineRLCore, RLAlgorithm, ScoreShaping, ValueLoss
from rlhf_lightning.modules.online.records import iteration_metrics
from rlhf_lightning.rollout import (
    RolloutBatch,
    SamplingConfig,
    encode_prompts,
    generate_rollout,
    left_pad,
)

Tokens = Sequence[int] | Tensor


@dataclass
class PPOConfig:
    """PPO hyper-parameters of the custom-loop API (classic TRL's names where they match).

    Attributes:
        ppo_epochs: passes over each batch.
        num_minibatches: minibatches per pass (the batch size must divide by it).
        gradient_accumulation_steps: minibatches per optimizer step; divides num_minibatches.
        clip_eps: policy ratio clip range.
        value_clip: value clip range around the rollout-time values.
        vf_coef: weight of the value loss.
        gamma, lam: GAE discount and trace decay.
        kl_estimator: per-token KL in the reward: k1, abs, mse, k3, or full.
        kl_coef: initial (adaptive) or fixed KL coefficient.
        adaptive_kl: Ziegler et al.'s controller toward `kl_target` over `kl_horizon`.
        whiten_rewards: whiten per-token rewards before GAE (keeps their mean).
        max_grad_norm: gradient clipping; None disables.
        ratio_threshold: skip a minibatch whose mean ratio exceeds this.
        target_kl: stop the epochs early when the policy KL exceeds 1.5 x this; None never.
        score_scale / score_norm / score_clip: running scaling, normalisation, clipping.
        missing_stop_penalty: subtracted from the score of responses that never stopped.
        temperature: sampling temperature; log-probs are computed at the same temperature.
    """

    ppo_epochs: int = 4
    num_minibatches: int = 4
    gradient_accumulation_steps: int = 1
    clip_eps: float = 0.2
    value_clip: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    kl_estimator: Literal["k1", "abs", "mse", "k3", "full"] = "k1"
    kl_coef: float = 0.05
    adaptive_kl: bool = False
    kl_target: float = 6.0
    kl_horizon: int = 10000
    whiten_rewards: bool = False
    max_grad_norm: float | None = 1.0
    ratio_threshold: float = 10.0
    target_kl: float | None = None
    score_scale: bool = False
    score_norm: bool = False
    score_clip: float | None = None
    missing_stop_penalty: float | None = None
    temperature: float = 1.0

    def algorithm(self) -> RLAlgorithm:
        """The same composition as ``stage=ppo``: GAE, clipped token loss, token mean, KL in
        the reward, a value loss."""
        return RLAlgorithm(
            advantage=partial(
                gae_advantages, gamma=self.gamma, lam=self.lam, whiten_rewards=self.whiten_rewards
            ),
            policy_loss=partial(clipped_token_loss, clip_low=self.clip_eps),
            aggregation=token_mean,
            kl=KLInReward(self.kl_estimator),
            kl_coef=self.kl_coef,
            adaptive_kl=self.adaptive_kl,
            kl_target=self.kl_target,
            kl_horizon=self.kl_horizon,
            epochs=self.ppo_epochs,
            num_minibatches=self.num_minibatches,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            value_loss=ValueLoss(self.vf_coef, self.value_clip),
            shaping=ScoreShaping(
                self.missing_stop_penalty, self.score_scale, self.score_norm, self.score_clip
            ),
            max_grad_norm=self.max_grad_norm,
            ratio_threshold=self.ratio_threshold,
            target_kl=self.target_kl,
            log_entropy=True,
        )


class PPOTrainer:
    """One PPO iteration per `step(queries, responses, scores)` call.

    Args:
        model: a model directory / hub id (a value head is added when none was saved), a causal
            LM, or a `CausalLMWithValueHead`.
        tokenizer: needed unless `model` is a path.
        config: PPO hyper-parameters (`PPOConfig`).
        learning_rate: Adam learning rate (classic TRL: 1.41e-5).
        reference: `auto` (adapter-off base for LoRA models, else a frozen copy), `copy`,
            `adapter_off`.
        seed: seeds minibatch shuffling.
    """

    def __init__(
        self,
        model: str | Path | nn.Module,
        tokenizer: PreTrainedTokenizerBase | None = None,
        config: PPOConfig | None = None,
        learning_rate: float = 1.41e-5,
        reference: str = "auto",
        seed: int = 0,
    ) -> None:
        if isinstance(model, (str, Path)):
            tokenizer = tokenizer or load_tokenizer(str(model))
            model = CausalLMWithValueHead.from_pretrained(str(model))
        elif not isinstance(model, CausalLMWithValueHead):
            model = CausalLMWithValueHead(model)
        if tokenizer is None:
            raise ValueError("PPOTrainer needs the tokenizer when given a model object.")
        self.policy = disable_dropout(model)
        self.tokenizer = tokenizer
        self.config = config or PPOConfig()
        self.reference = build_reference(self.policy, mode=reference)
        self.core = OnlineRLCore(
            self.policy, self.reference, self.config.algorithm(), self.config.temperature
        )
        params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=learning_rate)
        self.generator = torch.Generator().manual_seed(seed)

    def generate(self, queries: list[str], seed: int | None = None, **sampling) -> list[str]:
        """Sample one response per query (batched, KV cache); `sampling` as in `SamplingConfig`."""
        config = SamplingConfig(temperature=self.config.temperature, **sampling)
        rollout = generate_rollout(
            self.policy, self.tokenizer, prompts=queries, config=config, generator_seed=seed
        )
        return rollout.completions

    def step(
        self,
        queries: Sequence[str] | Sequence[Tokens],
        responses: Sequence[str] | Sequence[Tokens],
        scores: Sequence[float] | Tensor,
    ) -> dict[str, float]:
        """Run one PPO iteration on the given experience and return its statistics.

        Args:
            queries: B prompts, as text or token ids.
            responses: B responses, as text or token ids (without the query).
            scores: B scalar rewards.

        Returns:
            The iteration's metrics (`rollout/*`, `train/*`, `kl_coef`, `perf/*`) as floats.
        """
        start = time.perf_counter()
        rollout = self._rollout(list(queries), list(responses))
        scores_t = torch.as_tensor(scores, dtype=torch.float32).reshape(-1)
        if scores_t.numel() != len(rollout):
            raise ValueError(f"step: {scores_t.numel()} scores for {len(rollout)} responses.")
        self.policy.train()
        experience = self.core.make_experience(rollout, scores_t)
        stats = self.core.optimise(
            experience, Tensor.backward, self._optimizer_step, self.generator
        )
        mean_kl = self.core.update_kl_controller(experience)
        kl_coef = self.core.kl_controller.value
        metrics = iteration_metrics(
            rollout, scores_t, stats, mean_kl, kl_coef, time.perf_counter() - start
        )
        return {k: float(v) for k, v in metrics.items()}

    def save_pretrained(self, save_directory: str | Path, merge_lora: bool = False) -> Path:
        """Save the policy (the LM, or its LoRA adapter), its value head and the tokenizer.

        The directory is complete or untouched (written beside it and renamed into place);
        ``PPOTrainer(save_directory)`` continues from it, and transformers (peft for an
        adapter) loads the LM from it.

        Args:
            save_directory: created, or replaced as a whole.
            merge_lora: also write ``merged/`` with a LoRA adapter folded into the base
                (merging changes the policy in place: save last).

        Returns:
            The directory.
        """
        return export_model(self.policy, self.tokenizer, save_directory, merge_lora=merge_lora)

    def _optimizer_step(self) -> None:
        if self.config.max_grad_norm is not None:
            params = [p for p in self.policy.parameters() if p.requires_grad]
            torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _rollout(self, queries: list, responses: list) -> RolloutBatch:
        """Queries left-padded, responses right-padded, as a sampled rollout would be."""
        if len(queries) != len(responses):
            raise ValueError(f"step: {len(queries)} queries but {len(responses)} responses.")
        tok = self.tokenizer
        pad = tok.pad_token_id
        if queries and isinstance(queries[0], str):
            query_rows = encode_prompts(tok, queries)
        else:
            query_rows = [list(map(int, q)) for q in queries]
        query_ids, query_mask = left_pad(query_rows, pad)
        response_rows = [
            tok(r, add_special_tokens=False).input_ids if isinstance(r, str) else list(map(int, r))
            for r in responses
        ]
        width = max(1, max(len(r) for r in response_rows))
        response_ids = torch.full((len(response_rows), width), pad, dtype=torch.long)
        response_mask = torch.zeros_like(response_ids, dtype=torch.bool)
        for i, row in enumerate(response_rows):
            response_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            response_mask[i, : len(row)] = True
        contains_stop = torch.tensor([bool(r) and r[-1] == tok.eos_token_id for r in response_rows])
        return RolloutBatch(
            query_ids=query_ids,
            query_mask=query_mask,
            response_ids=response_ids,
            response_mask=response_mask,
            contains_stop=contains_stop,
            prompts=[
                q if isinstance(q, str) else tok.decode(q, skip_special_tokens=True)
                for q in queries
            ],
            completions=[
                r if isinstance(r, str) else tok.decode(r, skip_special_tokens=True)
                for r in responses
            ],
        )
