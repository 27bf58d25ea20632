"""Pure tensor math for post-training: log-probs, masked reductions, KL, advantages, losses.

Every function here is torch-only and model-free. Shapes use one notation: B batch, T full
sequence, A response tokens, V vocabulary. Masks are bool tensors, True = real token.

Online RL is composed of four kinds of parts, each a family of functions with one signature:
advantage estimators (``estimators``), policy losses (``policy``), loss aggregations
(``aggregation``) and KL placements (``kl_placement``).
"""

from rlhf_lightning.functional.advantages import (
    RunningMoments,
    gae,
    group_advantages,
    rloo_advantages,
)
from rlhf_lightning.functional.aggregation import (
    AggregationContext,
    constant_normalizer,
    global_token_mean,
    sequence_mean,
    token_mean,
)
from rlhf_lightning.functional.estimators import (
    AdvantageInputs,
    Advantages,
    gae_advantages,
    group_normalized_advantages,
    leave_one_out_advantages,
    reinforce_pp_advantages,
    turn_group_advantages,
)
from rlhf_lightning.functional.evaluation import pass_at_k
from rlhf_lightning.functional.importance import (
    ImportanceWeightsOutput,
    logprob_gap,
    truncated_importance_weights,
)
from rlhf_lightning.functional.kl import (
    AdaptiveKLController,
    FixedKLController,
    KLEstimator,
    full_kl,
    kl_penalty,
)
from rlhf_lightning.functional.kl_placement import KLInLoss, KLInReward, KLShaping, score_only
from rlhf_lightning.functional.logprobs import (
    entropy_from_logits,
    indexed_token_logprobs,
    sequence_logprobs,
    shifted_token_logprobs,
    token_logprobs,
)
from rlhf_lightning.functional.losses import (
    DPOLossOutput,
    PairwiseLossOutput,
    SFTLossOutput,
    dpo_loss,
    pairwise_loss,
    sft_loss,
)
from rlhf_lightning.functional.masked import (
    masked_mean,
    masked_mean_or,
    masked_sum,
    masked_var,
    masked_whiten,
    position_ids_from_mask,
)
from rlhf_lightning.functional.packing import (
    PackedLayout,
    first_fit_rows,
    pack,
    pack_layout,
    packed_positions_of,
    packing_width,
    prompt_groups,
    repeated_prompt_tokens,
    shared_prefix_layout,
)
from rlhf_lightning.functional.policy import (
    PolicyLoss,
    ValueLossOutput,
    clipped_sequence_loss,
    clipped_token_loss,
    ppo_value_loss,
)
from rlhf_lightning.functional.preference import (
    KTOLossOutput,
    ORPOLossOutput,
    SimPOLossOutput,
    kto_loss,
    kto_reference_point,
    orpo_loss,
    rank_pairs,
    simpo_loss,
)
from rlhf_lightning.functional.rewards import (
    TokenRewards,
    last_token_index,
    place_turn_rewards,
    ppo_token_rewards,
)
from rlhf_lightning.functional.shaping import (
    expand_group_mask,
    informative_groups,
    length_penalty,
    overlong_penalty,
)
from rlhf_lightning.functional.stats import distinct_n, explained_variance, sequence_kl
from rlhf_lightning.functional.unigram import unigram_perplexity

__all__ = [
    "PackedLayout",
    "first_fit_rows",
    "pack",
    "pack_layout",
    "packed_positions_of",
    "packing_width",
    "prompt_groups",
    "repeated_prompt_tokens",
    "shared_prefix_layout",
    "AdaptiveKLController",
    "AdvantageInputs",
    "Advantages",
    "AggregationContext",
    "DPOLossOutput",
    "FixedKLController",
    "ImportanceWeightsOutput",
    "KLEstimator",
    "KLInLoss",
    "KLInReward",
    "KLShaping",
    "KTOLossOutput",
    "ORPOLossOutput",
    "PairwiseLossOutput",
    "PolicyLoss",
    "RunningMoments",
    "SFTLossOutput",
    "SimPOLossOutput",
    "TokenRewards",
    "ValueLossOutput",
    "clipped_sequence_loss",
    "clipped_token_loss",
    "constant_normalizer",
    "distinct_n",
    "dpo_loss",
    "entropy_from_logits",
    "expand_group_mask",
    "explained_variance",
    "full_kl",
    "gae",
    "gae_advantages",
    "global_token_mean",
    "group_advantages",
    "group_normalized_advantages",
    "informative_groups",
    "kl_penalty",
    "kto_loss",
    "kto_reference_point",
    "last_token_index",
    "leave_one_out_advantages",
    "length_penalty",
    "logprob_gap",
    "masked_mean",
    "masked_mean_or",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "orpo_loss",
    "rank_pairs",
    "overlong_penalty",
    "pairwise_loss",
    "pass_at_k",
    "position_ids_from_mask",
    "place_turn_rewards",
    "ppo_token_rewards",
    "ppo_value_loss",
    "reinforce_pp_advantages",
    "turn_group_advantages",
    "rloo_advantages",
    "score_only",
    "sequence_kl",
    "sequence_logprobs",
    "sequence_mean",
    "sft_loss",
    "indexed_token_logprobs",
    "shifted_token_logprobs",
    "simpo_loss",
    "token_logprobs",
    "token_mean",
    "truncated_importance_weights",
    "unigram_perplexity",
]
