"""Rollouts for the online-RL stages: sampling, truncation at the stop token, scoring.

``generate_rollout`` samples one response per query into a :class:`RolloutBatch`; a
:class:`RolloutBackend` (``rollout=hf`` by default) is what the stages call for it.
:func:`score_tokens` is the one scoring path (policy, reference, value head, DPO pairs).
"""

from rlhf_lightning.rollout.backends import HFBackend, RolloutBackend
from rlhf_lightning.rollout.batch import RolloutBatch
from rlhf_lightning.rollout.generation import generate_rollout, respond_to_batch, sample_completions
from rlhf_lightning.rollout.queries import encode_prompts, left_pad
from rlhf_lightning.rollout.sampling import OffPolicySamplingWarning, SamplingConfig
from rlhf_lightning.rollout.scoring import (
    TokenScores,
    critic_values,
    packing_error,
    score_tokens,
)
from rlhf_lightning.rollout.stop import TruncatedResponses, truncate_at_stop

__all__ = [
    "HFBackend",
    "OffPolicySamplingWarning",
    "RolloutBackend",
    "RolloutBatch",
    "SamplingConfig",
    "TokenScores",
    "TruncatedResponses",
    "critic_values",
    "encode_prompts",
    "generate_rollout",
    "left_pad",
    "packing_error",
    "respond_to_batch",
    "sample_completions",
    "score_tokens",
    "truncate_at_stop",
]
