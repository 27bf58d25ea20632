"""Run reports and sweep tables, read from run directories (the run-directory contract).

`write_report(run_dir)` draws a run's curves and writes one page; `write_sweep(multirun_dir)`
puts the jobs of a Hydra multirun side by side. From the shell:

    python -m rlhf_lightning.report <run_dir> [--format html|md]
    python -m rlhf_lightning.report --sweep <multirun_dir>
"""

from __future__ import annotations

from pathlib import Path

from rlhf_lightning.errors import ConfigError
from rlhf_lightning.report.sweep import SweepTable, write_sweep

__all__ = ["FORMATS", "SweepTable", "write_report", "write_sweep"]

FORMATS = ("html", "md")
# A directory holding none of these is not a run directory: an error, not an empty page.
RUN_FILES = ("metrics.csv", "metrics.json", ".hydra/config.yaml", "samples.jsonl")


def write_report(run_dir: Path, fmt: str = "html") -> Path:
    """Write the report of one run into `<run_dir>/report/` and return the page's path.

    Writes, only for the metrics the run logged:
      - `losses.png`: every `*loss*` metric, one panel per loss, train and val together;
      - `reward_kl.png` (RL stages): reward mean ± std band (left axis) and KL (right axis);
      - `response_length.png` (RL stages): mean response length, with the EOS rate;
      - `accuracy.png` (reward, DPO): `val/accuracy` against the 0.5 chance line;
      - `perplexity.png` (SFT): `val/perplexity`, with the unigram baseline when logged;
    and the page, `index.html` (or `index.md` with ``fmt="md"``): stage, run directory,
    wall time, final metrics, the plots and, when the run logged samples.jsonl (RL stages),
    the end-of-run reference-vs-trained comparison on the same prompts and the samples at the
    first logged step next to those at the last. Missing, empty or malformed
    run files are listed on the page, not raised. A figure drawn by an earlier report whose
    metrics are now absent is deleted, so the directory matches the page. Costs about 1.5 s
    of CPU for a usual run, half of it importing matplotlib.

    Args:
        run_dir: a run directory (holds metrics.csv, metrics.json, .hydra/config.yaml and,
            for RL stages, samples.jsonl).
        fmt: "html" or "md".

    Raises:
        ConfigError: `run_dir` is not a directory or holds none of the run files, or `fmt`
            is unknown. Anything else (an unwritable directory, a plotting failure)
            propagates: the caller decides whether a failed report may fail a run.
    """
    # Imported here so `import rlhf_lightning.report` (and the sweep table) stays light.
    from rlhf_lightning.report.page import Samples, render_html, render_markdown
    from rlhf_lightning.report.plots import write_plots
    from rlhf_lightning.report.rundata import load_run
    from rlhf_lightning.report.samples import before_after, reference_comparison, split_samples

    run_dir = Path(run_dir)
    if fmt not in FORMATS:
        raise ConfigError(f"report format={fmt}: unknown format. Fix: one of {', '.join(FORMATS)}.")
    if not run_dir.is_dir():
        raise ConfigError(
            f"report {run_dir}: no such run directory. Fix: pass the directory a run wrote "
            "(its hydra.run.dir, holding metrics.csv and metrics.json)."
        )
    if not any((run_dir / name).exists() for name in RUN_FILES):
        raise ConfigError(
            f"report {run_dir}: not a run directory (none of {', '.join(RUN_FILES)} in it). "
            "Fix: pass the directory a run wrote (its hydra.run.dir)."
        )
    data = load_run(run_dir)
    out_dir = run_dir / "report"
    out_dir.mkdir(exist_ok=True)
    plots = write_plots(data.series, out_dir)
    samples = None
    if data.is_rl or data.samples:
        during, comparison = split_samples(data.samples)
        samples = Samples(before_after(during), reference_comparison(comparison))
    if fmt == "html":
        page, text = out_dir / "index.html", render_html(data, plots, samples)
    else:
        page, text = out_dir / "index.md", render_markdown(data, plots, samples)
    page.write_text(text, encoding="utf-8")
    return page
