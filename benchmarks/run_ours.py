"""Run one benchmark stage through this project (the CLI's config composition and `train.run`).

    python benchmarks/run_ours.py --stage sft [--threads 1] [--out result.json]

The same code path as `python -m rlhf_lightning stage=<stage> ...`: the overrides below are
what a user would type. Things outside the timed window are switched off to keep the whole
benchmark short (export, report, samples and the end-of-run comparison); inside the window the
stage runs as configured, with the CSV logger (always on: the run-directory contract) and the
default callbacks. Prints one `BENCH_RESULT {...}` line; `--out` also writes it as JSON.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload  # noqa: E402


def overrides(stage: workload.Stage, work: Path) -> list[str]:
    policy, reward = work / "policy", work / "reward"
    common = [
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",  # TRL side: disable_tqdm=True
        "trainer.enable_model_summary=false",
        "checkpoint.every_n_steps=1000000",  # TRL side: save_strategy="no"
        "export.enabled=false",
        "report=false",
        f"optim.lr={workload.LR}",
        "optim.weight_decay=0.0",
        "scheduler.warmup_ratio=0.0",
        "scheduler.decay=constant",
        f"seed={workload.SEED}",
    ]
    offline = [
        f"trainer.gradient_clip_val={workload.MAX_GRAD_NORM}",
        "stage.validate_at_start=false",  # TRL side: eval_strategy="no"
        "trainer.limit_val_batches=0",
        f"trainer.max_steps={stage.warmup + stage.steps}",
        f"data.batch_size={stage.batch}",
    ]
    online = [
        f"model.name_or_path={policy}",
        "reward=model",
        f"reward.path={reward}",
        f"data.path={work / 'prompts.jsonl'}",
        f"data.batch_size={stage.batch}",
        f"stage.iterations={stage.warmup + stage.steps}",
        "stage.compare_prompts=0",
        "stage.sample_every=1000000",
    ]
    if stage.name == "sft":
        return [
            "model=pretrained",
            f"model.name_or_path={policy}",
            f"data.path={work / 'sft.jsonl'}",
            f"data.max_length={workload.SFT_LENGTH}",
            "stage.num_samples=0",
            *offline,
            *common,
        ]
    if stage.name in ("reward", "dpo", "kto", "orpo", "simpo"):
        data = "kto.jsonl" if stage.name == "kto" else "pairs.jsonl"
        pairs = [
            "model=pretrained",
            f"model.name_or_path={policy}",
            f"data.path={work / data}",
            "data.max_length=256",  # no truncation: every side is PAIR_PROMPT + PAIR_COMPLETION + 1
            *offline,
            *common,
        ]
        if stage.name == "reward":
            return [*pairs, "stage.calibration=null"]
        if stage.name == "kto":
            return [*pairs, f"stage.beta={workload.KTO_BETA}", "stage.reference=copy"]
        if stage.name == "orpo":
            return [*pairs, f"stage.lam={workload.ORPO_LAMBDA}"]
        if stage.name == "simpo":
            return [
                *pairs,
                f"stage.beta={workload.SIMPO_BETA}",
                f"stage.gamma={workload.SIMPO_GAMMA}",
            ]
        return [
            *pairs,
            f"stage.beta={workload.DPO_BETA}",
            "stage.loss_type=sigmoid",
            "stage.reference=copy",
        ]
    if stage.name in ("ppo", "ppo_shared", "ppo_valuehead"):
        if stage.name == "ppo":
            # TRL's PPO has a separate critic initialised from the reward model; so does this run.
            critic = ["stage.critic=separate", f"stage.critic_init={reward}"]
        else:  # a value head on the policy's trunk, as classic TRL's AutoModelForCausalLMWithValueHead
            critic = ["stage.critic=shared"]
        return [
            "model=pretrained",
            *online,
            "stage.reference=copy",
            *critic,
            f"stage.sampling.max_new_tokens={workload.RESPONSE_TOKENS}",
            f"stage.sampling.min_new_tokens={workload.RESPONSE_TOKENS}",
            f"stage.algorithm.epochs={stage.epochs}",
            f"stage.algorithm.num_minibatches={stage.minibatches}",
            f"stage.algorithm.kl_coef={workload.PPO_KL_COEF}",
            "stage.algorithm.max_grad_norm=null",  # TRL's PPO trainers do not clip by default
            *common,
        ]
    if stage.name in ("grpo", "rloo"):
        beta = workload.GRPO_BETA if stage.name == "grpo" else workload.RLOO_BETA
        return [
            "model=pretrained",
            *online,
            "stage.reference=copy",
            f"stage.algorithm.group_size={stage.group}",
            f"stage.algorithm.epochs={stage.epochs}",
            f"stage.algorithm.num_minibatches={stage.minibatches}",
            f"stage.sampling.max_new_tokens={workload.RESPONSE_TOKENS}",
            f"stage.sampling.min_new_tokens={workload.RESPONSE_TOKENS}",
            f"stage.algorithm.kl_coef={beta}",
            f"stage.algorithm.max_grad_norm={workload.MAX_GRAD_NORM}",
            *common,
        ]
    if stage.name == "online_dpo":
        return [
            "model=pretrained",
            *online,
            "stage.reference=copy",
            f"stage.sampling.max_new_tokens={workload.RESPONSE_TOKENS}",
            f"stage.sampling.min_new_tokens={workload.RESPONSE_TOKENS}",
            f"stage.beta={workload.ONLINE_DPO_BETA}",
            f"stage.max_grad_norm={workload.MAX_GRAD_NORM}",
            *common,
        ]
    raise SystemExit(f"unknown stage {stage.name}")


STAGE_OF = {"ppo_valuehead": "ppo", "ppo_shared": "ppo"}  # benchmark name -> the CLI's stage=


def phase_split(metrics_csv: Path, stage: workload.Stage) -> dict[str, float]:
    """Seconds per phase (perf/*_s) summed over the timed iterations (warm-up rows skipped)."""
    with metrics_csv.open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("perf/rollout_s")]
    timed = rows[stage.warmup : stage.warmup + stage.steps]
    names = ("rollout", "scoring", "experience", "optimising")
    # online DPO has no experience phase: its reference forward is part of its update
    return {name: sum(float(r.get(f"perf/{name}_s") or 0.0) for r in timed) for name in names}


class LightningTimer:
    window: workload.StepWindow | None = None


def timer():
    """The Lightning callback that ends each step of the timing window (`_target_` of it)."""
    import lightning as L

    class Timer(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            LightningTimer.window.step_end()

    return Timer()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True, choices=sorted(workload.STAGES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out")
    parser.add_argument("--workdir", type=Path, default=workload.WORKDIR)
    parser.add_argument("--trace", action="store_true", help="count backbone forwards by shape")
    parser.add_argument("overrides", nargs="*", help="extra CLI overrides (key=value)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args()
    sys.modules.setdefault("run_ours", sys.modules[__name__])  # the callback's _target_
    workload.set_threads(args.threads)
    if args.trace:
        workload.ForwardTrace.install()
    stage = workload.STAGES[args.stage]
    work = workload.build(args.workdir)

    from omegaconf import open_dict

    import rlhf_lightning
    from rlhf_lightning.api import compose_config
    from rlhf_lightning.train import run

    window = workload.StepWindow(stage.warmup, stage.steps)
    LightningTimer.window = window
    run_dir = Path(tempfile.mkdtemp(prefix=f"bench-ours-{stage.name}-"))
    cfg = compose_config(
        STAGE_OF.get(stage.name, stage.name),
        [*overrides(stage, work), *args.overrides],
        run_dir=run_dir,
    )
    with open_dict(cfg):  # one more callback, instantiated by the stage like the configured ones
        cfg.callbacks = {**(cfg.callbacks or {}), "bench_timer": {"_target_": "run_ours.timer"}}
    run(cfg)
    extra = {"overrides": overrides(stage, work) + args.overrides}
    if stage.name in ("ppo", "ppo_shared", "ppo_valuehead", "grpo", "rloo", "online_dpo"):
        extra["phases_s"] = phase_split(run_dir / "metrics.csv", stage)
    if args.keep:
        extra["run_dir"] = str(run_dir)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    version = getattr(rlhf_lightning, "__version__", "dev")
    extra["source"] = str(Path(rlhf_lightning.__file__).resolve().parent.parent)
    res = workload.result(stage, "rlhf_lightning", version, window, **extra)
    workload.finish(res, args.trace, args.out)


if __name__ == "__main__":
    main()
