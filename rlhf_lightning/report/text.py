"""Plain-text helpers shared by the report page and the sweep table: numbers and Markdown."""

from __future__ import annotations

import html
import math
from typing import Any


def fmt_number(value: Any) -> str:
    """Integers as integers, other numbers to 4 significant digits, anything else as text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "" if value is None else str(value)
    if math.isfinite(value) and float(value).is_integer() and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.4g}"


def md_escape(text: Any) -> str:
    """Safe inside a Markdown table cell: HTML-escaped, pipes escaped, newlines as <br>."""
    text = html.escape(str(text), quote=False).replace("|", "\\|")
    return text.replace("\r\n", "\n").replace("\n", "<br>")


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table with escaped cells, padded so it also reads aligned as plain text."""
    cells = [[md_escape(h) for h in header]] + [[md_escape(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
