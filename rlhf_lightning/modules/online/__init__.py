"""Online RL: one LightningModule, the algorithm composed from four kinds of parts."""

from rlhf_lightning.modules.online.algorithm import RLAlgorithm, ScoreShaping, ValueLoss
from rlhf_lightning.modules.online.core import Experience, OnlineRLCore
from rlhf_lightning.modules.online.dpo import OnlineDPOModule
from rlhf_lightning.modules.online.module import OnlineRLModule

__all__ = [
    "Experience",
    "OnlineDPOModule",
    "OnlineRLCore",
    "OnlineRLModule",
    "RLAlgorithm",
    "ScoreShaping",
    "ValueLoss",
]
