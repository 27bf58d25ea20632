"""PPO for custom loops: bring queries, responses and scores; get PPO statistics back.

    trainer = PPOTrainer(PPOConfig(), "outputs/sft/<time>/model")
    responses = trainer.generate(queries)                 # or your own generation
    scores = [human_rating(q, r) for q, r in zip(queries, responses)]
    stats = trainer.step(queries, responses, scores)     # one PPO iteration

The classes live in ``rlhf_lightning.trainers`` beside the other trainer classes; this module
keeps the import path of the custom-loop API.
"""

from rlhf_lightning.trainers.ppo import PPOTrainer
from rlhf_lightning.trainers.ppo_config import PPOConfig

__all__ = ["PPOConfig", "PPOTrainer"]
