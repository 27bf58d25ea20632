"""The report's figures: one PNG per figure, drawn only when its metrics were logged.

Figures are `matplotlib.figure.Figure` objects saved with the Agg renderer, never made through
`pyplot`: writing a report then neither switches the caller's backend nor touches pyplot's
global figure registry (the report runs at the end of training, inside the caller's process).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from rlhf_lightning.report.rundata import Series

DPI = 150
STEP_LABEL = "training step"
# Fonts large enough to read at the page's width; a light grid to read values off.
STYLE = {
    "font.size": 10,
    "axes.titlesize": 12,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
}
TRAIN, VAL, KL, EXTRA = "tab:blue", "tab:orange", "tab:red", "tab:green"
# A curve with more points than this is drawn faintly with a moving average over it.
SMOOTH_ABOVE = 30


@dataclass
class Plot:
    """A written figure: its file name (relative to the report directory) and title."""

    filename: str
    title: str


def write_plots(series: dict[str, Series], out_dir: Path) -> list[Plot]:
    """Draw every figure whose metrics are present into `out_dir`; return those written."""
    plots = []
    with matplotlib.rc_context(STYLE):
        for filename, title, draw in FIGURES:
            fig = draw(series)
            if fig is None:
                # A figure left by an earlier report of this run would no longer match the page.
                (out_dir / filename).unlink(missing_ok=True)
                continue
            rl_run = "rollout/reward_mean" in series
            for ax in fig.axes:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole
                if rl_run and ax.get_xlabel() == STEP_LABEL:
                    # The online RL stages log once per iteration (rollout + optimisation).
                    ax.set_xlabel("iteration")
            fig.suptitle(title, fontsize=STYLE["axes.titlesize"] + 1)
            fig.tight_layout()
            fig.savefig(out_dir / filename, dpi=DPI, format="png")
            plots.append(Plot(filename, title))
    return plots


def loss_figure(series: dict[str, Series]) -> Figure | None:
    """One panel per loss (train/x with val/x), since losses of one run differ in scale."""
    groups: dict[str, list[str]] = {}
    for name in sorted(series):
        if "loss" in name.lower():
            groups.setdefault(_loss_family(name), []).append(name)
    if not groups:
        return None
    ncols = 1 if len(groups) == 1 else 2
    nrows = math.ceil(len(groups) / ncols)
    fig = Figure(figsize=(6.5 * ncols, 3.6 * nrows + 0.4))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (family, names) in zip(axes, groups.items(), strict=False):
        for name in names:
            color = VAL if name.startswith("val") else TRAIN
            _plot_series(ax, series[name], name, color)
        # A lone curve is named by the panel title; train and val together need a legend.
        ax.set(title=names[0] if len(names) == 1 else family, xlabel=STEP_LABEL, ylabel="loss")
        if len(ax.get_legend_handles_labels()[0]) > 1 or len(series[names[0]]) > SMOOTH_ABOVE:
            ax.legend(loc="best")
    for ax in axes[len(groups) :]:
        ax.set_visible(False)
    return fig


def _loss_family(name: str) -> str:
    """`train/policy_loss_step` and `val/policy_loss` share the panel `policy_loss`."""
    base = name.split("/", 1)[-1]
    for suffix in ("_step", "_epoch"):
        base = base.removesuffix(suffix)
    return base


def reward_kl_figure(series: dict[str, Series]) -> Figure | None:
    """Reward mean with a ±std band on the left axis, KL to the reference on the right."""
    mean, std, kl = (
        series.get(k) for k in ("rollout/reward_mean", "rollout/reward_std", "rollout/kl")
    )
    if mean is None and kl is None:
        return None
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
    handles = []
    if mean is not None:
        if std is not None:
            steps, lo, hi = _band(mean, std)
            handles.append(
                ax.fill_between(steps, lo, hi, color=TRAIN, alpha=0.18, label="reward ± std")
            )
        handles += ax.plot(mean.steps, mean.values, color=TRAIN, lw=1.8, label="reward mean")
        ax.set_ylabel("reward (mean over rollout batch)", color=TRAIN)
    else:
        ax.set_yticks([])
    ax.set_xlabel(STEP_LABEL)
    if kl is not None:
        right = ax.twinx()
        right.grid(False)
        handles += right.plot(
            kl.steps, kl.values, color=KL, lw=1.5, ls="--", label="KL to reference"
        )
        right.set_ylabel("KL (nats per sequence)", color=KL)
    _legend_above(ax, handles)
    return fig


def _band(mean: Series, std: Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mean ± std at the steps both were logged at."""
    steps, i, j = np.intersect1d(mean.steps, std.steps, return_indices=True)
    return steps, mean.values[i] - std.values[j], mean.values[i] + std.values[j]


