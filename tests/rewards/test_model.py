"""ModelReward with tiny GPT-2 and BERT sequence classifiers built here (no downloads)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from rlhf_lightning.data.formats import tokenize_prompt_completion
from rlhf_lightning.errors import RewardError
from rlhf_lightning.rewards import ModelReward, encode_for_reward
from rlhf_lightning.rewards.encoding import left_align

PROMPTS = ["How was your day?", "Review:", "Q", "Tell me about the movie."]
COMPLETIONS = [
    " Great, thanks!",
    " I loved every minute of this film, the cast was wonderful and the ending perfect.",
    "",
    " It was bad.",
]


def test_layout_is_bos_text_eos_for_a_gpt2_style_tokenizer(demo_tokenizer):
    bos, eos = demo_tokenizer.bos_token_id, demo_tokenizer.eos_token_id
    (row,) = encode_for_reward(demo_tokenizer, ["Hello"], [" world"], max_length=64)
    assert row[0] == bos and row[-1] == eos
    pieces = demo_tokenizer(["Hello", " world"], add_special_tokens=False)["input_ids"]
    assert row[1:-1] == pieces[0] + pieces[1]
    # The layout the policy was fine-tuned on (SFT prompt/completion examples).
    sft = tokenize_prompt_completion("Hello", " world", demo_tokenizer, max_length=None)
    assert row == sft["input_ids"]
    # A completion that already spells out EOS does not get a second one.
    (again,) = encode_for_reward(demo_tokenizer, ["Hello"], [" world<|endoftext|>"], 64)
    assert again == row


def test_truncation_keeps_the_end_of_the_completion(demo_tokenizer):
    long_prompt = "word " * 100
    (row,) = encode_for_reward(demo_tokenizer, [long_prompt], ["the very end"], max_length=10)
    assert len(row) == 10
    assert row[0] == demo_tokenizer.bos_token_id and row[-1] == demo_tokenizer.eos_token_id
    assert demo_tokenizer.decode(row[1:-1]).endswith("the very end")


def test_layout_keeps_bert_specials_and_adds_no_eos(bert_tokenizer):
    (row,) = encode_for_reward(bert_tokenizer, ["i love"], [" this movie"], max_length=64)
    assert row == bert_tokenizer("i love this movie")["input_ids"]  # [CLS] ... [SEP]
    (cut,) = encode_for_reward(bert_tokenizer, ["i love"], [" this movie"], max_length=4)
    assert cut == [bert_tokenizer.cls_token_id, *row[-3:-1], bert_tokenizer.sep_token_id]


@pytest.mark.parametrize("arch", ["gpt2", "bert"])
def test_scores_do_not_depend_on_batching_or_padding(
    arch, demo_tokenizer, gpt2_reward_model, bert_tokenizer, bert_reward_model
):
    model, tokenizer = (
        (gpt2_reward_model(), demo_tokenizer)
        if arch == "gpt2"
        else (bert_reward_model, bert_tokenizer)
    )
    one_by_one = ModelReward(model, tokenizer, batch_size=1)
    batched = ModelReward(model, tokenizer, batch_size=4)
    scores = batched(PROMPTS, COMPLETIONS)
    assert scores.shape == (4,) and scores.dtype == torch.float32
    assert scores.std() > 0.01  # distinct texts get distinct scores: the check below has teeth
    torch.testing.assert_close(one_by_one(PROMPTS, COMPLETIONS), scores, atol=1e-5, rtol=0)
    # The short text alone == the short text padded next to the longest one.
    alone = batched(PROMPTS[:1], COMPLETIONS[:1])
    padded = batched([PROMPTS[0], PROMPTS[1]], [COMPLETIONS[0], COMPLETIONS[1]])
    torch.testing.assert_close(alone[0], padded[0], atol=1e-5, rtol=0)


def test_the_score_is_the_classifier_at_the_final_eos(demo_tokenizer, gpt2_reward_model):
    model = gpt2_reward_model()
    reward = ModelReward(model, demo_tokenizer)
    (row,) = encode_for_reward(demo_tokenizer, PROMPTS[:1], COMPLETIONS[:1], 128)
    with torch.no_grad():
        hidden = model.transformer(torch.tensor([row])).last_hidden_state  # (1, T, H)
        expected = model.score(hidden[0, -1])[0]  # the head at the last (EOS) position
    torch.testing.assert_close(reward(PROMPTS[:1], COMPLETIONS[:1])[0], expected, atol=1e-5, rtol=0)


def test_calibration_from_the_config(demo_tokenizer, gpt2_reward_model):
    raw = ModelReward(gpt2_reward_model(), demo_tokenizer)(PROMPTS, COMPLETIONS)
    model = gpt2_reward_model()
    model.config.reward_calibration = {"mean": 0.5, "std": 2.0}
    calibrated = ModelReward(model, demo_tokenizer)(PROMPTS, COMPLETIONS)
    torch.testing.assert_close(calibrated, (raw - 0.5) / 2.0, atol=1e-6, rtol=0)
    model.config.reward_calibration = {"mean": 0.0, "std": 0.0}
    with pytest.raises(RewardError, match="std=0.0.*Fix: a finite mean and a finite std > 0"):
        ModelReward(model, demo_tokenizer)


def test_score_tokens_matches_the_text_path_for_any_padding(demo_tokenizer, gpt2_reward_model):
    model = gpt2_reward_model()
    model.config.reward_calibration = {"mean": 0.1, "std": 3.0}
    reward = ModelReward(model, demo_tokenizer, batch_size=3)
    rows = encode_for_reward(demo_tokenizer, PROMPTS, COMPLETIONS, 128)
    pad = demo_tokenizer.pad_token_id
    # Rollout-like layout: 2 left pads on odd rows, right padding to a common width of T.
    width = max(len(r) for r in rows) + 3
    input_ids = torch.full((4, width), pad)
    mask = torch.zeros((4, width), dtype=torch.bool)
    for i, row in enumerate(rows):
        start = 2 * (i % 2)
        input_ids[i, start : start + len(row)] = torch.tensor(row)
        mask[i, start : start + len(row)] = True
    input_ids[~mask] = 7  # what sits under the mask must not matter
    expected = reward(PROMPTS, COMPLETIONS)
    torch.testing.assert_close(reward.score_tokens(input_ids, mask), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        reward.score_tokens(input_ids, mask.long()), expected, atol=1e-5, rtol=0
    )


def test_left_align_keeps_token_order():
    ids = torch.tensor([[0, 0, 5, 6, 7], [1, 2, 3, 0, 0], [0, 9, 0, 8, 0]])
    mask = ids != 0
    aligned, aligned_mask = left_align(ids, mask, pad_token_id=-1)
    assert aligned.tolist() == [[5, 6, 7, -1, -1], [1, 2, 3, -1, -1], [9, 8, -1, -1, -1]]
    assert aligned_mask.sum(1).tolist() == [3, 3, 2]


def test_score_tokens_errors(demo_tokenizer, gpt2_reward_model):
    reward = ModelReward(gpt2_reward_model(), demo_tokenizer)
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    with pytest.raises(RewardError, match=r"row 1 of attention_mask has no real token"):
        reward.score_tokens(ids, torch.tensor([[True] * 3, [False] * 3]))
    with pytest.raises(RewardError, match=r"token id 99999 is outside the model's vocabulary"):
        reward.score_tokens(torch.tensor([[1, 99999]]), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(RewardError, match=r"input_ids \(2, 3\) and attention_mask \(3,\)"):
        reward.score_tokens(ids, torch.ones(3, dtype=torch.bool))


def test_eval_mode_and_dropout_off(demo_tokenizer, gpt2_reward_model):
    model = gpt2_reward_model()
    model.train()
    assert any(m.p > 0 for m in model.modules() if isinstance(m, nn.Dropout))
    reward = ModelReward(model, demo_tokenizer)
    assert not model.training
    assert all(m.p == 0 for m in model.modules() if isinstance(m, nn.Dropout))
    model.train()  # a parent module switching modes: scoring puts it back in eval
    torch.testing.assert_close(reward(PROMPTS, COMPLETIONS), reward(PROMPTS, COMPLETIONS))
    assert not model.training


def test_max_length_is_capped_at_the_position_limit(demo_tokenizer, gpt2_reward_model):
    reward = ModelReward(gpt2_reward_model(), demo_tokenizer, max_length=10_000)
    assert reward.max_length == 128
    assert reward(["word " * 500], [" end"]).shape == (1,)  # no position-embedding overflow


def test_from_pretrained_round_trip(tmp_path, demo_tokenizer, gpt2_reward_model):
    model = gpt2_reward_model()
    model.config.reward_calibration = {"mean": 1.0, "std": 4.0}
    before = ModelReward(model, demo_tokenizer)(PROMPTS, COMPLETIONS)
    model.save_pretrained(tmp_path / "rm")
    demo_tokenizer.save_pretrained(tmp_path / "rm")
    loaded = ModelReward.from_pretrained(str(tmp_path / "rm"), batch_size=2, max_length=64)
    assert loaded.calibration == (1.0, 4.0) and loaded.batch_size == 2
    torch.testing.assert_close(loaded(PROMPTS, COMPLETIONS), before, atol=1e-5, rtol=0)


def test_from_pretrained_errors(tmp_path, demo_tokenizer):
    with pytest.raises(RewardError, match=r"no such directory\. Fix: set reward.path"):
        ModelReward.from_pretrained(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RewardError, match="has no config.json"):
        ModelReward.from_pretrained(str(tmp_path / "empty"))
    config = GPT2Config(
        vocab_size=len(demo_tokenizer), n_layer=1, n_head=2, n_embd=16, n_positions=32
    )
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "policy")
    demo_tokenizer.save_pretrained(tmp_path / "policy")
    with pytest.raises(RewardError, match=r"lacks \['score.weight'\].*Fix: train a reward model"):
        ModelReward.from_pretrained(str(tmp_path / "policy"))
    with pytest.raises(RewardError, match="dtype=fp8 is unknown"):
        ModelReward.from_pretrained(str(tmp_path / "policy"), dtype="fp8")


def test_models_that_are_not_scalar_reward_models_are_refused(demo_tokenizer, gpt2_reward_model):
    model = gpt2_reward_model()
    model.config.num_labels = 2
    with pytest.raises(RewardError, match="num_labels=2.*Fix: use a model trained by stage=reward"):
        ModelReward(model, demo_tokenizer)
    model = gpt2_reward_model()
    model.config.pad_token_id = demo_tokenizer.eos_token_id
    with pytest.raises(RewardError, match="pad_token_id=0 but the tokenizer pads with 1"):
        ModelReward(model, demo_tokenizer)
