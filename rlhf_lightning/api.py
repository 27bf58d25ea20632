"""One call per stage for notebooks and scripts; the same config and code path as the CLI.

    from rlhf_lightning import api

    sft = api.sft("tiny", max_steps=60, overrides=["data=tiny"])
    rm = api.reward(sft.model_dir, calibrate_on=sft.model_dir, overrides=["data=tiny_pairs"])
    ppo = api.ppo(sft.model_dir, reward_model=rm.model_dir, iterations=20)
    ppo.metrics["rollout/reward_mean"], ppo.model_dir

Each call is `python -m rlhf_lightning stage=<stage> <overrides>` run in this process: the
keyword arguments are shorthands for overrides, and `overrides` takes any other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from rlhf_lightning.builtins import resolve_builtins
from rlhf_lightning.config import compose_stage
from rlhf_lightning.errors import ConfigError
from rlhf_lightning.rundir import record_overrides

_BUILTIN_MODELS = {"demo", "tiny", "tiny_llama"}


@dataclass
class StageResult:
    """What a finished stage leaves behind."""

    run_dir: Path
    metrics: dict[str, float]
    global_step: int

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "model"


def compose_config(
    stage: str, overrides: Sequence[str] = (), run_dir: str | Path | None = None
) -> DictConfig:
    """The config `python -m rlhf_lightning stage=<stage> <overrides>` would run with, built-in
    model names resolved to directories (built on first use)."""
    return resolve_builtins(compose_stage(stage, overrides, run_dir))


def execute(cfg: DictConfig, dataset: Any = None) -> dict[str, Any]:
    """Run a composed config as the CLI would: built-in model names resolved (and built on first
    use), then ``train.run``. Returns the ``metrics.json`` summary."""
    from rlhf_lightning.train import run

    return run(resolve_builtins(cfg), dataset=dataset)


def run_stage(
    stage: str,
    model: str | Path | None = None,
    *,
    dataset: Any = None,
    output_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> StageResult:
    """Run any stage, as `python -m rlhf_lightning stage=<stage> <overrides>` would.

    Args:
        stage: `sft`, `reward`, `ppo`, `dpo`, `grpo` or `rloo`.
        model: `demo`, `tiny`, `tiny_llama`, a hub id, or a local model directory (e.g. the
            `model_dir` of an earlier result); None keeps the stage's default model.
        dataset: a `datasets.Dataset` / `DatasetDict`, or a path / hub name (`data.path`);
            None keeps the stage's default data.
        output_dir: the run directory; None: ``outputs/<stage>/<date>_<time>`` under the
            current directory, as the CLI's.
        overrides: CLI-style overrides, e.g. `["optim.lr=3e-5", "data=tiny"]`; they come after
            the ones the arguments above make, so they win.

    Returns:
        The run directory, the last value of every metric, and the optimizer step count.
    """
    args = [] if model is None else _model_overrides(str(model))
    in_memory = dataset is not None and not isinstance(dataset, (str, Path))
    if dataset is not None and not in_memory:
        args.append(f"data.path={dataset}")
    cfg = compose_stage(stage, [*args, *overrides], output_dir)
    # What the CLI's Hydra records: the model card's command that reproduces this run.
    record_overrides(Path(cfg.run_dir), [f"stage={stage}", *args, *overrides])
    summary = execute(cfg, dataset=dataset if in_memory else None)
    return StageResult(Path(summary["run_dir"]), summary["metrics"], summary["global_step"])


def sft(
    model: str | Path = "demo",
    dataset: Any = None,
    *,
    text_field: str | None = None,
    prompt_field: str | None = None,
    completion_field: str | None = None,
    messages_field: str | None = None,
    max_length: int | None = None,
    max_steps: int | None = None,
    lora: bool = False,
    output_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> StageResult:
    """Fine-tune `model` on `dataset` and return the run's metrics and export directory.

    Args:
        model: `demo`, `tiny`, `tiny_llama`, a hub id, or a local model directory.
        dataset: a `datasets.Dataset` / `DatasetDict`, or a path / hub name (`data.path`);
            None uses the embedded demo corpus.
        text_field / prompt_field / completion_field / messages_field: dataset column names
            when they differ from `text`, `prompt`, `completion`, `messages`.
        max_length: tokens per example.
        max_steps: optimizer steps.
        lora: train a LoRA adapter instead of all weights.
        output_dir: the run directory; None: ``outputs/<stage>/<date>_<time>`` under the
            current directory, as the CLI's.
        overrides: any further CLI-style overrides, e.g. `["optim.lr=3e-5"]`.
    """
    args = []
    for canonical, column in (
        ("text", text_field),
        ("prompt", prompt_field),
        ("completion", completion_field),
        ("messages", messages_field),
    ):
        if column is not None:
            args.append(f"data.columns.{canonical}={column}")
    if max_length is not None:
        args.append(f"data.max_length={max_length}")
    args += _common_overrides(max_steps=max_steps, lora=lora)
    return run_stage(
        "sft", model, dataset=dataset, output_dir=output_dir, overrides=[*args, *overrides]
    )


def reward(
    backbone: str | Path | None = None,
    dataset: Any = None,
    *,
    calibrate_on: str | Path | None = None,
    max_steps: int | None = None,
    lora: bool = False,
    output_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> StageResult:
    """Train a reward model (a scalar head on `backbone`) on preference pairs.

    Args:
        backbone: a model directory (typically the SFT result's `model_dir`), a hub id, `tiny`,
            or `minilm`; None is the stage default, the demo SFT policy (built on first use).
        dataset: pairs with `prompt`/`chosen`/`rejected` (or `chosen`/`rejected`) columns, as a
            `datasets.Dataset` or a path; None uses the demo pairs.
        calibrate_on: a policy (model directory or `demo:sft`) whose sampled completions then
            score mean 0, std 1, stored in the exported config; None leaves scores raw. (The CLI
            calibrates on `demo:sft` by default; here it is opt-in, so that a tiny run never
            builds the demo policy as a side effect.)
        max_steps: optimizer steps.
        lora: train a LoRA adapter and the head instead of all weights.
        output_dir: the run directory; None: ``outputs/<stage>/<date>_<time>`` under the
            current directory, as the CLI's.
        overrides: any further CLI-style overrides, e.g. `["data=tiny_pairs"]`.

    Returns:
        The result; `model_dir` loads with `ModelReward.from_pretrained` and feeds `api.ppo`.
    """
    if calibrate_on is None:
        args = ["stage.calibration=null"]
    else:
        args = [f"stage.calibration.policy={calibrate_on}"]
    args += _common_overrides(max_steps=max_steps, lora=lora)
    return run_stage(
        "reward", backbone, dataset=dataset, output_dir=output_dir, overrides=[*args, *overrides]
    )


def ppo(
    policy: str | Path | None = None,
    dataset: Any = None,
    *,
    reward_model: str | Path | None = None,
    reward_fn: str | Callable[..., Any] | None = None,
    iterations: int | None = None,
    lora: bool = False,
    output_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> StageResult:
    """Optimise `policy` with PPO against a reward model or a Python reward function.

    Args:
        policy: a causal LM directory (typically the SFT result's `model_dir`), a hub id, or
            `tiny`; None is the stage default, the demo SFT policy (built on first use).
        dataset: prompts (a `prompt` column; other columns reach `reward_fn` as keyword
            arguments), as a `datasets.Dataset` or a path; None uses openings of demo texts.
        reward_model: a reward model directory (`reward=model reward.path=...`).
        reward_fn: a function `(prompts, completions, **columns) -> one float each`, or its
            import path `package.module:function` (`reward=callable reward.function=...`). A
            function object must be importable by that path, which the saved config records.
        iterations: PPO iterations (rollout + optimisation).
        lora: train a LoRA adapter (the adapter-off base is then the reference).
        output_dir: the run directory; None: ``outputs/<stage>/<date>_<time>`` under the
            current directory, as the CLI's.
        overrides: any further CLI-style overrides, e.g. `["stage.algorithm.kl_coef=0.1"]`.

    With neither reward given, the stage default scores: the calibrated demo reward model.
    `samples.jsonl` in the run directory holds sampled completions and their rewards.
    """
    args = _reward_overrides(reward_model, reward_fn)
    if iterations is not None:
        args.append(f"stage.iterations={iterations}")
    args += _common_overrides(lora=lora)
    return run_stage(
        "ppo", policy, dataset=dataset, output_dir=output_dir, overrides=[*args, *overrides]
    )


def _model_overrides(model: str) -> list[str]:
    if model in _BUILTIN_MODELS:
        return [f"model={model}"]
    return ["model=pretrained", f"model.name_or_path={model}"]


def _common_overrides(max_steps: int | None = None, lora: bool = False) -> list[str]:
    args = []
    if max_steps is not None:
        args.append(f"trainer.max_steps={max_steps}")
    if lora:
        args.append("model.lora.enabled=true")
    return args


def _reward_overrides(
    reward_model: str | Path | None, reward_fn: str | Callable[..., Any] | None
) -> list[str]:
    """`reward=model|callable` overrides for the one reward source given (none: the default)."""
    if reward_model is not None and reward_fn is not None:
        raise ConfigError(
            "api.ppo: both reward_model and reward_fn given. Fix: pass one of them "
            "(combine sources with overrides=['reward=mix', ...])."
        )
    if reward_model is not None:
        return ["reward=model", f"reward.path={reward_model}"]
    if reward_fn is not None:
        return ["reward=callable", f"reward.function={_import_path(reward_fn)}"]
    return []


def _import_path(function: str | Callable[..., Any]) -> str:
    """`package.module:function` for a function object, checked to import back to it.

    The stage builds its reward from the config, and the config must say where the function
    lives, so a lambda or a function nested in another one cannot be passed by object.
    """
    from rlhf_lightning.rewards.callable import function_name, resolve_function

    if isinstance(function, str):
        return function
    name = function_name(function)
    try:
        found = resolve_function(name)
    except Exception:  # any import failure means the same: not reachable by its name
        found = None
    if found is not function:
        raise ConfigError(
            f"api.ppo: reward_fn {name} cannot be imported by that name. Fix: define it at the "
            "top level of a module (or a notebook cell), or pass 'package.module:function'."
        )
    return name
