"""The progress bar shows the run's metrics, not the logger's version number."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar

from rlhf_lightning.callbacks import RunProgressBar


def test_progress_bar_drops_the_logger_version(monkeypatch):
    monkeypatch.setattr(
        RichProgressBar, "get_metrics", lambda self, trainer, module: {"v_num": 3, "loss": 0.5}
    )
    assert RunProgressBar().get_metrics(None, None) == {"loss": 0.5}
