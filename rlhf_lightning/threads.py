"""How many threads torch uses in each process: chosen, not left to torch's default.

torch starts one intra-op thread per core. When more threads compete for the cores than there
are cores (other processes running, several ranks on one machine), every parallel region waits
for its slowest thread and a small model runs many times slower than with one thread (a tiny
PPO run took 237 s with torch's default on a shared 2-core machine, 12.5 s with one thread; SmolLM2-135M ran 3.5-8x slower with 2 threads than with 1 on 2 cores other
processes kept busy). So ``threads: auto`` gives a small model (under
``SMALL_MODEL_PARAMETERS``: its matrices are too small for threads to pay for their
synchronisation) one thread, and a larger one its process's share of the CPUs it may use
(affinity and cgroup quota) that other processes are not already keeping busy (the 1-minute
load average when the run starts), at least one. An integer sets it outright.

Results can differ in the last bits between thread counts, so the count a run chose is saved
in its checkpoints and a resumed run uses it again (``callbacks.resume.ResumeState``).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch

from rlhf_lightning.errors import ConfigError

log = logging.getLogger(__name__)


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = Path("/sys/fs/cgroup/cpu.max")
    try:
        limit, period = quota.read_text().split()[:2]
        if limit != "max":
            cpus = min(cpus, max(1, math.floor(int(limit) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


SMALL_MODEL_PARAMETERS = 50_000_000


def choose_threads(
    setting: int | str | None, parameters: int, processes: int = 1
) -> tuple[int, str]:
    """The intra-op thread count for one of `processes` processes on this machine, and why.

    Args:
        setting: ``"auto"`` (or None), or a positive integer.
        parameters: the model's parameter count.
        processes: processes of this run sharing the machine (data-parallel ranks on CPU).

    Returns:
        ``(threads, reason)``.
    """
    if setting not in (None, "auto"):
        try:
            threads = int(setting)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            threads = 0
        if threads < 1:
            raise ConfigError(f"threads={setting}: must be a positive integer or auto.")
        return threads, "set by threads="
    if parameters < SMALL_MODEL_PARAMETERS:
        return 1, f"auto: {parameters / 1e6:.1f}M parameters, too small to gain from threads"
    cpus = usable_cpus()
    share = max(1, cpus // max(1, processes))
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    threads = max(1, min(share, math.floor(cpus - busy)))
    return (
        threads,
        f"auto: {cpus} usable CPUs, {processes} process(es) of this run, load {busy:.1f}",
    )


def apply_threads(setting: int | str | None, parameters: int, processes: int = 1) -> int:
    """Set torch's intra-op threads for this process (see :func:`choose_threads`); one log line."""
    threads, reason = choose_threads(setting, parameters, processes)
    torch.set_num_threads(threads)
    log.info("torch threads: %d (%s)", threads, reason)
    return threads
