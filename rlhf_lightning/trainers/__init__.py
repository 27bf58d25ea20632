"""Trainer classes with TRL's shape, over the same stages the CLI runs.

    from rlhf_lightning.trainers import GRPOConfig, GRPOTrainer

    trainer = GRPOTrainer(
        model="outputs/sft/<time>/model",
        reward_funcs=reward_len,           # any function (completions, **kwargs) -> floats
        args=GRPOConfig(max_steps=20, learning_rate=1e-5),
        train_dataset=dataset,             # a datasets.Dataset with a `prompt` column
    )
    trainer.train()                        # the run directory of `stage=grpo ...`
    trainer.save_model("grpo-model")       # weights, tokenizer, model card
    trainer.push_to_hub("me/grpo-model")

Each trainer composes the stage's config from its arguments (one CLI override per field set)
and runs it exactly as ``python -m rlhf_lightning stage=<stage> ...`` would; its model card
shows that command. ``docs/migrating-from-trl.md`` puts TRL's snippets beside these.
"""

from rlhf_lightning.trainers.compat import (
    AutoModelForCausalLMWithValueHead,
    create_reference_model,
    respond_to_batch,
)
from rlhf_lightning.trainers.configs import DPOConfig, RewardConfig, SFTConfig, TrainingConfig
from rlhf_lightning.trainers.online_configs import GRPOConfig, OnlineConfig, RLOOConfig
from rlhf_lightning.trainers.ppo import PPOTrainer
from rlhf_lightning.trainers.ppo_config import PPOConfig
from rlhf_lightning.trainers.stages import (
    DPOTrainer,
    GRPOTrainer,
    RewardTrainer,
    RLOOTrainer,
    SFTTrainer,
)

__all__ = [
    "AutoModelForCausalLMWithValueHead",
    "DPOConfig",
    "DPOTrainer",
    "GRPOConfig",
    "GRPOTrainer",
    "OnlineConfig",
    "PPOConfig",
    "PPOTrainer",
    "RLOOConfig",
    "RLOOTrainer",
    "RewardConfig",
    "RewardTrainer",
    "SFTConfig",
    "SFTTrainer",
    "TrainingConfig",
    "create_reference_model",
    "respond_to_batch",
]
