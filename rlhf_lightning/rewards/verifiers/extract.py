"""Pull the answer out of a completion: a tag, a ``\\boxed{}``, the last number, a code block.

Extraction is the only parsing done by hand here; comparing answers is left to
:mod:`math_verify`/``sympy`` (math), Python's ``ast`` (countdown) or running the code (code).
Every pattern takes the **last** match: models often restate the question or draft an answer
before the final one.
"""

from __future__ import annotations

import re

from rlhf_lightning.errors import RewardError

# Named patterns; any other string is a regular expression whose group 1 is the answer.
ANSWER_PATTERNS = {
    "answer": r"<answer>(.*?)</answer>",
    "last_number": r"(-?\d[\d,]*(?:\.\d+)?(?:/\d+)?)",
}
BOXED = "boxed"
_BOXED_START = re.compile(r"\\(?:boxed|fbox)\s*\{")
_FENCE = re.compile(r"```([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.DOTALL)
_PYTHON_TAGS = ("python", "py", "python3")


def answer_pattern_names() -> list[str]:
    """The named extraction patterns, ``boxed`` included."""
    return [*ANSWER_PATTERNS, BOXED]


def compile_answer_pattern(pattern: str, source: str) -> re.Pattern[str] | None:
    """The regex for ``pattern`` (None for ``boxed``, which is matched by brace counting).

    Raises:
        RewardError: a custom regex that does not compile or has no group.
    """
    if pattern == BOXED:
        return None
    regex = ANSWER_PATTERNS.get(pattern, pattern)
    try:
        compiled = re.compile(regex, re.DOTALL)
    except re.error as err:
        raise RewardError(
            f"{source}: extract={pattern!r} is neither one of {answer_pattern_names()} nor a "
            f"valid regular expression ({err}). Fix: use a name, or a regex with one group."
        ) from err
    if compiled.groups < 1:
        raise RewardError(
            f"{source}: the regex {pattern!r} has no capturing group. Fix: wrap the answer "
            r"part in parentheses, e.g. 'Answer: (\S+)'."
        )
    return compiled


def extract_answer(text: str, pattern: str | re.Pattern[str] | None = "answer") -> str | None:
    """The last answer in ``text``, stripped; None when there is none.

    Args:
        text: A completion.
        pattern: ``answer`` (``<answer>...</answer>``), ``boxed`` (``\\boxed{...}`` with nested
            braces), ``last_number``, a regex string whose group 1 is the answer, or a compiled
            regex (None means ``boxed``).

    Example:
        >>> extract_answer("so <answer>4</answer>, I mean <answer> 5 </answer>")
        '5'
        >>> extract_answer(r"thus \\boxed{\\frac{1}{2}}.", "boxed")
        '\\\\frac{1}{2}'
        >>> extract_answer("12 apples and 1,250 pears", "last_number")
        '1,250'
    """
    if pattern == BOXED or pattern is None:
        return last_boxed(text)
    regex = pattern if isinstance(pattern, re.Pattern) else compile_answer_pattern(pattern, "")
    assert regex is not None
    matches = list(regex.finditer(text))
    if not matches:
        return None
    answer = matches[-1].group(1)
    return answer.strip() if answer is not None else None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), nested braces kept.

    An unclosed box is ignored (the completion was cut off).
    """
    found = None
    for start in _BOXED_START.finditer(text):
        depth, position = 1, start.end()
        while position < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[position], 0)
            position += 1
        if depth == 0:
            found = text[start.end() : position - 1].strip()
    return found


def extract_code(text: str) -> str:
    """The program in a completion: the last fenced ```python block; else the last fenced block
    of any language; else an unclosed ```python fence's rest (cut-off completions); else the
    whole text.

    Example:
        >>> extract_code("Here:\\n```python\\ndef f():\\n    return 1\\n```\\nDone.")
        'def f():\\n    return 1\\n'
    """
    blocks = _FENCE.findall(text)
    python = [code for tag, code in blocks if tag.lower() in _PYTHON_TAGS]
    if python:
        return python[-1]
    if blocks:
        return blocks[-1][1]
    opening = re.search(r"```(?:python3?|py)[ \t]*\n", text)
    if opening:
        return text[opening.end() :]
    return text
