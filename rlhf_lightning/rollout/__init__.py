"""Rollouts for PPO, GRPO and RLOO: batched sampling, truncation at the stop token, scoring.

``generate_rollout`` samples one response per query into a :class:`RolloutBatch`;
``response_logprobs`` (and ``response_logprobs_and_values``) score it with the policy, the
reference model or a value-head model, at the sampling temperature.
"""

from rlhf_lightning.rollout.batch import RolloutBatch
from rlhf_lightning.rollout.generation import (
    OffPolicySamplingWarning,
    SamplingConfig,
    generate_rollout,
    respond_to_batch,
    sample_completions,
)
from rlhf_lightning.rollout.logprobs import (
    ResponseScores,
    position_ids_from_mask,
    response_logprobs,
    response_logprobs_and_values,
    response_values,
)
from rlhf_lightning.rollout.queries import encode_prompts, left_pad
from rlhf_lightning.rollout.stop import TruncatedResponses, truncate_at_stop

__all__ = [
    "OffPolicySamplingWarning",
    "ResponseScores",
    "RolloutBatch",
    "SamplingConfig",
    "TruncatedResponses",
    "encode_prompts",
    "generate_rollout",
    "left_pad",
    "position_ids_from_mask",
    "respond_to_batch",
    "response_logprobs",
    "response_logprobs_and_values",
    "response_values",
    "sample_completions",
    "truncate_at_stop",
]