def length_figure(series: dict[str, Series]) -> Figure | None:
    """Mean response length; the EOS rate beside it tells truncation from short answers."""
    length = series.get("rollout/response_length")
    if length is None:
        return None
    fig = Figure(figsize=(7.5, 4.0))
    ax = fig.subplots()
    handles = _plot_series(ax, length, "response length", TRAIN)
    # From zero, so a flat line at the length cap reads as a length, not as noise.
    ax.set(xlabel=STEP_LABEL, ylim=(0, None))
    ax.set_ylabel("response length (tokens)", color=TRAIN)
    eos = series.get("rollout/eos_rate")
    if eos is not None:
        right = ax.twinx()
        right.grid(False)
        handles += right.plot(eos.steps, eos.values, color=EXTRA, ls="--", label="EOS rate")
        right.set(ylim=(-0.02, 1.02))
        right.set_ylabel("fraction ending in EOS", color=EXTRA)
    _legend_above(ax, handles)
    return fig


def accuracy_figure(series: dict[str, Series]) -> Figure | None:
    """Pairwise accuracy (reward model, DPO) against the 0.5 of a coin flip."""
    val = series.get("val/accuracy")
    if val is None:
        return None
    fig = Figure(figsize=(7.5, 4.0))
    ax = fig.subplots()
    if "train/accuracy" in series:
        _plot_series(ax, series["train/accuracy"], "train/accuracy", TRAIN)
    _plot_series(ax, val, "val/accuracy", VAL, marker=True)
    ax.axhline(0.5, color="gray", ls=":", lw=1.2, label="chance (0.5)")
    ax.set(xlabel=STEP_LABEL, ylabel="accuracy (chosen scored above rejected)", ylim=(-0.02, 1.02))
    _legend_above(ax)
    return fig


def held_out_figure(series: dict[str, Series]) -> Figure | None:
    """Held-out accuracy (greedy) and pass@k (sampled) of the RL stages' evaluator."""
    accuracy = series.get("eval/accuracy")
    if accuracy is None:
        return None
    fig = Figure(figsize=(7.5, 4.0))
    ax = fig.subplots()
    _plot_series(ax, accuracy, "eval/accuracy (greedy)", VAL, marker=True)
    names = sorted((k for k in series if k.startswith("eval/pass@")), key=lambda k: (len(k), k))
    for name, color in zip(names, [EXTRA, "tab:purple", "tab:brown", "tab:gray"], strict=False):
        _plot_series(ax, series[name], name, color, marker=True)
    ax.set(xlabel=STEP_LABEL, ylabel="share of held-out problems solved", ylim=(-0.02, 1.02))
    _legend_above(ax)
    return fig


def perplexity_figure(series: dict[str, Series]) -> Figure | None:
    """Validation perplexity, with the unigram baseline when logged (SFT)."""
    ppl = series.get("val/perplexity")
    if ppl is None:
        return None
    fig = Figure(figsize=(7.5, 4.0))
    ax = fig.subplots()
    _plot_series(ax, ppl, "val/perplexity", VAL, marker=True)
    values = [ppl.values]
    unigram = series.get("val/unigram_perplexity")
    if unigram is not None:
        # A property of the data, not of the model: a level to beat, drawn across the plot.
        baseline = unigram.values[-1]
        label = f"unigram baseline ({baseline:.4g})"
        ax.axhline(baseline, color="gray", ls="--", lw=1.2, label=label)
        values.append(unigram.values)
    both = np.concatenate(values)
    # Early perplexities of a fresh model are orders of magnitude above the final ones.
    if both.min() > 0 and both.max() / both.min() > 30:
        ax.set_yscale("log")
    ax.set(xlabel=STEP_LABEL, ylabel="perplexity (per token)")
    _legend_above(ax)
    return fig


def _plot_series(ax: Axes, s: Series, label: str, color: str, marker: bool = False) -> list:
    """A curve; long noisy ones faint with a trailing moving average drawn over them."""
    if len(s) > SMOOTH_ABOVE and not marker:
        window = min(50, len(s) // 10)
        ax.plot(s.steps, s.values, color=color, lw=0.8, alpha=0.3)
        return ax.plot(
            s.steps,
            moving_average(s.values, window),
            color=color,
            lw=1.8,
            label=f"{label} (avg of {window})",
        )
    style = "o-" if marker or len(s) <= SMOOTH_ABOVE else "-"
    return ax.plot(s.steps, s.values, style, color=color, lw=1.6, ms=4, label=label)


def _legend_above(ax: Axes, handles: list | None = None) -> None:
    """The legend in a row above the axes, where it cannot cover a curve or a band."""
    handles = handles if handles is not None else ax.get_legend_handles_labels()[0]
    ax.legend(
        handles=handles,
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=max(1, min(len(handles), 3)),
        frameon=False,
    )


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to `window` values; same length as `values` (shorter at the start)."""
    sums = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    start = np.maximum(idx - window, 0)
    return (sums[idx] - sums[start]) / (idx - start)


FIGURES: list[tuple[str, str, Callable[[dict[str, Series]], Figure | None]]] = [
    ("losses.png", "Losses", loss_figure),
    ("reward_kl.png", "Reward and KL to the reference", reward_kl_figure),
    ("response_length.png", "Response length", length_figure),
    ("accuracy.png", "Pairwise accuracy", accuracy_figure),
    ("held_out.png", "Held-out accuracy", held_out_figure),
    ("perplexity.png", "Validation perplexity", perplexity_figure),
]
