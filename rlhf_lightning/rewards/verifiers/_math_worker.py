"""The math_verify worker: one JSON line ``[reference, answer]`` in, ``true``/``false`` out.

Run by :class:`rlhf_lightning.rewards.verifiers.math_answer.SymbolicChecker` as
``python -c <this source> <timeout seconds>``; never imported (standard library and
math_verify only, so it starts without torch). Its memory is capped, so a runaway sympy
integer ends in MemoryError here instead of swapping the machine; the parent kills it when a
comparison outlasts the time bound.
"""

import json
import resource
import sys

_MEMORY_BYTES = 4 << 30


def _as_math(text):
    """Wrap bare text in ``$...$`` so math_verify reads it as one expression (``2^{10}``)."""
    text = text.strip()
    if "$" in text or text.startswith(("\\(", "\\[")):
        return text
    return f"${text}$"


def _main():
    timeout = int(sys.argv[1])
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > _MEMORY_BYTES:
        resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_BYTES, hard))
    try:
        from math_verify import parse, verify
    except ImportError as err:
        print(json.dumps(f"{type(err).__name__}: {err}"), flush=True)
        return
    print(json.dumps("ready"), flush=True)
    for line in sys.stdin:
        reference, answer = json.loads(line)
        try:
            gold = parse(_as_math(reference), parsing_timeout=timeout)
            predicted = parse(_as_math(answer), parsing_timeout=timeout)
            verdict = bool(gold and predicted and verify(gold, predicted, timeout_seconds=timeout))
        except BaseException:  # MemoryError, math_verify's TimeoutException, sympy errors
            verdict = False
        print(json.dumps(verdict), flush=True)


_main()
