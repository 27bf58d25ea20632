"""`python -m rlhf_lightning stage=<name> [group=option ...] [key=value ...]`"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from rlhf_lightning.errors import RLHFError
from rlhf_lightning.paths import config_dir


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> float | None:
    from rlhf_lightning.chain import run_chain
    from rlhf_lightning.pipeline import run_pipeline

    try:
        pipeline = cfg.stage.name == "pipeline"
        # run_chain runs the stages cfg.chain lists first (none: just this run).
        summary = run_pipeline(cfg) if pipeline else run_chain(cfg)
    except RLHFError as err:
        logging.getLogger("rlhf_lightning").error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(getattr(err, "exit_code", 2))
    return summary["metrics"].get("val/loss")


if __name__ == "__main__":
    main()
