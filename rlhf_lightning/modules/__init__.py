"""One LightningModule per stage; the online-RL algorithms share one, composed from parts."""

from rlhf_lightning.modules.dpo import DPOModule
from rlhf_lightning.modules.eval_stage import EvalModule
from rlhf_lightning.modules.evaluation import Evaluator
from rlhf_lightning.modules.kto import KTOModule
from rlhf_lightning.modules.online import OnlineDPOModule, OnlineRLModule, RLAlgorithm
from rlhf_lightning.modules.reference_free import ORPOModule, SimPOModule
from rlhf_lightning.modules.reward import Calibration, RewardModule
from rlhf_lightning.modules.sft import SFTModule

__all__ = [
    "Calibration",
    "DPOModule",
    "EvalModule",
    "Evaluator",
    "KTOModule",
    "ORPOModule",
    "OnlineDPOModule",
    "OnlineRLModule",
    "RLAlgorithm",
    "RewardModule",
    "SFTModule",
    "SimPOModule",
]
