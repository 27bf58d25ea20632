"""Render a run's report page, as HTML (self-contained apart from the PNGs) or Markdown.

Every piece of text that comes from the run (sample prompts and completions, metric names, the
config, paths) is escaped: completions of a model in training are arbitrary text.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rlhf_lightning.report.plots import Plot
from rlhf_lightning.report.rundata import RunData
from rlhf_lightning.report.samples import BeforeAfter, ReferenceComparison, SamplePair
from rlhf_lightning.report.text import fmt_number, md_escape, md_table

# Longer completions are cut so one runaway sample cannot bury the page.
MAX_TEXT = 1500

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.text { white-space: pre-wrap; word-break: break-word; font-family: ui-monospace, monospace;
          font-size: 0.9em; max-width: 420px; }
.problems { background: #fff6e0; border: 1px solid #f0c36d; padding: 0.5em 1em; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f8f8f8; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.note { color: #555; }
"""


@dataclass
class Samples:
    """What the sample section shows: samples during training, and the end-of-run comparison."""

    during: BeforeAfter
    comparison: ReferenceComparison | None = None


@dataclass
class SampleSection:
    """One sample table, format-neutral: plain text cells, escaped by the renderer."""

    title: str
    intro: str
    header: list[str]
    rows: list[list[str]]
    text_cols: set[int]


def sample_sections(samples: Samples) -> list[SampleSection]:
    """The reference-vs-trained table first (same prompts, same seed), then the training one."""
    sections = []
    cmp = samples.comparison
    if cmp is not None and cmp.rows:
        sections.append(_comparison_section(cmp))
    ba = samples.during
    if ba.pairs:
        header, rows, text_cols = sample_table(ba)
        title = "During training: first vs last logged step"
        sections.append(SampleSection(title, samples_intro(ba), header, rows, text_cols))
    return sections


def _comparison_section(cmp: ReferenceComparison) -> SampleSection:
    intro = (
        "The reference (starting) policy and the trained policy answer the same prompts "
        f"with the same seed, scored by the same reward; written at step {cmp.step}."
    )
    if cmp.mean_reward is not None and cmp.mean_ref_reward is not None:
        intro += (
            f" Mean reward: {fmt_number(cmp.mean_ref_reward)} (reference) → "
            f"{fmt_number(cmp.mean_reward)} (trained)."
        )
    header = ["prompt", "reference policy", "reward", "trained policy", "reward"]
    rows = [
        [
            _clip(r.get("prompt")),
            _clip(r.get("ref_completion")),
            fmt_number(r.get("ref_reward")),
            _clip(r.get("completion")),
            fmt_number(r.get("reward")),
        ]
        for r in cmp.rows
    ]
    return SampleSection("Reference vs trained policy", intro, header, rows, {0, 1, 3})


def fmt_wall(seconds: Any) -> str:
    """`46.3 s (0:00:46)`; "unknown" when not a number."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return "unknown"
    whole = int(seconds)
    return f"{seconds:.1f} s ({whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d})"


def facts(data: RunData) -> list[tuple[str, str]]:
    """The header lines: stage, run directory, step reached, wall time."""
    return [
        ("Stage", data.stage),
        ("Run directory", str(data.run_dir)),
        ("Global step", fmt_number(data.summary.get("global_step", "unknown"))),
        ("Wall time", fmt_wall(data.summary.get("wall_s"))),
    ]


# Control characters (a tiny model emits any token) are invalid in HTML and break terminals.
_CONTROL = {c: "\ufffd" for c in [*range(0, 9), *range(11, 32), 127]}


def _clip(text: Any) -> str:
    """Sample text made safe to show: control characters replaced, long text cut."""
    text = "" if text is None else str(text).translate(_CONTROL)
    if len(text) > MAX_TEXT:
        return f"{text[:MAX_TEXT]}… ({len(text) - MAX_TEXT} more characters)"
    return text


def _sample_meta(row: dict[str, Any] | None) -> str:
    """`1.234 (KL 0.05)`: the sample's reward and, when logged, its KL."""
    if row is None:
        return ""
    meta = fmt_number(row.get("reward"))
    if "kl" in row:
        meta += f" (KL {fmt_number(row['kl'])})"
    return meta


def sample_table(ba: BeforeAfter) -> tuple[list[str], list[list[str]], set[int]]:
    """The before/after table as header, rows (plain text, not yet escaped) and text columns.

    Matched prompts share one prompt column; prompts that differ get one column per side so
    neither completion is read against the wrong prompt. Reward columns appear only when the
    samples were scored, reference columns only when a reference completion was logged.
    """
    single = ba.last_step == ba.first_step
    rows_seen = [r for p in ba.pairs for r in (p.before, p.after) if r]
    scored = any("reward" in r or "kl" in r for r in rows_seen)
    columns: list[tuple[str, bool, Callable[[SamplePair], str]]] = []
    if single or ba.matched:
        columns.append(("prompt", True, lambda p: _clip(p.before["prompt"])))
    sides = (
        [(ba.first_step, _before)] if single else [(ba.first_step, _before), (ba.last_step, _after)]
    )
    for step, pick in sides:
        if not (single or ba.matched):
            columns.append((f"prompt (step {step})", True, lambda p, f=pick: _clip(f(p)["prompt"])))
        columns.append((f"step {step}", True, lambda p, f=pick: _clip(f(p).get("completion"))))
        if scored:
            columns.append(("reward", False, lambda p, f=pick: _sample_meta(f(p))))
    if any("ref_completion" in r for r in rows_seen):
        pick = sides[-1][1]
        columns.append(
            ("reference completion", True, lambda p: _clip(pick(p).get("ref_completion")))
        )
        columns.append(("ref reward", False, lambda p: fmt_number(pick(p).get("ref_reward"))))
    header = [title for title, _, _ in columns]
    rows = [[cell(pair) for _, _, cell in columns] for pair in ba.pairs]
    return header, rows, {i for i, (_, is_text, _) in enumerate(columns) if is_text}


