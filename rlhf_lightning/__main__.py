"""`python -m rlhf_lightning stage=<name> [group=option ...] [key=value ...]`; `--help` lists them."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from rlhf_lightning.cli import USER_ERROR_EXIT, help_text, hydra_error_message, report_error
from rlhf_lightning.errors import RLHFError
from rlhf_lightning.paths import config_dir


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def run_command(cfg: DictConfig) -> float | None:
    from rlhf_lightning.chain import run_chain
    from rlhf_lightning.pipeline import run_pipeline

    try:
        pipeline = cfg.stage.name == "pipeline"
        # run_chain runs the stages cfg.chain lists first (none: just this run).
        summary = run_pipeline(cfg) if pipeline else run_chain(cfg)
    except RLHFError as err:
        report_error(str(err))
        sys.exit(getattr(err, "exit_code", USER_ERROR_EXIT))
    return summary["metrics"].get("val/loss")


def main() -> None:
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(help_text())
        return
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        run_command()  # who set it wants Hydra's full traces
        return
    try:
        with _hydra_raises():
            run_command()
    except (HydraException, OmegaConfBaseException) as err:
        # A mistake in the command line (an unknown option, a key not in the config, a value
        # left ???): the same exit code and message style as the project's own errors.
        report_error(hydra_error_message(err))
        sys.exit(USER_ERROR_EXIT)


@contextmanager
def _hydra_raises() -> Iterator[None]:
    """Let Hydra raise its errors instead of printing them and exiting 1 (its only switch for
    that is this environment variable)."""
    before = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


if __name__ == "__main__":
    main()
