"""Run untrusted Python (a policy's completion) with its tests in a locked-down subprocess.

A code reward executes whatever the policy wrote: infinite loops, memory and fork bombs,
deletions, network calls, 100 MB prints. Every run gets its own throw-away working directory
(deleted afterwards), a scrubbed environment (no secrets of the trainer), ``python -I``
(no ``PYTHONPATH``, user site or current directory on the path) and, layer by layer, what
the machine allows (:func:`probe_isolation` finds out once per process):

* **time**: a wall-clock deadline, after which the whole process group (and, with a pid
  namespace, every process the code started) is killed; ``RLIMIT_CPU`` on top. Runs start
  under ``setpriv --pdeathsig KILL`` where it exists, so they die with a trainer killed
  outright.
* **memory / files / descriptors**: ``RLIMIT_AS``, ``RLIMIT_FSIZE``, ``RLIMIT_NOFILE``, no
  core dumps.
* **processes**: a per-run pids cgroup (``pids.max``) where one is writable; otherwise
  ``RLIMIT_NPROC``, which never binds uid 0, so a root trainer then runs the code as a fresh
  unprivileged uid of its own (for a non-root trainer it counts all the user's processes, so
  the code may get fewer forks than the limit). After the run everything left is killed: the
  pid namespace dies with its first process, and the cgroup's or the run uid's processes are
  killed too.
* **network**: ``unshare --net`` (root) or ``unshare --map-root-user --net``: a namespace
  with only a loopback that is down. Where namespaces do not work, Landlock denies TCP
  connect/bind (kernel ABI >= 4) and Python's ``socket`` refuses non-Unix families, which
  code using ``ctypes`` could bypass, and UDP is then only blocked by the latter.
* **files**: Landlock (kernel >= 5.13) allows writes, deletions and new files only beneath
  the working directory; reading stays allowed (the interpreter must import). Without
  Landlock a root trainer runs the code as a fresh unprivileged uid (file permissions then
  protect root's files), and a non-root run can write wherever the user can.
* **identity**: as root, uid 0 with every capability dropped (no DAC override, no module
  loading, no mounts) when a pids cgroup and Landlock do the containing, else the fresh uid;
  ``no_new_privs`` always; with ``--mount-proc`` the trainer's ``/proc/<pid>/environ`` is not
  even visible. A fresh uid cannot read a Python installed under a private directory (such
  as ``/root``), so imports the harness did not make fail there (a warning says so).
* **output**: stdout and stderr are read as they come and kept up to ``max_output_bytes``
  each; the rest is read and dropped, so a huge print neither blocks nor fills memory.

Not contained: reading files the running user can read (there is no network to send them
anywhere, and output is capped), Unix sockets with a path (a root run could reach a local
daemon's socket; run the trainer as an ordinary user or in a container when that matters), and
CPU and memory bandwidth shared with the trainer while a run lasts. A trainer killed outright
leaves its last runs' working and cgroup directories behind (empty). An adversarial program
could forge its test results by searching its own process (see ``_sandbox_child.py``).

Example:
    >>> sandbox = Sandbox(SandboxLimits(timeout_s=2.0))
    >>> result = sandbox.run("def f(x):\\n    return 2 * x", ["assert f(2) == 4", "assert f(3) == 5"])
    >>> result.status, result.passed, result.total
    ('ok', 1, 2)
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rlhf_lightning.errors import RewardError
from rlhf_lightning.rewards.sandbox_isolation import PARENT_DEATH, Isolation, probe_isolation
from rlhf_lightning.rewards.sandbox_run import (
    STATUSES,
    SandboxResult,
    clean_env,
    collect,
    kill_group,
    make_cgroup,
    parse_result,
    reap,
    remove_cgroup,
    sweep,
    write_job,
)

__all__ = ["STATUSES", "Isolation", "Sandbox", "SandboxLimits", "SandboxResult", "probe_isolation"]

_CHILD = Path(__file__).with_name("_sandbox_child.py")
# uids for root trainers without a pids cgroup or Landlock: a fresh one per run, no real user's.
_SANDBOX_UIDS = range(1_500_000_000, 1_600_000_000)


@dataclass(frozen=True)
class SandboxLimits:
    """What one run may use.

    Args:
        timeout_s: Wall-clock seconds for the whole run (code and tests).
        cpu_s: CPU seconds (``RLIMIT_CPU``); None: ``ceil(timeout_s)``.
        memory_mb: Address space in MiB (``RLIMIT_AS``); allocations beyond it raise MemoryError.
        file_size_mb: Largest file the code may write, in MiB (``RLIMIT_FSIZE``).
        max_processes: Processes and threads at once, the first one included.
        max_open_files: File descriptors (``RLIMIT_NOFILE``).
        max_output_bytes: Bytes of stdout and of stderr kept in the result; more is dropped.
    """

    timeout_s: float = 5.0
    cpu_s: int | None = None
    memory_mb: int = 512
    file_size_mb: int = 16
    max_processes: int = 16
    max_open_files: int = 64
    max_output_bytes: int = 16_384

    def __post_init__(self) -> None:
        numbers = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        bad = {k: v for k, v in numbers.items() if v is not None and not v > 0}
        if bad or self.memory_mb < 64 or self.max_processes < 1:
            raise RewardError(
                f"sandbox limits {bad or numbers} are not usable. Fix: positive numbers, with "
                "memory_mb >= 64 (the interpreter itself needs about 30 MiB)."
            )

    def rlimits(self, processes: bool) -> dict[str, int | list[int]]:
        """The ``resource.setrlimit`` values for the child (``RLIMIT_NPROC`` when asked)."""
        cpu = self.cpu_s or math.ceil(self.timeout_s)
        mib = 1 << 20
        limits: dict[str, int | list[int]] = {
            # soft = hard: SIGKILL right at the limit (a pid namespace's first process ignores
            # the SIGXCPU a lower soft limit would send); the parent sees it in the CPU time.
            "RLIMIT_CPU": cpu,
            "RLIMIT_AS": self.memory_mb * mib,
            "RLIMIT_FSIZE": self.file_size_mb * mib,
            "RLIMIT_NOFILE": self.max_open_files,
            "RLIMIT_CORE": 0,
        }
        if processes:
            limits["RLIMIT_NPROC"] = self.max_processes
        return limits


class Sandbox:
    """Runs code and its assert tests, one subprocess per run, contained as described above.

    Args:
        limits: Per-run limits; the defaults suit short function-level tasks.
        isolation: The containment layers; None probes this machine (:func:`probe_isolation`).
        workdir_root: Where each run's temporary working directory is made (and deleted);
            None: the system temp directory. When runs switch uid it must be searchable by
            other users.
    """

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        isolation: Isolation | None = None,
        workdir_root: str | None = None,
    ) -> None:
        self.limits = limits or SandboxLimits()
        self.isolation = isolation or probe_isolation()
        self.workdir_root = workdir_root
        self._child_source = _CHILD.read_text(encoding="utf-8")

    def run(self, code: str, tests: Sequence[str] = ()) -> SandboxResult:
        """Run ``code``, then each test (a statement, usually an ``assert``) in its namespace."""
        return self._run(code, list(tests), time.monotonic() + self.limits.timeout_s)

    def run_many(
        self,
        jobs: Sequence[tuple[str, Sequence[str]]],
        max_workers: int | None = None,
        total_timeout_s: float | None = None,
    ) -> list[SandboxResult]:
        """Run ``(code, tests)`` jobs concurrently; results in the order of ``jobs``.

        Args:
            jobs: ``(code, tests)`` pairs.
            max_workers: Runs at once; None: the CPU count, at most 8.
            total_timeout_s: Bound on the whole batch: a run ends at its own timeout or at this
                deadline, whichever is first, and runs not started by then are ``skipped``.
        """
        if not jobs:
            return []
        batch_deadline = None if total_timeout_s is None else time.monotonic() + total_timeout_s
        workers = max_workers or max(1, min(8, os.cpu_count() or 1))

        def one(code: str, tests: Sequence[str]) -> SandboxResult:
            now = time.monotonic()
            deadline = now + self.limits.timeout_s
            if batch_deadline is not None:
                if batch_deadline - now <= 0.01:
                    return SandboxResult("skipped", 0, len(tests), "", "", False, None, 0.0)
                deadline = min(deadline, batch_deadline)
            return self._run(code, list(tests), deadline)

        with concurrent.futures.ThreadPoolExecutor(min(workers, len(jobs))) as pool:
            futures = [pool.submit(one, code, tests) for code, tests in jobs]
            return [future.result() for future in futures]

    def _run(self, code: str, tests: list[str], deadline: float) -> SandboxResult:
        start = time.monotonic()
        iso = self.isolation
        workdir = Path(tempfile.mkdtemp(prefix="rlhf-sandbox-", dir=self.workdir_root))
        uid = secrets.choice(_SANDBOX_UIDS) if iso.switch_uid else None
        cgroup = None
        read_fd = write_fd = -1
        try:
            if iso.cgroup_parent:
                cgroup = make_cgroup(iso.cgroup_parent, self.limits.max_processes)
            read_fd, write_fd = os.pipe()
            token = secrets.token_hex(16)
            job_file = write_job(
                workdir, self._job(workdir, code, tests, token, write_fd, uid, cgroup)
            )
            if uid is not None:
                os.chown(workdir, uid, uid)
            proc = subprocess.Popen(
                [
                    *(PARENT_DEATH if iso.parent_death else ()),
                    *iso.namespaces,
                    *(sys.executable, "-I", "-c", self._child_source, str(job_file)),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(write_fd,),
                cwd=workdir,
                env=clean_env(workdir),
                start_new_session=True,  # its own process group, killed as one
            )
            os.close(write_fd)
            write_fd = -1
            try:
                limit = self.limits.max_output_bytes
                outputs, timed_out = collect(proc, read_fd, deadline, limit)
            finally:
                kill_group(proc.pid)
                sweep(uid, cgroup)
                cpu_used = reap(proc)
        finally:
            for fd in (read_fd, write_fd):
                if fd >= 0:
                    os.close(fd)
            if cgroup is not None:
                remove_cgroup(cgroup)
            shutil.rmtree(workdir, ignore_errors=True)
        cpu_limit = self.limits.cpu_s or math.ceil(self.limits.timeout_s)
        return parse_result(
            outputs,
            token,
            tests,
            proc.returncode,
            # CPU accounting lags the kernel's limit check a little: 0.98 s may be reported.
            "wall clock" if timed_out else ("cpu" if cpu_used >= 0.9 * cpu_limit else ""),
            time.monotonic() - start,
        )

    def _job(
        self,
        workdir: Path,
        code: str,
        tests: list[str],
        token: str,
        result_fd: int,
        uid: int | None,
        cgroup: Path | None,
    ) -> dict:
        """What the child is told: the code, its tests, and how to lock itself down."""
        iso = self.isolation
        return {
            "code": code,
            "tests": tests,
            "token": token,
            "result_fd": result_fd,
            "workdir": str(workdir),
            "uid": uid,
            "cgroup": str(cgroup) if cgroup else None,
            "rlimits": self.limits.rlimits(processes=cgroup is None),
            "drop_capabilities": uid is None and (iso.root or "--map-root-user" in iso.namespaces),
            "landlock_abi": iso.landlock_abi,
            "block_sockets": not iso.network_namespace,
        }