def _before(pair: SamplePair) -> dict[str, Any]:
    return pair.before


def _after(pair: SamplePair) -> dict[str, Any]:
    return pair.after or {}


def samples_intro(ba: BeforeAfter) -> str:
    """One sentence on what the sample table compares (plain text, not yet escaped)."""
    if ba.last_step == ba.first_step:
        text = f"Only one step ({ba.first_step}) logged samples; shown without a comparison."
    elif ba.matched:
        text = f"The same prompts at the first logged step ({ba.first_step}) and the last ({ba.last_step})."
    else:
        text = (
            f"The prompts differ between the first logged step ({ba.first_step}) and the last "
            f"({ba.last_step}); showing the first {len(ba.pairs)} samples of each."
        )
    if ba.mean_reward_first is not None and ba.mean_reward_last is not None:
        text += (
            f" Mean reward over all samples of the step: {fmt_number(ba.mean_reward_first)} → "
            f"{fmt_number(ba.mean_reward_last)}."
        )
    return text


# ----------------------------------------------------------------------------------------------
# HTML


def render_html(data: RunData, plots: list[Plot], samples: Samples | None) -> str:
    """The whole page as one HTML string; images are referenced by file name beside it."""
    e = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(data.stage)} run report: {e(data.run_dir.name)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Run report: {e(data.stage)}</h1>",
        _html_table(None, [[k, v] for k, v in facts(data)]),
    ]
    if data.problems:
        items = "".join(f"<li>{e(p)}</li>" for p in data.problems)
        parts.append(
            f'<div class="problems"><strong>Missing or unreadable</strong><ul>{items}</ul></div>'
        )
    parts.append("<h2>Final metrics</h2>")
    if data.final:
        rows = [[name, fmt_number(v)] for name, v in data.final.items()]
        parts.append(_html_table(["metric", "final value"], rows, num_cols={1}))
    else:
        parts.append('<p class="note">No metrics were recorded.</p>')
    parts.append("<h2>Plots</h2>")
    if plots:
        parts += [f'<figure><img src="{e(p.filename)}" alt="{e(p.title)}"></figure>' for p in plots]
    else:
        parts.append('<p class="note">No plotted metrics were logged.</p>')
    if samples is not None:
        parts += _html_samples(samples)
    if data.config_text:
        parts.append(
            f"<h2>Config</h2><details><summary>.hydra/config.yaml</summary>"
            f"<pre>{e(data.config_text)}</pre></details>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_samples(samples: Samples) -> list[str]:
    parts = ["<h2>Samples: before and after</h2>"]
    sections = sample_sections(samples)
    if not sections:
        return parts + ['<p class="note">No samples were logged.</p>']
    for sec in sections:
        num_cols = set(range(len(sec.header))) - sec.text_cols
        parts += [
            f"<h3>{html.escape(sec.title)}</h3>",
            f'<p class="note">{html.escape(sec.intro)}</p>',
            _html_table(sec.header, sec.rows, num_cols=num_cols, text_cols=sec.text_cols),
        ]
    return parts


def _html_table(
    header: list[str] | None,
    rows: list[list[Any]],
    num_cols: set[int] | frozenset[int] = frozenset(),
    text_cols: set[int] | frozenset[int] = frozenset(),
) -> str:
    """A table with escaped cells; `num_cols` right-aligned, `text_cols` wrapped monospace."""
    e = html.escape
    out = ["<table>"]
    if header is not None:
        out.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = ' class="num"' if i in num_cols else ' class="text"' if i in text_cols else ""
            cells.append(f"<td{cls}>{e(str(cell))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# Markdown


def render_markdown(data: RunData, plots: list[Plot], samples: Samples | None) -> str:
    """The same page as Markdown; text from the run is escaped for tables and inline HTML."""
    parts = [f"# Run report: {md_escape(data.stage)}", ""]
    parts += [f"- **{k}:** {md_escape(v)}" for k, v in facts(data)]
    if data.problems:
        parts += ["", "**Missing or unreadable:**", ""]
        parts += [f"- {md_escape(p)}" for p in data.problems]
    parts += ["", "## Final metrics", ""]
    if data.final:
        rows = [[name, fmt_number(v)] for name, v in data.final.items()]
        parts.append(md_table(["metric", "final value"], rows))
    else:
        parts.append("No metrics were recorded.")
    parts += ["", "## Plots", ""]
    parts += [f"![{p.title}]({p.filename})\n" for p in plots] or ["No plotted metrics were logged."]
    if samples is not None:
        parts += ["", "## Samples: before and after", ""]
        parts.append(_md_samples(samples))
    return "\n".join(parts) + "\n"


def _md_samples(samples: Samples) -> str:
    sections = sample_sections(samples)
    if not sections:
        return "No samples were logged."
    return "\n\n".join(
        f"### {md_escape(sec.title)}\n\n{md_escape(sec.intro)}\n\n{md_table(sec.header, sec.rows)}"
        for sec in sections
    )
