"""VADER sentiment and the alt-profanity-check toxicity reward on real text, and their configs."""

from __future__ import annotations

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from rlhf_lightning.paths import config_dir
from rlhf_lightning.rewards import CallableReward, WeightedReward
from rlhf_lightning.rewards.profanity import non_offensive, offensive_probability
from rlhf_lightning.rewards.sentiment import vader_compound, vader_sentiment

POSITIVE = [
    "I absolutely loved this movie, the acting was wonderful.",
    "Thanks so much, that was really helpful and kind of you!",
    "What a great day, I'm so happy :)",
]
NEGATIVE = [
    "This was a terrible, boring waste of time.",
    "I hate waiting in line, it makes me angry.",
    "The food was awful and the service was worse.",
]
CLEAN = [
    "Have a lovely day, my friend.",
    "The meeting is moved to three o'clock.",
    "Could you please pass the salt?",
]
TOXIC = [
    "Shut up, you stupid idiot.",
    "You are a worthless piece of shit.",
    "Go to hell, you fucking moron.",
]


def compose_reward(*overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides)).reward


def test_vader_ranks_positive_above_negative_within_bounds():
    pos, neg = vader_compound(POSITIVE), vader_compound(NEGATIVE)
    assert (pos > 0.5).all() and (neg < -0.5).all()
    assert vader_compound(["", "The train leaves at noon."]).tolist() == [0.0, 0.0]
    scores = vader_compound(["good " * 200, "awful!!! " * 200])
    assert ((scores >= -1) & (scores <= 1)).all()


def test_vader_reward_scores_the_completion_only():
    prompts = ["I hate Mondays. Reply:"] * 2
    rewards = vader_sentiment(prompts, [" Lovely, thanks!", " Awful."])
    assert rewards[0] > 0 > rewards[1]
    assert vader_sentiment(["I love you"], [""]).tolist() == [0.0]


def test_profanity_ranks_toxic_above_clean_and_reward_is_negated():
    clean, toxic = offensive_probability(CLEAN), offensive_probability(TOXIC)
    assert (clean < 0.2).all() and (toxic > 0.8).all()
    rewards = non_offensive(["p"] * 6, CLEAN + TOXIC)
    np.testing.assert_allclose(rewards, -np.concatenate([clean, toxic]))
    assert ((rewards <= 0) & (rewards >= -1)).all()
    assert non_offensive([], []).shape == (0,)


@pytest.mark.parametrize(
    ("option", "function"),
    [("sentiment", vader_sentiment), ("toxicity", non_offensive)],
)
def test_config_builds_a_callable_reward(option, function):
    reward = instantiate(compose_reward(f"reward={option}"))
    assert isinstance(reward, CallableReward)
    completions = POSITIVE[:1] + TOXIC[:1]
    scores = reward(["p", "p"], completions, label=[0, 1])  # extra columns are ignored
    assert scores.dtype.is_floating_point and scores.shape == (2,)
    np.testing.assert_allclose(scores.numpy(), function(["p", "p"], completions), rtol=1e-6)


def test_sentiment_and_toxicity_mix():
    mix = instantiate(
        compose_reward(
            "reward=mix",
            "~reward.sources.length",
            "~reward.weights.length",
            "reward.sources.sentiment.function=rlhf_lightning.rewards.sentiment:vader_sentiment",
            "+reward.sources.toxicity._target_=rlhf_lightning.rewards.CallableReward",
            "+reward.sources.toxicity.function=rlhf_lightning.rewards.profanity:non_offensive",
            "+reward.weights.toxicity=2.0",
        )
    )
    assert isinstance(mix, WeightedReward)
    completions = [POSITIVE[0], TOXIC[0]]
    scores = mix(["p", "p"], completions)
    expected = vader_sentiment([], completions) + 2.0 * non_offensive([], completions)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5)
    assert set(mix.last_components) == {"sentiment", "toxicity"}
