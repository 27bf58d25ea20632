"""The work both frameworks do: one model, tokenizer, data set and run size per stage.

Imported by `run_ours.py` (this project's Python) and `run_trl.py` (a TRL virtualenv), so it
uses only the standard library, torch, transformers and tokenizers. `build(workdir)` writes,
once, everything both sides load from disk:

    <workdir>/policy/      a random GPT-2 (causal LM) + the tokenizer, save_pretrained
    <workdir>/reward/      a random GPT-2 sequence classifier (num_labels=1) + the tokenizer:
                           the reward model of PPO/GRPO/RLOO and the initial PPO critic
    <workdir>/sft.jsonl    {"text"}: every row longer than SFT_LENGTH tokens (rows are cut to it)
    <workdir>/pairs.jsonl  {"prompt", "chosen", "rejected"}: fixed token counts per side
    <workdir>/kto.jsonl    {"prompt", "completion", "label"}: each pair as a desirable and an
                           undesirable row (KTO)
    <workdir>/prompts.jsonl {"prompt"}: PROMPT_TOKENS tokens each

The tokenizer is word-level (one token per word, `<eos>` doubling as padding), built here with
`tokenizers`: every text has an exact, known token count on both sides, so the two frameworks
see the same sequence lengths and tokens/s is the same formula for both. Generation is forced
to the full response length (EOS forbidden until max_new_tokens) wherever the framework lets
that be set.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

WORKDIR = Path(__file__).resolve().parent / "work"
VERSION = 4  # bump when anything below changes: a stale workdir is rebuilt

VOCAB_WORDS = 4093  # + <eos>, <unk>, <pad-unused> = 4096
MODEL = {"n_layer": 4, "n_head": 4, "n_embd": 256, "n_positions": 256}
SEED = 0
LR = 1e-5

# Offline stages.
SFT_LENGTH = 128  # tokens per example (all rows are cut to exactly this)
PAIR_PROMPT = 48  # tokens
PAIR_COMPLETION = 31  # tokens per side, + <eos> appended by both frameworks = 32
# Online stages.
PROMPT_TOKENS = 16
RESPONSE_TOKENS = 32


@dataclass(frozen=True)
class Stage:
    """One benchmark: `warmup` steps (untimed), then `steps` timed steps.

    A step is an optimizer step for the offline stages, and one rollout-and-update iteration
    for the online ones (several optimizer steps each for ppo/grpo/rloo: see
    `updates_per_iteration`; one for online_dpo).
    """

    name: str
    # examples (sft), pairs (reward, dpo, orpo, simpo), rows (kto), prompts (online) per step
    batch: int
    warmup: int
    steps: int
    tokens_per_sample: int  # tokens through the model per sample, by construction
    group: int = 1  # completions per prompt (grpo, rloo, online_dpo)
    epochs: int = 1  # ppo_epochs (ppo) / num_iterations (grpo, rloo)
    minibatches: int = 1  # per epoch; one optimizer step each

    @property
    def samples_per_step(self) -> int:
        return self.batch * self.group

    @property
    def updates_per_iteration(self) -> int:
        return self.epochs * self.minibatches


_PAIR_SIDE = PAIR_PROMPT + PAIR_COMPLETION + 1
_GROUP_RUN = {
    "batch": 8,
    "group": 4,
    "warmup": 1,
    "steps": 3,
    "tokens_per_sample": PROMPT_TOKENS + RESPONSE_TOKENS,
    "epochs": 2,
    "minibatches": 4,
}
_PPO_RUN = {
    "batch": 16,
    "warmup": 1,
    "steps": 3,
    "tokens_per_sample": PROMPT_TOKENS + RESPONSE_TOKENS,
    "epochs": 4,
    "minibatches": 4,
}
STAGES: dict[str, Stage] = {
    # SFT and reward steps take ~0.4 s: 30 / 24 of them keep the timed window above 10 s, long
    # enough that a slow spell of a shared machine does not decide the ratio.
    "sft": Stage("sft", batch=8, warmup=2, steps=30, tokens_per_sample=SFT_LENGTH),
    # a pair = chosen + rejected sequences
    "reward": Stage("reward", batch=8, warmup=2, steps=24, tokens_per_sample=2 * _PAIR_SIDE),
    "dpo": Stage("dpo", batch=8, warmup=2, steps=10, tokens_per_sample=2 * _PAIR_SIDE),
    # a KTO row is scored with its mismatched (KL) sequence: 16 rows = the 8 pairs of dpo
    "kto": Stage("kto", batch=16, warmup=2, steps=10, tokens_per_sample=2 * _PAIR_SIDE),
    "orpo": Stage("orpo", batch=8, warmup=2, steps=10, tokens_per_sample=2 * _PAIR_SIDE),
    "simpo": Stage("simpo", batch=8, warmup=2, steps=10, tokens_per_sample=2 * _PAIR_SIDE),
    # a sample = one generated response (prompt + response tokens)
    # ppo: a separate critic on both sides (TRL 1.12's only design: the same arithmetic)
    "ppo": Stage("ppo", **_PPO_RUN),
    # this project's default PPO (the value head on the policy's trunk) against TRL 1.12's PPO,
    # which always trains a separate value model: the same job, each framework's design
    "ppo_shared": Stage("ppo_shared", **_PPO_RUN),
    # the same PPO with the value head on the policy's trunk (this project's default critic),
    # against the classic TRL PPOTrainer (0.11.x, AutoModelForCausalLMWithValueHead)
    "ppo_valuehead": Stage("ppo_valuehead", **_PPO_RUN),
    "grpo": Stage("grpo", **_GROUP_RUN),
    "rloo": Stage("rloo", **_GROUP_RUN),
    # two answers per prompt, ranked by the reward model, one DPO step per iteration
    "online_dpo": Stage(
        "online_dpo",
        batch=8,
        group=2,
        warmup=1,
        steps=5,
        tokens_per_sample=PROMPT_TOKENS + RESPONSE_TOKENS,
    ),
}
# KL / loss settings both sides use.
GRPO_BETA = 0.04
RLOO_BETA = 0.05
PPO_KL_COEF = 0.05
DPO_BETA = 0.1
KTO_BETA = 0.1
ORPO_LAMBDA = 0.1  # TRL's ORPOConfig.beta
SIMPO_BETA = 2.0
SIMPO_GAMMA = 1.0  # TRL's CPOConfig.simpo_gamma (in reward units, as this project's stage.gamma)
ONLINE_DPO_BETA = 0.1
MAX_GRAD_NORM = 1.0  # every stage but PPO (neither TRL PPO trainer clips gradients by default)


def describe() -> dict:
    """The workload as plain data (written next to every result)."""
    return {
        "version": VERSION,
        "model": {"type": "gpt2", **MODEL, "vocab_size": VOCAB_WORDS + 3, "dtype": "float32"},
        "sft_length": SFT_LENGTH,
        "pair_prompt_tokens": PAIR_PROMPT,
        "pair_completion_tokens": PAIR_COMPLETION + 1,
        "prompt_tokens": PROMPT_TOKENS,
        "response_tokens": RESPONSE_TOKENS,
        "lr": LR,
        "stages": {name: asdict(stage) for name, stage in STAGES.items()},
    }


def words(n: int) -> list[str]:
    return [f"w{i}" for i in range(n)]


def _text(rng: random.Random, vocab: list[str], n: int) -> str:
    return " ".join(rng.choice(vocab) for _ in range(n))


def build(workdir: Path = WORKDIR, force: bool = False) -> Path:
    """Write the tokenizer, the two models and the data files (once; `force` rebuilds)."""
    stamp = workdir / "workload.json"
    if not force and stamp.is_file() and json.loads(stamp.read_text()).get("version") == VERSION:
        return workdir
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        GPT2Config,
        GPT2ForSequenceClassification,
        GPT2LMHeadModel,
        PreTrainedTokenizerFast,
    )

    workdir.mkdir(parents=True, exist_ok=True)
    vocab_words = words(VOCAB_WORDS)
    vocab = {tok: i for i, tok in enumerate(["<eos>", "<unk>", "<unused>", *vocab_words])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<eos>",
        pad_token="<eos>",
        unk_token="<unk>",
        model_max_length=MODEL["n_positions"],
    )
    # WordLevel has no decoder: decode() joins tokens with spaces, which re-encodes the same.
    config = GPT2Config(
        vocab_size=len(vocab),
        **MODEL,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(SEED)
    policy = GPT2LMHeadModel(config)
    policy.generation_config.pad_token_id = tokenizer.pad_token_id
    policy.generation_config.eos_token_id = tokenizer.eos_token_id
    policy.generation_config.bos_token_id = None
    policy.save_pretrained(workdir / "policy")
    tokenizer.save_pretrained(workdir / "policy")
    reward_config = GPT2Config(**{**config.to_dict(), "id2label": {0: "LABEL_0"}})
    torch.manual_seed(SEED + 1)
    reward = GPT2ForSequenceClassification(reward_config)
    reward.save_pretrained(workdir / "reward")
    tokenizer.save_pretrained(workdir / "reward")

    for directory in ("policy", "reward"):
        # transformers 5 names its own class here; older ones (the classic TRL venv) need this one
        path = workdir / directory / "tokenizer_config.json"
        config_json = json.loads(path.read_text())
        config_json["tokenizer_class"] = "PreTrainedTokenizerFast"
        path.write_text(json.dumps(config_json, indent=2))

    rng = random.Random(SEED)
    with (workdir / "sft.jsonl").open("w") as f:
        for _ in range(512):
            f.write(json.dumps({"text": _text(rng, vocab_words, SFT_LENGTH + 40)}) + "\n")
    with (workdir / "pairs.jsonl").open("w") as f:
        for _ in range(512):
            row = {
                "prompt": _text(rng, vocab_words, PAIR_PROMPT),
                # the leading space: TRL joins prompt + completion as strings
                "chosen": " " + _text(rng, vocab_words, PAIR_COMPLETION),
                "rejected": " " + _text(rng, vocab_words, PAIR_COMPLETION),
            }
            f.write(json.dumps(row) + "\n")
    with (workdir / "pairs.jsonl").open() as pairs, (workdir / "kto.jsonl").open("w") as f:
        for line in pairs:
            pair = json.loads(line)
            for side, label in (("chosen", True), ("rejected", False)):
                row = {"prompt": pair["prompt"], "completion": pair[side], "label": label}
                f.write(json.dumps(row) + "\n")
    with (workdir / "prompts.jsonl").open("w") as f:
        for _ in range(512):
            # the trailing space: TRL scores prompt + completion joined as strings
            prompt = _text(rng, vocab_words, PROMPT_TOKENS) + " "
            f.write(json.dumps({"prompt": prompt}) + "\n")
    stamp.write_text(json.dumps(describe(), indent=2))
    return workdir


# --- shared by the runners ---------------------------------------------------------------


class StepWindow:
    """Wall time from the end of step `warmup` to the end of step `warmup + steps`.

    Both runners call `step_end()` at the end of every step (a Lightning `on_train_batch_end`,
    a transformers `on_step_end`), so the window starts and ends at the same point of a step on
    both sides and excludes model building, data preparation and the warm-up steps. The time of
    each timed step is kept too: their median shrugs off a short slow spell of a shared machine.
    """

    def __init__(self, warmup: int, steps: int, per_step: int = 1) -> None:
        self.per_step = per_step
        self.warmup = warmup * per_step
        self.end = (warmup + steps) * per_step
        self.count = 0
        self.start_time: float | None = None
        self.end_time: float | None = None
        self.marks: list[float] = []  # end of each step (iteration) from the window's start

    def step_end(self) -> None:
        import time

        self.count += 1
        now = time.perf_counter()
        if self.count == self.warmup:
            self.start_time = now
        elif self.count == self.end:
            self.end_time = now
        if self.warmup <= self.count <= self.end and self.count % self.per_step == 0:
            self.marks.append(now)

    @property
    def seconds(self) -> float:
        if self.start_time is None or self.end_time is None:
            raise RuntimeError(
                f"timing window incomplete: {self.count} steps seen, {self.end} needed"
            )
        return self.end_time - self.start_time

    @property
    def step_seconds(self) -> list[float]:
        """The duration of each timed step (iteration, for the online stages)."""
        return [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]


class ForwardTrace:
    """Counts GPT-2 backbone forwards by input shape and grad mode (`--trace` in the runners).

    Both frameworks run the same transformers GPT-2 code, so these counts show whether they do
    the same forward passes: every policy, reference, critic and reward forward passes here.
    """

    counts: dict[str, int] = {}

    @classmethod
    def install(cls) -> None:
        import torch
        from transformers.models.gpt2 import modeling_gpt2

        original = modeling_gpt2.GPT2Model.forward

        def forward(self, input_ids=None, *args, **kwargs):
            shape = "x".join(map(str, input_ids.shape)) if input_ids is not None else "embeds"
            key = f"{shape} {'grad' if torch.is_grad_enabled() else 'no_grad'}"
            cls.counts[key] = cls.counts.get(key, 0) + 1
            return original(self, input_ids, *args, **kwargs)

        modeling_gpt2.GPT2Model.forward = forward


def forward_tokens(counts: dict[str, int]) -> dict[str, int]:
    """Tokens through the backbone with and without grad, from `ForwardTrace.counts`."""
    totals = {"grad": 0, "no_grad": 0}
    for key, n in counts.items():
        shape, mode = key.split()
        if shape != "embeds":
            size = 1
            for dim in shape.split("x"):
                size *= int(dim)
            totals[mode] += size * n
    return totals


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set by an earlier parallel region
        torch.set_num_interop_threads(threads)


def result(stage: Stage, framework: str, version: str, window: StepWindow | float, **extra) -> dict:
    """One run's JSON: throughput from the stage's fixed work and the timed window."""
    import platform
    import resource
    import statistics

    import torch

    samples = stage.samples_per_step * stage.steps
    tokens = samples * stage.tokens_per_sample
    seconds = window if isinstance(window, float) else window.seconds
    steps = [] if isinstance(window, float) else window.step_seconds
    return {
        "stage": stage.name,
        "framework": framework,
        "version": version,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "timed_steps": stage.steps,
        "samples": samples,
        "tokens": tokens,
        "wall_s": seconds,
        "samples_per_s": samples / seconds,
        "tokens_per_s": tokens / seconds,
        "step_s": [round(x, 5) for x in steps],
        "step_s_median": statistics.median(steps) if steps else None,
        # Linux: kilobytes. The whole process: imports, models, data, training.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **extra,
    }


def finish(res: dict, traced: bool, out: str | None) -> None:
    """Add the thread setting and (with --trace) the forward counts of the whole run, warm-up
    included (the same number of steps on both sides), then `emit`."""
    res["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
    if traced:
        res["forwards"] = dict(sorted(ForwardTrace.counts.items()))
        res["forward_tokens"] = forward_tokens(ForwardTrace.counts)
    emit(res, out)


def emit(res: dict, out: str | None) -> None:
    text = json.dumps(res, indent=2)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    print("BENCH_RESULT " + json.dumps(res))
