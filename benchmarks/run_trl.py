"""Run one benchmark stage through TRL, inside a TRL virtualenv made by `setup_trl.sh`.

    benchmarks/.venv-trl/bin/python benchmarks/run_trl.py --stage sft       # every stage but ppo
    benchmarks/.venv-trl-ppo/bin/python benchmarks/run_trl.py --stage ppo   # the last TRL with PPO

The trainers run with their defaults except where this project's run differs, and what would
make the work unequal is set explicitly (listed in `common_args`): fp32 (TRL's configs default
to bf16), no gradient checkpointing (TRL's configs default to it), no evaluation, no
checkpoints, no progress bar, no external loggers. Prints one `BENCH_RESULT {...}` line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload  # noqa: E402

OFFLINE = ("sft", "reward", "dpo", "kto", "orpo", "simpo")


def common_args(stage: workload.Stage, output_dir: str, max_steps: int, batch: int) -> dict:
    return {
        "output_dir": output_dir,
        "report_to": "none",
        "save_strategy": "no",
        "eval_strategy": "no",
        "disable_tqdm": True,
        "bf16": False,  # TRL configs default to bf16; this project's runs are fp32
        "fp16": False,
        "gradient_checkpointing": False,  # TRL configs default to True
        "activation_checkpointing": False,  # its new name in transformers 5
        "use_cpu": True,
        "seed": workload.SEED,
        "learning_rate": workload.LR,
        "weight_decay": 0.0,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "max_grad_norm": workload.MAX_GRAD_NORM,
        "max_steps": max_steps,
        "per_device_train_batch_size": batch,
        "gradient_accumulation_steps": 1,
        "dataloader_num_workers": 0,
        # this project logs every 10 optimizer steps offline, every iteration online
        "logging_steps": 10 if stage.name in OFFLINE else stage.updates_per_iteration,
    }


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def build_trainer(stage: workload.Stage, work: Path, output_dir: str, callback):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    tokenizer = load_tokenizer(work / "policy")
    steps = stage.warmup + stage.steps
    if stage.name == "sft":
        from trl import SFTConfig, SFTTrainer

        args = SFTConfig(
            **common_args(stage, output_dir, steps, stage.batch),
            max_length=workload.SFT_LENGTH,
            packing=False,
            dataset_text_field="text",
        )
        return SFTTrainer(
            model=AutoModelForCausalLM.from_pretrained(work / "policy"),
            args=args,
            train_dataset=load_dataset("json", data_files=str(work / "sft.jsonl"), split="train"),
            processing_class=tokenizer,
            callbacks=[callback],
        )
    if stage.name == "reward":
        from trl import RewardConfig, RewardTrainer

        args = RewardConfig(**common_args(stage, output_dir, steps, stage.batch), max_length=256)
        model = AutoModelForSequenceClassification.from_pretrained(work / "policy", num_labels=1)
        return RewardTrainer(
            model=model,
            args=args,
            train_dataset=load_dataset("json", data_files=str(work / "pairs.jsonl"), split="train"),
            processing_class=tokenizer,
            callbacks=[callback],
        )
    if stage.name == "dpo":
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(
            **common_args(stage, output_dir, steps, stage.batch),
            max_length=256,
            beta=workload.DPO_BETA,
            loss_type=["sigmoid"],
            precompute_ref_log_probs=False,
        )
        return DPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(work / "policy"),
            ref_model=AutoModelForCausalLM.from_pretrained(work / "policy"),
            args=args,
            train_dataset=load_dataset("json", data_files=str(work / "pairs.jsonl"), split="train"),
            processing_class=tokenizer,
            callbacks=[callback],
        )
    if stage.name in ("kto", "orpo", "simpo"):
        return build_preference_trainer(stage, work, output_dir, callback, tokenizer)
    if stage.name == "online_dpo":
        return build_online_dpo(stage, work, output_dir, callback, tokenizer)
    if stage.name in ("grpo", "rloo"):
        completions_per_step = stage.samples_per_step // stage.minibatches
        online = {
            **common_args(
                stage, output_dir, steps * stage.updates_per_iteration, completions_per_step
            ),
            "steps_per_generation": stage.minibatches,
            "num_generations": stage.group,
            "num_iterations": stage.epochs,
            "max_completion_length": workload.RESPONSE_TOKENS,
            # the full response length on both sides (this project: min_new_tokens too)
            "generation_kwargs": {"min_new_tokens": workload.RESPONSE_TOKENS},
            "temperature": 1.0,
            "top_p": 1.0,
            "top_k": 0,
            "log_completions": False,
        }
        reward = AutoModelForSequenceClassification.from_pretrained(work / "reward")
        dataset = load_dataset("json", data_files=str(work / "prompts.jsonl"), split="train")
        if stage.name == "grpo":
            from trl import GRPOConfig, GRPOTrainer

            args = GRPOConfig(
                **online, beta=workload.GRPO_BETA, loss_type="dapo", scale_rewards="group"
            )
            cls = GRPOTrainer
        else:
            from trl import RLOOConfig, RLOOTrainer

            args = RLOOConfig(**online, beta=workload.RLOO_BETA)
            cls = RLOOTrainer
        return cls(
            model=AutoModelForCausalLM.from_pretrained(work / "policy"),
            reward_funcs=[reward],
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            reward_processing_classes=[load_tokenizer(work / "reward")],
            callbacks=[callback],
        )
    if stage.name in ("ppo", "ppo_shared"):  # TRL 1.12 has one PPO design
        return build_ppo(stage, work, output_dir, callback, tokenizer)
    raise SystemExit(f"unknown stage {stage.name}")


def build_preference_trainer(stage, work, output_dir, callback, tokenizer):
    """KTOTrainer, ORPOTrainer, CPOTrainer(loss_type="simpo"): the offline preference family."""
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM

    steps = stage.warmup + stage.steps
    common = {**common_args(stage, output_dir, steps, stage.batch), "max_length": 256}
    policy = AutoModelForCausalLM.from_pretrained(work / "policy")
    data = "kto.jsonl" if stage.name == "kto" else "pairs.jsonl"
    dataset = load_dataset("json", data_files=str(work / data), split="train")
    if stage.name == "kto":
        from trl import KTOConfig, KTOTrainer

        args = KTOConfig(**common, beta=workload.KTO_BETA, precompute_ref_log_probs=False)
        extra = {"ref_model": AutoModelForCausalLM.from_pretrained(work / "policy")}
        cls = KTOTrainer
    elif stage.name == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        args, extra, cls = ORPOConfig(**common, beta=workload.ORPO_LAMBDA), {}, ORPOTrainer
    else:  # SimPO is TRL's CPO trainer with loss_type="simpo" and no NLL term (cpo_alpha 0)
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        args = CPOConfig(
            **common,
            loss_type="simpo",
            beta=workload.SIMPO_BETA,
            simpo_gamma=workload.SIMPO_GAMMA,
            cpo_alpha=0.0,
        )
        extra, cls = {}, CPOTrainer
    return cls(
        model=policy,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[callback],
        **extra,
    )


def build_online_dpo(stage, work, output_dir, callback, tokenizer):
    """OnlineDPOTrainer: two answers per prompt ranked by the reward model, one DPO step."""
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    args = OnlineDPOConfig(
        **common_args(stage, output_dir, stage.warmup + stage.steps, stage.batch),
        max_new_tokens=workload.RESPONSE_TOKENS,
        # the full response length on both sides (this project: min_new_tokens too)
        generation_kwargs={"min_new_tokens": workload.RESPONSE_TOKENS},
        temperature=1.0,  # TRL's default is 0.9; this project samples at 1.0
        top_k=0,
        top_p=1.0,
        beta=[workload.ONLINE_DPO_BETA],
        loss_type="sigmoid",
        missing_eos_penalty=None,
    )
    trainer = OnlineDPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(work / "policy"),
        ref_model=AutoModelForCausalLM.from_pretrained(work / "policy"),
        reward_funcs=[AutoModelForSequenceClassification.from_pretrained(work / "reward")],
        args=args,
        train_dataset=load_dataset("json", data_files=str(work / "prompts.jsonl"), split="train"),
        processing_class=tokenizer,
        reward_processing_classes=[load_tokenizer(work / "reward")],
        callbacks=[callback],
    )
    trainer.bench_phases = PPOPhases()
    trainer.bench_phases.install_online_dpo(trainer)
    return trainer


class PPOPhases:
    """TRL's PPO loop has no phase timers: time its module-level helpers instead.

    rollout = `batch_generation`; scoring = `get_reward` on the reward model; experience =
    the reference forward and `get_reward` on the value model; optimising = the rest of the
    iteration (PPO epochs, GAE, logging).
    """

    def __init__(self) -> None:
        self.totals = {"rollout": 0.0, "scoring": 0.0, "experience": 0.0}
        self.snapshots: list[dict[str, float]] = []

    def timed(self, fn, pick):
        """`fn`, adding its wall time to the phase `pick(first argument)` names (None: none)."""

        def wrapper(*a, **kw):
            start = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                name = pick(a[0] if a else None)
                if name:
                    self.totals[name] += time.perf_counter() - start

        return wrapper

    def install(self, module, reward_model, value_model) -> None:
        timed = self.timed
        module.batch_generation = timed(module.batch_generation, lambda m: "rollout")
        module.get_reward = timed(
            module.get_reward,
            lambda m: (
                "scoring" if m is reward_model else "experience" if m is value_model else None
            ),
        )
        wrapper_cls = module.PolicyAndValueWrapper
        module.forward = timed(
            module.forward, lambda m: None if isinstance(m, wrapper_cls) else "experience"
        )

    def install_online_dpo(self, trainer) -> None:
        """OnlineDPOTrainer: rollout = `_generate` (both answers of every prompt), scoring =
        `_calculate_rewards_from_functions`; the rest of the step (the policy and reference
        forwards, the DPO loss, backward, the optimizer) is optimisation, as on this project's
        side, which has no separate experience phase either."""
        trainer._generate = self.timed(trainer._generate, lambda _: "rollout")
        trainer._calculate_rewards_from_functions = self.timed(
            trainer._calculate_rewards_from_functions, lambda _: "scoring"
        )

    def snapshot(self) -> None:
        self.snapshots.append({**self.totals, "t": time.perf_counter()})


def build_ppo(stage, work, output_dir, callback, tokenizer):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    try:
        from trl.experimental.ppo import PPOConfig, PPOTrainer
        from trl.experimental.ppo import ppo_trainer as module
    except ImportError:
        from trl import PPOConfig, PPOTrainer
        from trl.trainer import ppo_trainer as module

    tokenizer.padding_side = "left"
    dataset = load_dataset("json", data_files=str(work / "prompts.jsonl"), split="train")
    dataset = dataset.map(
        lambda row: {"input_ids": tokenizer(row["prompt"]).input_ids}, remove_columns=["prompt"]
    )
    steps = stage.warmup + stage.steps
    args_dict = common_args(stage, output_dir, steps, stage.batch)
    args_dict.pop("max_steps")  # PPO runs for total_episodes
    args_dict["logging_steps"] = 1  # one row per iteration, as this project
    args = PPOConfig(
        **args_dict,
        total_episodes=steps * stage.batch,
        num_mini_batches=stage.minibatches,
        num_ppo_epochs=stage.epochs,
        response_length=workload.RESPONSE_TOKENS,
        local_rollout_forward_batch_size=stage.batch,
        stop_token=None,  # no stop token: every response is response_length long
        kl_coef=workload.PPO_KL_COEF,
        kl_estimator="k1",
        missing_eos_penalty=None,
        num_sample_generations=0,
        temperature=1.0,
    )
    reward_model = AutoModelForSequenceClassification.from_pretrained(work / "reward")
    value_model = AutoModelForSequenceClassification.from_pretrained(work / "reward")
    phases = PPOPhases()
    phases.install(module, reward_model, value_model)
    trainer = PPOTrainer(
        args=args,
        processing_class=tokenizer,
        model=AutoModelForCausalLM.from_pretrained(work / "policy"),
        ref_model=AutoModelForCausalLM.from_pretrained(work / "policy"),
        reward_model=reward_model,
        train_dataset=dataset,
        value_model=value_model,
        callbacks=[callback],
    )
    trainer.bench_phases = phases
    return trainer


def ppo_split(phases: PPOPhases, stage: workload.Stage) -> dict[str, float]:
    """Phase seconds over the timed iterations, from the snapshots taken at each step end."""
    first, last = (
        phases.snapshots[stage.warmup - 1],
        phases.snapshots[stage.warmup + stage.steps - 1],
    )
    split = {name: last[name] - first[name] for name in ("rollout", "scoring", "experience")}
    split["optimising"] = (last["t"] - first["t"]) - sum(split.values())
    return split


def run_classic_ppo(stage: workload.Stage, work: Path, window: workload.StepWindow) -> dict:
    """The classic `PPOTrainer.step(queries, responses, scores)` loop of TRL <= 0.11.

    The policy is an `AutoModelForCausalLMWithValueHead` (value head on the policy's trunk, as
    this project's `stage.critic=shared`); the loop is the one TRL's docs show: generate,
    score with the reward model, `step`. Phases: generation, scoring, and `step` (TRL's own
    `time/ppo/forward_pass` = experience, the rest of `step` = optimisation).
    """
    import torch
    from transformers import AutoModelForSequenceClassification
    from trl import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer

    tokenizer = load_tokenizer(work / "policy")
    tokenizer.padding_side = "left"
    config = PPOConfig(
        batch_size=stage.batch,
        mini_batch_size=stage.batch // stage.minibatches,
        ppo_epochs=stage.epochs,
        gradient_accumulation_steps=1,
        learning_rate=workload.LR,
        init_kl_coef=workload.PPO_KL_COEF,
        adap_kl_ctrl=False,
        kl_penalty="kl",
        seed=workload.SEED,
        log_with=None,
    )
    model = AutoModelForCausalLMWithValueHead.from_pretrained(str(work / "policy"))
    ref_model = AutoModelForCausalLMWithValueHead.from_pretrained(str(work / "policy"))
    reward_model = AutoModelForSequenceClassification.from_pretrained(work / "reward").eval()
    trainer = PPOTrainer(config, model, ref_model, tokenizer)
    prompts = [json.loads(line)["prompt"] for line in (work / "prompts.jsonl").open()]
    generation = {
        "max_new_tokens": workload.RESPONSE_TOKENS,
        "min_new_tokens": workload.RESPONSE_TOKENS,
        "do_sample": True,
        "top_k": 0,
        "top_p": 1.0,
        "temperature": 1.0,
        "pad_token_id": tokenizer.pad_token_id,
    }
    phases = {"rollout": 0.0, "scoring": 0.0, "experience": 0.0, "optimising": 0.0}
    for iteration in range(stage.warmup + stage.steps):
        batch = prompts[iteration * stage.batch : (iteration + 1) * stage.batch]
        queries = [tokenizer(p, return_tensors="pt").input_ids[0] for p in batch]
        t0 = time.perf_counter()
        responses = trainer.generate(
            queries, batch_size=stage.batch, return_prompt=False, **generation
        )
        t1 = time.perf_counter()
        with torch.no_grad():
            ids = torch.stack([torch.cat([q, r]) for q, r in zip(queries, responses, strict=True)])
            scores = list(reward_model(input_ids=ids).logits[:, 0])
        t2 = time.perf_counter()
        stats = trainer.step(queries, responses, scores)
        t3 = time.perf_counter()
        window.step_end()
        if iteration >= stage.warmup:
            forward = float(stats["time/ppo/forward_pass"])
            phases["rollout"] += t1 - t0
            phases["scoring"] += t2 - t1
            phases["experience"] += forward
            phases["optimising"] += t3 - t2 - forward
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True, choices=sorted(workload.STAGES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out")
    parser.add_argument("--workdir", type=Path, default=workload.WORKDIR)
    parser.add_argument("--trace", action="store_true", help="count backbone forwards by shape")
    args = parser.parse_args()
    workload.set_threads(args.threads)
    if args.trace:
        workload.ForwardTrace.install()
    stage = workload.STAGES[args.stage]
    work = workload.build(args.workdir)

    import datasets
    import transformers
    import trl
    from transformers import TrainerCallback

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_warning()
    per_step = stage.updates_per_iteration if stage.name in ("grpo", "rloo") else 1
    window = workload.StepWindow(stage.warmup, stage.steps, per_step=per_step)
    holder: dict = {}

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            window.step_end()
            phases = getattr(holder.get("trainer"), "bench_phases", None)
            if phases is not None:
                phases.snapshot()

    if stage.name == "ppo_valuehead":
        phases = run_classic_ppo(stage, work, window)
        extra = {"trl_trainer": "trl.PPOTrainer (classic step API)", "phases_s": phases}
        extra["transformers"] = transformers.__version__
        res = workload.result(stage, "trl", trl.__version__, window, **extra)
        workload.finish(res, args.trace, args.out)
        return
    output_dir = tempfile.mkdtemp(prefix=f"bench-trl-{stage.name}-")
    try:
        trainer = build_trainer(stage, work, output_dir, Timer())
        holder["trainer"] = trainer
        trainer.train()
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)
    extra = {"trl_trainer": type(trainer).__module__ + "." + type(trainer).__name__}
    if stage.name in ("ppo", "ppo_shared", "online_dpo"):
        extra["phases_s"] = ppo_split(trainer.bench_phases, stage)
    extra["transformers"] = transformers.__version__
    res = workload.result(stage, "trl", trl.__version__, window, **extra)
    workload.finish(res, args.trace, args.out)


if __name__ == "__main__":
    main()
