"""The lexicon toxicity score and its reward: exact values, hand-computed from the definition."""

from __future__ import annotations

import numpy as np
import pytest

from rlhf_lightning.rewards import CallableReward
from rlhf_lightning.rewards.toxicity import non_toxic, toxicity, toxicity_features


def test_each_feature_on_hand_computed_texts():
    texts = [
        "have a nice day",  # nothing
        "you stupid idiot",  # 2 offensive words
        "what the hell, hello",  # "hell" is offensive as a whole word only: 1
        "Assistance for ASSETS",  # "ass" never matches as a prefix; ASSETS is shouting
        "WOW. JFK ROCKS!!",  # WOW, JFK too short to shout: 1 shouted word of 3; "!!"
        "fucking fuckers shit!!!!",  # 3 stem matches; a run of four "!"
        "",
    ]
    f = toxicity_features(texts)
    np.testing.assert_array_equal(f["offensive_words"], [0, 2, 1, 0, 0, 3, 0])
    np.testing.assert_allclose(f["lexicon"], [0, 0.75, 0.5, 0, 0, 0.875, 0])
    np.testing.assert_allclose(f["shouting"], [0, 0, 0, 1 / 3, 1 / 3, 0, 0])
    np.testing.assert_allclose(f["exclaiming"], [0, 0, 0, 0, 0.5, 1.0, 0])
    # 0.6 * lexicon + 0.2 * shouting + 0.2 * exclaiming
    np.testing.assert_allclose(
        toxicity(texts),
        [0, 0.45, 0.3, 0.2 / 3, 0.2 / 3 + 0.1, 0.6 * 0.875 + 0.2, 0],
    )


def test_bounds_case_and_one_exclamation():
    worst = "FUCKING SHIT BITCH DAMN CRAP!!!!!"
    assert toxicity([worst]).tolist() == pytest.approx([0.6 * (1 - 0.5**5) + 0.2 + 0.2])
    assert toxicity(["Damn"]).tolist() == toxicity(["damn"]).tolist() == [0.3]
    assert toxicity(["great game!"]).tolist() == [0.0]  # a single "!" is not exclaiming
    scores = toxicity([worst * 20, "", "ok"])
    assert ((scores >= 0) & (scores <= 1)).all()


def test_reward_scores_the_completion_only_and_is_minus_toxicity():
    prompts = ["you idiot", "you idiot"]
    completions = [" have a good day", " shut up, you idiot!!"]
    assert non_toxic(prompts, completions) == pytest.approx([0.0, -0.4])
    # By name from a config, as experiment=detox uses it; extra columns are ignored.
    reward = CallableReward("rlhf_lightning.rewards.toxicity:non_toxic")
    assert reward(prompts, completions, label=[0, 1]).tolist() == pytest.approx([0.0, -0.4])
