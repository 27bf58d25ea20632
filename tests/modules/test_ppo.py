"""PPO: the core's invariants, the stage end to end on a toy reward, the custom-loop API."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import torch

from rlhf_lightning.api import compose_config
from rlhf_lightning.demo.tokenizer import ensure_demo_tokenizer
from rlhf_lightning.functional import AggregationContext
from rlhf_lightning.models import ModelSpec, load_model_and_tokenizer, load_tokenizer
from rlhf_lightning.models.reference import build_reference
from rlhf_lightning.models.value_head import CausalLMWithValueHead
from rlhf_lightning.modules.online import OnlineRLCore
from rlhf_lightning.ppo_api import PPOConfig, PPOTrainer
from rlhf_lightning.rewards.examples import letter_rate
from rlhf_lightning.rollout import SamplingConfig, generate_rollout
from rlhf_lightning.train import run

TINY = {
    "type": "gpt2",
    "n_layer": 1,
    "n_head": 2,
    "n_embd": 32,
    "n_positions": 64,
    "resid_pdrop": 0.1,
    "embd_pdrop": 0.1,
    "attn_pdrop": 0.1,
}


def _demo_tokenizer() -> str:
    return str(ensure_demo_tokenizer())


def _tiny_policy():
    lm, tok = load_model_and_tokenizer(ModelSpec(tokenizer=_demo_tokenizer(), arch=TINY))
    return CausalLMWithValueHead(lm), tok


def test_first_minibatch_ratio_is_one_and_kl_zero_at_init():
    policy, tok = _tiny_policy()
    trainer = PPOTrainer(PPOConfig(ppo_epochs=1, num_minibatches=1), policy, tokenizer=tok)
    assert all(m.p == 0 for m in policy.modules() if isinstance(m, torch.nn.Dropout))
    rollout = generate_rollout(
        policy,
        tok,
        prompts=["I love", "The new phone is", "my", "ok"],
        config=SamplingConfig(max_new_tokens=8),
        generator_seed=0,
    )
    exp = trainer.core.make_experience(rollout, torch.tensor([1.0, 0.0, -1.0, 0.5]))
    # policy == reference at init: every sequence KL is exactly 0
    assert torch.equal(exp.sequence_kl, torch.zeros_like(exp.sequence_kl))
    _, stats = trainer.core.minibatch_loss(exp, AggregationContext(1.0, 8))
    assert stats["train/ratio"].item() == 1.0
    assert stats["train/approx_kl"].item() == 0.0 and stats["train/clipfrac"].item() == 0.0


def test_ppo_stage_raises_a_toy_reward(tmp_path):
    cfg = compose_config("ppo", ["experiment=ppo_smoke"], run_dir=tmp_path / "ppo")
    summary = run(cfg)
    run_dir = Path(summary["run_dir"])
    metrics = pd.read_csv(run_dir / "metrics.csv").dropna(subset=["rollout/reward_mean"])
    reward = metrics["rollout/reward_mean"].to_numpy()
    assert len(reward) == 30
    assert reward[-5:].mean() > reward[:5].mean() + 0.05, reward
    # The first rollout comes from the reference. Its old log-probs were recorded while
    # decoding with the KV cache and the reference's come from one full forward: equal to
    # float rounding (~1e-6), not bit for bit.
    assert abs(metrics["rollout/kl"].iloc[0]) < 1e-5
    for name in [
        "rollout/reward_std",
        "rollout/response_length",
        "rollout/eos_rate",
        "train/policy_loss",
        "train/value_loss",
        "train/clipfrac",
        "train/approx_kl",
        "train/entropy",
        "train/value_explained_var",
        "kl_coef",
        "perf/samples_per_s",
    ]:
        assert name in metrics.columns, name
    assert summary["global_step"] == 30 * 4 * 2  # iterations x epochs x minibatches
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert rows and {"prompt", "completion", "reward", "kl", "step"} <= rows[0].keys()

    loaded = CausalLMWithValueHead.from_pretrained(run_dir / "model")
    assert (run_dir / "model" / "value_head.safetensors").is_file()
    state = torch.load(
        run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    assert state["online_rl"]["iteration"] == 30
    ref = {k: v for k, v in state["state_dict"].items() if k.startswith("reference.")}
    pol = {k: v for k, v in state["state_dict"].items() if k.startswith("policy.pretrained_model.")}
    assert ref and pol
    # the reference stayed at the starting weights while the policy moved
    ref_wte = next(v for k, v in ref.items() if k.endswith("wte.weight"))
    pol_wte = next(v for k, v in pol.items() if k.endswith("wte.weight"))
    assert not torch.equal(ref_wte, pol_wte)
    assert torch.equal(loaded.pretrained_model.get_input_embeddings().weight, pol_wte)


def test_custom_loop_api_with_a_python_reward():
    policy, tok = _tiny_policy()
    config = PPOConfig(ppo_epochs=4, num_minibatches=2, use_score_norm=True, learning_rate=1e-2)
    trainer = PPOTrainer(config, policy, tokenizer=tok)
    queries = ["I love", "The flight", "my phone", "Self-driving cars"] * 4
    history = []
    for i in range(12):
        responses = trainer.generate(queries, seed=i, max_new_tokens=10)
        scores = letter_rate(queries, responses)
        stats = trainer.step(queries, responses, scores)
        history.append(stats["rollout/reward_mean"])
    assert {"train/policy_loss", "train/value_loss", "rollout/kl", "kl_coef"} <= stats.keys()
    assert all(torch.isfinite(torch.tensor(list(stats.values()))))
    assert len(history) == 12
    # the toy reward (the share of "e" letters) rises under the custom loop too
    assert sum(history[-4:]) / 4 > sum(history[:4]) / 4 + 0.01, history


def test_lora_policy_uses_the_adapter_off_base_as_reference():
    spec = ModelSpec(tokenizer=_demo_tokenizer(), arch=TINY, lora={"enabled": True, "r": 4})
    lm, tok = load_model_and_tokenizer(spec)
    policy = CausalLMWithValueHead(lm)
    reference = build_reference(policy, mode="auto")
    OnlineRLCore(policy, reference, PPOConfig().algorithm())
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("v_head") for n in trainable)
    assert type(reference).__name__ == "AdapterDisabledReference"
    ids = torch.tensor([[5, 6, 7, 8]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    before = reference(ids, mask)
    with torch.no_grad():  # the adapter moves the policy ...
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)
    assert not torch.allclose(policy(ids, mask).logits, before)
    torch.testing.assert_close(reference(ids, mask), before)  # ... and not the reference


def test_separate_critic_full_kl_and_accumulation_run_through_the_stage(tmp_path):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    tok = load_tokenizer(_demo_tokenizer())
    config = GPT2Config(
        vocab_size=len(tok),
        n_layer=1,
        n_head=2,
        n_embd=32,
        n_positions=128,
        num_labels=1,
        pad_token_id=tok.pad_token_id,
    )
    GPT2ForSequenceClassification(config).save_pretrained(tmp_path / "rm")
    cfg = compose_config(
        "ppo",
        [
            "experiment=ppo_smoke",
            "stage.iterations=2",
            "stage.critic=separate",
            f"stage.critic_init={tmp_path / 'rm'}",
            "stage.algorithm.kl.estimator=full",
            "stage.algorithm.gradient_accumulation_steps=2",
            "logger=[csv,wandb]",
        ],
        run_dir=tmp_path / "ppo",
    )
    summary = run(cfg)
    # 2 iterations x 4 epochs x 2 minibatches, one optimizer step per 2 accumulated minibatches
    assert summary["global_step"] == 2 * 4 * 2 // 2
    metrics = summary["metrics"]
    assert metrics["rollout/kl"] >= 0.0  # the exact KL is never negative
    assert 0.0 < metrics["rollout/distinct_2"] <= 1.0
    state = torch.load(
        tmp_path / "ppo/checkpoints/last.ckpt", map_location="cpu", weights_only=False
    )
    weights = state["state_dict"]
    critic = {k: v for k, v in weights.items() if k.startswith("critic.")}
    assert critic
    # The value loss trains the separate critic (its weights moved from the reward model's);
    # the policy's own value head takes no part and stays as initialised.
    initial = GPT2ForSequenceClassification.from_pretrained(tmp_path / "rm").state_dict()
    moved = [k for k, v in critic.items() if not torch.equal(v, initial[k.split(".", 2)[2]])]
    assert moved, "the critic did not train"
    assert (tmp_path / "ppo" / "model" / "critic").is_dir()
    assert list((tmp_path / "ppo" / "wandb").glob("offline-run-*"))


def test_shared_critic_experience_reuses_sampling_without_a_policy_forward():
    """Old log-probs and values recorded while sampling: make_experience runs only the
    reference, and gives what the policy forward gives."""
    policy, tok = _tiny_policy()
    policy = policy.eval()
    torch.nn.init.normal_(policy.v_head.summary.weight, std=1.0)
    core = OnlineRLCore(policy, build_reference(policy, mode="copy"), PPOConfig().algorithm())
    assert core.records_values_while_sampling
    rollout = generate_rollout(
        policy,
        tok,
        prompts=["I love", "The new phone is", "my", "ok"],
        config=SamplingConfig(max_new_tokens=8),
        generator_seed=0,
        row_keys=torch.arange(4),
        record_values=core.records_values_while_sampling,
    )
    scores = torch.tensor([1.0, 0.0, -1.0, 0.5])
    calls = []
    handle = policy.register_forward_hook(lambda *_: calls.append(1))
    fast = core.make_experience(rollout, scores)
    handle.remove()
    assert calls == []  # no policy forward
    slow = core.make_experience(
        dataclasses.replace(rollout, policy_logprobs=None, policy_values=None), scores
    )
    for name in ("old_logprobs", "old_values", "advantages", "returns", "sequence_kl"):
        assert torch.allclose(getattr(fast, name), getattr(slow, name), atol=1e-5), name
    assert not OnlineRLCore(
        policy, core.reference, PPOConfig(kl_penalty="full").algorithm()
    ).records_values_while_sampling
