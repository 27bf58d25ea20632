"""The model card of a run's export: what the run's config, metrics and command say.

The export itself writes a card from the model object alone (``models.card``); the runner then
replaces it with this fuller one, written after the fit so that the final metrics are in it.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from rlhf_lightning.models.card import ModelCard, write_model_card
from rlhf_lightning.models.export import merged_card
from rlhf_lightning.rundir import last_logged_values, redact_override

# Settings worth a row in the card, when the stage has them (dotted config keys).
_KEY_SETTINGS = (
    "optim.lr",
    "optim.weight_decay",
    "trainer.max_steps",
    "stage.iterations",
    "data.batch_size",
    "data.max_length",
    "trainer.accumulate_grad_batches",
    "trainer.precision",
    "stage.beta",
    "stage.loss_type",
    "stage.center_coef",
    "stage.critic",
    "stage.algorithm.kl_coef",
    "stage.algorithm.adaptive_kl",
    "stage.algorithm.group_size",
    "stage.algorithm.epochs",
    "stage.algorithm.num_minibatches",
    "stage.algorithm.advantage._target_",
    "stage.algorithm.policy_loss._target_",
    "stage.algorithm.aggregation._target_",
    "stage.sampling.max_new_tokens",
    "stage.sampling.temperature",
    "reward._target_",
    "reward.function",
    "reward.path",
    "model.lora.r",
    "model.lora.alpha",
    "seed",
)
_RL_ONLY = ("stage.iterations",)


def write_run_card(
    cfg: DictConfig, run_dir: Path, global_step: int, in_memory_data: bool = False
) -> None:
    """Write the run's card into ``<run_dir>/model`` (and ``model/merged`` when written)."""
    model_dir = run_dir / "model"
    if not model_dir.is_dir():
        return
    card = run_card(cfg, run_dir, global_step, in_memory_data)
    title = f"{cfg.stage.name}: {run_dir.name}"
    write_model_card(model_dir, card, title)
    if (model_dir / "merged").is_dir():
        write_model_card(model_dir / "merged", merged_card(card), f"{title} (merged)")


def run_card(
    cfg: DictConfig, run_dir: Path, global_step: int, in_memory_data: bool = False
) -> ModelCard:
    """The card of the run in `run_dir` (its export already written)."""
    plain: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    model, stage = plain.get("model") or {}, plain.get("stage") or {}
    model_dir = run_dir / "model"
    adapter = (model_dir / "adapter_config.json").is_file()
    kind = "value_head" if (model_dir / "value_head.safetensors").is_file() else "causal_lm"
    if stage.get("_target_", "").endswith("RewardModule"):
        kind = "reward"
    notes = [f"{global_step} optimizer steps; the run directory was `{run_dir}`."]
    calibration = _reward_calibration(model_dir)
    if calibration:
        notes.append(
            f"Scores are calibrated on the starting policy (mean {calibration['mean']:.4g}, "
            f"std {calibration['std']:.4g} subtracted and divided by `ModelReward`)."
        )
    data_path = (plain.get("data") or {}).get("path")
    if in_memory_data:
        notes.append(
            "It trained on an in-memory `datasets.Dataset`: save it (`dataset.to_json(...)`) "
            "and add `data.path=<file>` to the command to reproduce the run."
        )
    return ModelCard(
        base_model=model.get("name_or_path"),
        architecture=_architecture(model.get("arch")),
        kind=kind,
        adapter=adapter,
        stage=stage.get("name"),
        trained_by=str(stage.get("_target_", "")).rsplit(".", 1)[-1] or None,
        datasets=[] if in_memory_data or data_path is None else [str(data_path)],
        config=_settings(plain),
        metrics=_final_metrics(run_dir),
        command=_command(run_dir, plain),
        notes=notes,
    )


def _final_metrics(run_dir: Path) -> dict[str, float]:
    # The learning-rate monitor's columns are settings, shown above as optim.lr.
    values = last_logged_values(run_dir / "metrics.csv")
    return {k: v for k, v in values.items() if not k.startswith("lr-")}


def _settings(plain: dict[str, Any]) -> dict[str, Any]:
    rl = "iterations" in (plain.get("stage") or {})
    node = OmegaConf.create(plain)
    lora = bool(OmegaConf.select(node, "model.lora.enabled", default=False))
    found = {}
    for key in _KEY_SETTINGS:
        value = OmegaConf.select(node, key, default=None)
        if value is None or (rl and key == "trainer.max_steps"):
            continue  # RL stages count iterations; trainer.max_steps is -1 there
        if key in _RL_ONLY and not rl or (key.startswith("model.lora.") and not lora):
            continue
        if key.endswith("_target_"):
            value = str(value).rsplit(".", 1)[-1]
            key = key.removesuffix("._target_")
        found[key] = value
    return found


def _architecture(arch: dict[str, Any] | None) -> str | None:
    if not arch:
        return None
    fields = {k: v for k, v in arch.items() if k != "type" and not k.endswith("pdrop")}
    return f"{arch.get('type')}: " + ", ".join(f"{k}={v}" for k, v in fields.items())


def _command(run_dir: Path, plain: dict[str, Any]) -> str:
    """The command line that ran (Hydra's overrides.yaml), else the saved config's."""
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if overrides_file.is_file():
        overrides = yaml.safe_load(overrides_file.read_text()) or []
        words = (shlex.quote(redact_override(str(o))) for o in overrides)
        return "python -m rlhf_lightning " + " ".join(words)
    stage = (plain.get("stage") or {}).get("name", "sft")
    return (
        f"# the resolved config of this run is {run_dir}/.hydra/config.yaml\n"
        f"python -m rlhf_lightning stage={stage} ...  # with the overrides that made it"
    )


def _reward_calibration(model_dir: Path) -> dict[str, float] | None:
    config = model_dir / "config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text()).get("reward_calibration")
