"""The trainer classes: TRL's names become the CLI's overrides, rewards of every kind reach the
stage, model objects train in place, and PPOTrainer keeps classic TRL's loop."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from rlhf_lightning.errors import ConfigError, RewardError
from rlhf_lightning.models import CausalLMWithValueHead, ModelSpec, load_model_and_tokenizer
from rlhf_lightning.rewards import CallableReward, WeightedReward
from rlhf_lightning.rewards.examples import letter_rate
from rlhf_lightning.rewards.inprocess import lookup
from rlhf_lightning.trainers import (
    GRPOConfig,
    GRPOTrainer,
    PPOConfig,
    PPOTrainer,
    SFTConfig,
    SFTTrainer,
)
from rlhf_lightning.trainers.inputs import format_texts

TINY = {"type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 64}
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "report=false"]


@pytest.fixture
def tiny_lm(demo_tokenizer):
    return load_model_and_tokenizer(ModelSpec(tokenizer=demo_tokenizer.name_or_path, arch=TINY))


def test_trl_field_names_become_the_stage_overrides():
    args = SFTConfig(
        learning_rate=1e-4,
        per_device_train_batch_size=4,
        max_steps=3,
        bf16=True,
        report_to="wandb",
        max_seq_length=32,
        dataset_text_field="content",
        overrides=["data.max_samples=100"],
    ).overrides_for_stage()
    for expected in (
        "optim.lr=0.0001",
        "data.batch_size=4",
        "trainer.max_steps=3",
        "trainer.precision=bf16-mixed",
        "logger=[csv,wandb]",
        "data.max_length=32",
        "+data.columns.text=content",
    ):
        assert expected in args, expected
    assert args[-1] == "data.max_samples=100"  # the escape hatch comes last, so it wins


def test_grpo_config_counts_completions_and_names_trl_loss_types():
    args = GRPOConfig(
        per_device_train_batch_size=8,
        num_generations=4,
        loss_type="dr_grpo",
        scale_rewards=False,
        beta=0.0,
        epsilon=0.2,
        epsilon_high=0.28,
        max_steps=5,
    ).overrides_for_stage()
    for expected in (
        "data.batch_size=2",  # 8 completions = 2 prompts x 4
        "stage.algorithm.group_size=4",
        "aggregation=constant_normalizer",
        "stage.algorithm.advantage.scale=none",
        "stage.algorithm.kl_coef=0.0",
        "stage.algorithm.policy_loss.clip_high=0.28",
        "stage.iterations=5",
    ):
        assert expected in args, expected
    with pytest.raises(ConfigError, match="multiple of num_generations"):
        GRPOConfig(per_device_train_batch_size=6, num_generations=4).overrides_for_stage()
    with pytest.raises(ConfigError, match="dr_grpo"):
        GRPOConfig(loss_type="sapo").overrides_for_stage()


def test_reward_funcs_of_every_kind_reach_the_stage(composed, tmp_path):
    prompts = Dataset.from_dict({"prompt": ["a", "b"]})
    GRPOTrainer(
        "tiny", letter_rate, train_dataset=prompts, args=GRPOConfig(output_dir=str(tmp_path / "a"))
    ).train()
    GRPOTrainer(
        "tiny",
        str(tmp_path),
        train_dataset=prompts,
        args=GRPOConfig(output_dir=str(tmp_path / "b")),
    ).train()
    GRPOTrainer(
        "tiny",
        [letter_rate, lambda completions, **kw: [1.0] * len(completions)],
        train_dataset=prompts,
        args=GRPOConfig(output_dir=str(tmp_path / "c"), reward_weights=[1.0, 0.5]),
    ).train()
    by_name, model, mix = composed
    # importable by name: recorded by that name, as the CLI would name it
    assert by_name.reward.function == "rlhf_lightning.rewards.examples:letter_rate"
    assert model.reward._target_.endswith("ModelReward.from_pretrained")
    assert model.reward.path == str(tmp_path)
    # a lambda (and so the mix) is handed over in this process
    assert mix.reward._target_ == "rlhf_lightning.rewards.inprocess.lookup"
    source = lookup(mix.reward.name)
    assert isinstance(source, WeightedReward)
    scores = source(["p", "q"], ["eee", "xyz"])
    assert torch.allclose(scores, torch.tensor([1.0 + 0.5, 0.0 + 0.5]))
    assert (tmp_path / "a" / ".hydra" / "overrides.yaml").read_text().count("reward=callable")


def test_a_reward_name_from_another_process_says_where_it_came_from():
    with pytest.raises(RewardError, match="exists there only"):
        lookup("r99_gone")


def test_trl_style_reward_functions_get_texts_and_columns_by_name():
    def reward_len(completions, **kwargs):
        return [float(len(c)) for c in completions]

    def accuracy(completions, solution, **kwargs):
        return [float(c.strip() == s) for c, s in zip(completions, solution, strict=True)]

    def with_prompts(prompts, completions):
        return [float(len(p)) for p in prompts]

    assert CallableReward(reward_len)(["x", "y"], ["ab", "c"]).tolist() == [2.0, 1.0]
    assert CallableReward(accuracy)(["x", "y"], ["4", "5"], solution=["4", "6"]).tolist() == [
        1.0,
        0.0,
    ]
    assert CallableReward(with_prompts)(["abc", "d"], ["", ""]).tolist() == [3.0, 1.0]
    # this project's positional convention is unchanged
    assert CallableReward(letter_rate)(["p"], ["ee"]).tolist() == [1.0]


def test_formatting_func_per_example_or_per_batch():
    rows = Dataset.from_dict({"q": ["a", "b"], "a": ["1", "2"]})
    per_example = format_texts(rows, lambda ex: f"Q: {ex['q']} A: {ex['a']}")
    per_batch = format_texts(
        rows, lambda b: [f"Q: {q} A: {a}" for q, a in zip(b["q"], b["a"], strict=True)]
    )
    assert per_example["text"] == per_batch["text"] == ["Q: a A: 1", "Q: b A: 2"]
    assert per_example.column_names == ["text"]


def test_a_model_object_trains_in_place_and_saves_a_complete_directory(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    before = model.get_input_embeddings().weight.detach().clone()
    texts = Dataset.from_dict({"text": [f"sample number {i} is here" for i in range(40)]})
    trainer = SFTTrainer(
        model,
        args=SFTConfig(
            max_steps=2, learning_rate=1e-2, output_dir=str(tmp_path / "run"), overrides=QUIET
        ),
        train_dataset=texts,
        processing_class=tokenizer,
    )
    result = trainer.train()
    # the saved starting point is what the config names
    assert (tmp_path / "run" / "input_model" / "config.json").is_file()
    assert not torch.equal(before, model.get_input_embeddings().weight)
    assert torch.equal(
        model.get_input_embeddings().weight, trainer.model.get_input_embeddings().weight
    )
    saved = trainer.save_model(tmp_path / "copy")
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {
        p.name for p in saved.iterdir()
    }
    assert result.global_step == 2


def test_ppo_trainer_takes_trl_order_and_refuses_the_old_one(tiny_lm):
    model, tokenizer = tiny_lm
    with pytest.raises(ConfigError, match="first argument is the PPOConfig"):
        PPOTrainer(model, tokenizer)
    with pytest.raises(ConfigError, match="mini_batch_size"):
        PPOConfig(batch_size=10, mini_batch_size=4)
    assert PPOConfig(batch_size=16, mini_batch_size=4).minibatches_for(16) == 4
    trainer = PPOTrainer(PPOConfig(batch_size=2), model, tokenizer=tokenizer)
    assert isinstance(trainer.model, CausalLMWithValueHead)
    with pytest.raises(ConfigError, match="batch_size=2"):
        trainer.step(["a"], [" b"], [1.0])


def test_ppo_generate_takes_tensors_or_strings(tiny_lm):
    model, tokenizer = tiny_lm
    trainer = PPOTrainer(PPOConfig(), model, tokenizer=tokenizer)
    queries = [torch.tensor(tokenizer.encode("I love")), torch.tensor(tokenizer.encode("The"))]
    with_prompt = trainer.generate(
        queries, max_new_tokens=4, seed=0, pad_token_id=0, min_length=-1, top_k=0.0
    )
    responses = trainer.generate(queries, return_prompt=False, max_new_tokens=4, seed=0)
    for query, full, response in zip(queries, with_prompt, responses, strict=True):
        assert torch.equal(full, torch.cat([query, response])) and 1 <= len(response) <= 4
    one = trainer.generate(queries[0], max_new_tokens=4)
    assert one.dim() == 2 and one.shape[0] == 1
    texts = trainer.generate(["I love", "The"], max_new_tokens=4, seed=0)
    assert all(isinstance(t, str) for t in texts)


def test_ppo_step_with_one_empty_response_in_a_batch_of_two(tiny_lm):
    model, tokenizer = tiny_lm
    trainer = PPOTrainer(PPOConfig(ppo_epochs=1), model, tokenizer=tokenizer)
    # one response of a single token (EOS) beside an empty one: one masked element to whiten
    stats = trainer.step(
        [torch.tensor([5, 6]), torch.tensor([7])],
        [torch.tensor([], dtype=torch.long), torch.tensor([tokenizer.eos_token_id])],
        [torch.tensor(1.0), torch.tensor(0.0)],
    )
    for name in ("train/loss", "train/policy_loss", "train/value_loss", "rollout/kl"):
        assert torch.isfinite(torch.tensor(stats[name])), name
    assert stats["rollout/response_length"] == 0.5


def test_ppo_save_pretrained_and_push_to_hub(tiny_lm, tmp_path, fake_hub):
    model, tokenizer = tiny_lm
    trainer = PPOTrainer(PPOConfig(output_dir=str(tmp_path / "run")), model, tokenizer=tokenizer)
    trainer.step(["I love"], [" it"], [1.0])
    saved = trainer.save_pretrained(tmp_path / "ppo-model")
    loaded = CausalLMWithValueHead.from_pretrained(saved)
    assert torch.equal(loaded.v_head.summary.weight, trainer.model.v_head.summary.weight)
    card = (saved / "README.md").read_text()
    assert "PPOTrainer" in card and "value head" in card and "rollout/reward_mean" in card
    url = trainer.push_to_hub("me/tiny-ppo", endpoint=fake_hub.url, token="hf_x")
    assert url.startswith(fake_hub.url) and fake_hub.repos == ["me/tiny-ppo"]
    files = fake_hub.files["me/tiny-ppo"]
    assert {
        "README.md",
        "config.json",
        "model.safetensors",
        "value_head.safetensors",
        "tokenizer.json",
    } <= files.keys()
    assert files["README.md"].decode() == (tmp_path / "run" / "model" / "README.md").read_text()


def test_ppo_trainer_train_runs_the_ppo_stage_and_keeps_the_result(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    prompts = Dataset.from_dict({"query": ["I love", "The sky", "My day", "Why"] * 2})
    config = PPOConfig(
        batch_size=4,
        mini_batch_size=2,
        learning_rate=1e-2,
        steps=2,
        max_new_tokens=6,
        output_dir=str(tmp_path / "ppo"),
        overrides=[*QUIET, "stage.compare_prompts=0"],
    )
    trainer = PPOTrainer(
        config, model, tokenizer=tokenizer, dataset=prompts, reward_funcs=letter_rate
    )
    before = trainer.model.v_head.summary.weight.detach().clone()
    result = trainer.train()
    assert result.global_step == 2 * 4 * 2  # iterations x epochs x minibatches
    assert "rollout/reward_mean" in result.metrics
    assert not torch.equal(before, trainer.model.v_head.summary.weight)
    overrides = (tmp_path / "ppo" / ".hydra" / "overrides.yaml").read_text()
    assert (
        "data.prompt_column=query" in overrides and "stage.algorithm.num_minibatches=2" in overrides
    )
