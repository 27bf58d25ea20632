"""Chained recipes: stages that run before a run and hand it their model, in one command.

A config's ``chain`` lists earlier stage runs, each ``{name, stage, overrides}``. They run in
order, each in ``<run_dir>/<name>/`` with the usual run-directory contract, composed exactly
as ``python -m rlhf_lightning stage=<stage> <overrides>`` would be; each one's exported model
becomes the next one's model (``model=pretrained model.name_or_path=<previous>/model``, or its
``model/merged`` when a LoRA run exported one), and
the last one's becomes this run's ``model.name_or_path``. Then this run runs as usual in
``<run_dir>`` itself, so its metrics, its sweep row and its report are those of a plain run.

    chain:                       # e.g. conf/experiment/rlvr_arithmetic.yaml
      - name: sft
        stage: sft
        overrides: [data=demo, data.path=arithmetic, trainer.max_steps=600]

The chain runs only while this run's ``model.name_or_path`` is unset (null): giving one
(e.g. ``model.name_or_path=<earlier run>/sft/model``) skips the chain and starts from it, which
is how a sweep shares one warm-up. ``chain=[]`` turns it off. ``seed``, ``threads``, ``logger``,
``callbacks`` and the trainer's placement reach every chained stage, as in ``stage=pipeline``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from rlhf_lightning.builtins import resolve_builtins
from rlhf_lightning.config import compose_stage, share_run_settings
from rlhf_lightning.errors import ConfigError
from rlhf_lightning.train import run

log = logging.getLogger(__name__)


def run_chain(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg.chain`` (when this run's model is unset), then ``cfg`` itself.

    Returns:
        This run's metrics.json summary; ``chain`` lists the chained runs' directories.
    """
    steps = list(cfg.get("chain") or [])
    given = None if OmegaConf.is_missing(cfg.model, "name_or_path") else cfg.model.name_or_path
    if not steps or given is not None:
        if steps:
            log.info("Chain skipped: model.name_or_path=%s is given.", given)
        return run(resolve_builtins(cfg))
    run_dir = Path(cfg.run_dir).expanduser().resolve()
    model_dir: Path | None = None
    chained = []
    for index, step in enumerate(steps):
        name, stage, overrides = _step_fields(step, index)
        links = [] if model_dir is None else ["model=pretrained", f"model.name_or_path={model_dir}"]
        sub = compose_stage(stage, [*overrides, *links], run_dir=run_dir / name)
        share_run_settings(sub, cfg, group=run_dir.name)
        log.info("Chain: %s (stage=%s) -> %s", name, stage, sub.run_dir)
        summary = run(resolve_builtins(sub))
        model_dir = exported_model(Path(summary["run_dir"]))
        chained.append({"name": name, "stage": stage, "run_dir": summary["run_dir"]})
    with open_dict(cfg):  # before run() saves the config: the saved one names this directory
        cfg.model.name_or_path = str(model_dir)
    log.info("Chain: %s starts from %s", cfg.stage.name, model_dir)
    summary = run(resolve_builtins(cfg))
    return {**summary, "chain": chained}


def exported_model(run_dir: Path) -> Path:
    """The model a chained run hands on: ``model/``, or ``model/merged`` when a LoRA run
    exported its adapter merged (``model.lora.merge_on_export=true``), so the next stage loads
    plain weights and may put a fresh adapter of its own on them."""
    merged = run_dir / "model" / "merged"
    return merged if (merged / "config.json").is_file() else run_dir / "model"


def _step_fields(step: Any, index: int) -> tuple[str, str, list[str]]:
    """(name, stage, overrides) of one chain entry, or one error naming what is wrong."""
    if not isinstance(step, DictConfig) or "stage" not in step:
        raise ConfigError(
            f"chain[{index}]={step!r}: each chained run is a mapping with a stage. Fix: "
            "{name: sft, stage: sft, overrides: [key=value, ...]}."
        )
    overrides = step.get("overrides") or []
    if not all(isinstance(o, str) for o in overrides):
        raise ConfigError(
            f"chain[{index}].overrides={list(overrides)!r}: must be override strings. Fix: "
            "write them as on the command line, e.g. trainer.max_steps=600."
        )
    return str(step.get("name") or step.stage), str(step.stage), list(overrides)
