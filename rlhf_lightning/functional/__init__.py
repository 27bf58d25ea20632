"""Pure tensor math for post-training: log-probs, masked reductions, KL, advantages, losses.

Every function here is torch-only and model-free. Shapes use one notation: B batch, T full
sequence, A response tokens, V vocabulary. Masks are bool tensors, True = real token.
"""

from rlhf_lightning.functional.advantages import (
    RunningMoments,
    gae,
    group_advantages,
    rloo_advantages,
)
from rlhf_lightning.functional.kl import (
    AdaptiveKLController,
    FixedKLController,
    KLEstimator,
    full_kl,
    kl_penalty,
)
from rlhf_lightning.functional.logprobs import (
    entropy_from_logits,
    sequence_logprobs,
    shifted_token_logprobs,
    token_logprobs,
)
from rlhf_lightning.functional.losses import (
    DPOLossOutput,
    PairwiseLossOutput,
    PolicyLossOutput,
    SequenceLossOutput,
    SFTLossOutput,
    ValueLossOutput,
    aggregate_loss,
    dpo_loss,
    grpo_token_loss,
    pairwise_loss,
    ppo_policy_loss,
    ppo_value_loss,
    rloo_sequence_loss,
    sft_loss,
)
from rlhf_lightning.functional.masked import (
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    position_ids_from_mask,
)
from rlhf_lightning.functional.rewards import TokenRewards, last_token_index, ppo_token_rewards
from rlhf_lightning.functional.unigram import unigram_perplexity

__all__ = [
    "position_ids_from_mask",
    "TokenRewards",
    "last_token_index",
    "ppo_token_rewards",
    "AdaptiveKLController",
    "DPOLossOutput",
    "FixedKLController",
    "KLEstimator",
    "PairwiseLossOutput",
    "PolicyLossOutput",
    "RunningMoments",
    "SFTLossOutput",
    "SequenceLossOutput",
    "ValueLossOutput",
    "aggregate_loss",
    "dpo_loss",
    "entropy_from_logits",
    "full_kl",
    "gae",
    "grpo_token_loss",
    "group_advantages",
    "kl_penalty",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "pairwise_loss",
    "ppo_policy_loss",
    "ppo_value_loss",
    "rloo_advantages",
    "rloo_sequence_loss",
    "sequence_logprobs",
    "sft_loss",
    "shifted_token_logprobs",
    "token_logprobs",
    "unigram_perplexity",
]
