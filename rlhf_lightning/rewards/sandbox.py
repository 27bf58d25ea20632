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
import contextlib
import dataclasses
import fcntl
import itertools
import json
import logging
import math
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from rlhf_lightning.errors import RewardError

log = logging.getLogger(__name__)

_CHILD = Path(__file__).with_name("_sandbox_child.py")
SETUP_FAILED = 121  # the child's exit code when it could not lock itself down
STATUSES = ("ok", "error", "timeout", "memory", "crash", "skipped")
# uids for root trainers without a pids cgroup or Landlock: a fresh one per run, no real user's.
_SANDBOX_UIDS = range(1_500_000_000, 1_600_000_000)
# The run's first process gets SIGKILL when the thread that started it dies (setpriv execs the
# next command with the setting kept); with a pid namespace, everything in it follows.
_PARENT_DEATH = ("setpriv", "--pdeathsig", "KILL", "--")
_RESULT_PIPE_BYTES = 1 << 16
_READ_CHUNK = 1 << 16
_counter = itertools.count()


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


class SandboxResult(NamedTuple):
    """What one run did.

    ``status`` is one of :data:`STATUSES`: ``ok`` (the code ran and every test was tried),
    ``error`` (the code raised or exited before the tests; ``detail`` names the exception),
    ``timeout`` (wall clock or CPU limit), ``memory`` (MemoryError), ``crash`` (the process
    died: a signal, ``os._exit``; ``detail`` names it), ``skipped`` (the batch's time ran out
    before it started). ``passed`` counts the tests that ran without raising, even when the
    run ended later in a timeout or crash.
    """

    status: str
    passed: int
    total: int
    stdout: str
    stderr: str
    truncated: bool  # stdout or stderr was longer than max_output_bytes
    returncode: int | None
    wall_s: float
    detail: str = ""

    @property
    def fraction(self) -> float:
        """Share of tests passed; without tests, 1.0 when the code ran cleanly."""
        if self.total == 0:
            return float(self.status == "ok")
        return self.passed / self.total


@dataclass(frozen=True)
class Isolation:
    """How runs are contained on this machine (see the module docstring).

    Args:
        namespaces: The ``unshare ... --`` command put before the interpreter; empty for none.
        parent_death: Whether runs start under ``setpriv --pdeathsig KILL``, so that a trainer
            killed outright takes its runs with it (otherwise its last runs live on until they
            end by themselves or hit the CPU limit).
        network_namespace: Whether ``namespaces`` includes a network namespace.
        pid_namespace: Whether it includes a pid namespace (all its processes die together).
        landlock_abi: The kernel's Landlock ABI version; 0 where there is none.
        cgroup_parent: The writable pids cgroup directory runs are created under; None:
            ``RLIMIT_NPROC`` limits processes instead.
        switch_uid: Whether each run switches to a fresh unprivileged uid (root trainers
            without a pids cgroup or without Landlock).
        root: Whether the trainer runs as uid 0.
    """

    namespaces: tuple[str, ...]
    parent_death: bool
    network_namespace: bool
    pid_namespace: bool
    landlock_abi: int
    cgroup_parent: str | None
    switch_uid: bool
    root: bool

    def describe(self) -> str:
        """One line: what contains the network, processes, files and identity."""
        network = "namespace" if self.network_namespace else "Python socket guard"
        if not self.network_namespace and self.landlock_abi >= 4:
            network += " + Landlock TCP deny"
        processes = (
            f"pids cgroup under {self.cgroup_parent}" if self.cgroup_parent else "RLIMIT_NPROC"
        )
        if self.pid_namespace:
            processes += ", pid namespace"
        files = (
            f"Landlock ABI {self.landlock_abi} (writes only in the working directory)"
            if self.landlock_abi
            else "no Landlock (writes wherever the user can)"
        )
        identity = "uid 0 without capabilities" if self.root else "the running user"
        if self.switch_uid:
            identity = "a fresh unprivileged uid per run"
        return f"network: {network}; processes: {processes}; files: {files}; identity: {identity}"


@lru_cache(maxsize=1)
def probe_isolation() -> Isolation:
    """Find out once per process which containment layers work here (a few ms)."""
    root = os.geteuid() == 0
    namespaces = _working_namespaces(root)
    cgroup = _writable_pids_cgroup()
    landlock_abi = _landlock_abi()
    switch_uid = root and (cgroup is None or landlock_abi == 0)
    isolation = Isolation(
        namespaces=namespaces,
        parent_death=_works(_PARENT_DEATH),
        network_namespace="--net" in namespaces,
        pid_namespace="--pid" in namespaces,
        landlock_abi=landlock_abi,
        cgroup_parent=str(cgroup) if cgroup else None,
        switch_uid=switch_uid,
        root=root,
    )
    log.info("code sandbox: %s", isolation.describe())
    if switch_uid and not _world_readable(Path(sys.base_prefix)):
        log.warning(
            "code sandbox: runs switch to an unprivileged uid, but %s is not readable by other "
            "users, so sandboxed code cannot import modules the harness did not load. Fix: make "
            "the Python installation world-readable, or give the trainer a writable pids cgroup.",
            sys.base_prefix,
        )
    return isolation


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
            cgroup = self._make_cgroup() if iso.cgroup_parent else None
            read_fd, write_fd = os.pipe()
            token = secrets.token_hex(16)
            job_file = self._write_job(workdir, code, tests, token, write_fd, uid, cgroup)
            if uid is not None:
                os.chown(workdir, uid, uid)
            proc = subprocess.Popen(
                [
                    *(_PARENT_DEATH if iso.parent_death else ()),
                    *iso.namespaces,
                    *(sys.executable, "-I", "-c", self._child_source, str(job_file)),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(write_fd,),
                cwd=workdir,
                env=_clean_env(workdir),
                start_new_session=True,  # its own process group, killed as one
            )
            os.close(write_fd)
            write_fd = -1
            try:
                outputs, timed_out = self._collect(proc, read_fd, deadline)
            finally:
                _kill_group(proc.pid)
                self._sweep(uid, cgroup)
                cpu_used = _reap(proc)
        finally:
            for fd in (read_fd, write_fd):
                if fd >= 0:
                    os.close(fd)
            if cgroup is not None:
                _remove_cgroup(cgroup)
            shutil.rmtree(workdir, ignore_errors=True)
        cpu_limit = self.limits.cpu_s or math.ceil(self.limits.timeout_s)
        return _result(
            outputs,
            token,
            tests,
            proc.returncode,
            # CPU accounting lags the kernel's limit check a little: 0.98 s may be reported.
            "wall clock" if timed_out else ("cpu" if cpu_used >= 0.9 * cpu_limit else ""),
            time.monotonic() - start,
        )

    def _write_job(
        self,
        workdir: Path,
        code: str,
        tests: list[str],
        token: str,
        result_fd: int,
        uid: int | None,
        cgroup: Path | None,
    ) -> Path:
        iso = self.isolation
        job = {
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
        path = workdir / ".job.json"
        # Only the owner (the child before it drops privileges) can read it; it deletes it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(job, file)
        return path

    def _collect(
        self, proc: subprocess.Popen, result_fd: int, deadline: float
    ) -> tuple[dict[str, _Capture], bool]:
        """Read stdout, stderr and the result pipe until the child is gone or time is up."""
        assert proc.stdout is not None and proc.stderr is not None
        limit = self.limits.max_output_bytes
        captures = {
            proc.stdout.fileno(): _Capture("stdout", limit),
            proc.stderr.fileno(): _Capture("stderr", limit),
            result_fd: _Capture("result", _RESULT_PIPE_BYTES),
        }
        timed_out = False
        with selectors.DefaultSelector() as selector:
            for fd in captures:
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                for key, _ in selector.select(min(remaining, 0.1)):
                    chunk = os.read(key.fd, _READ_CHUNK)
                    if chunk:
                        captures[key.fd].add(chunk)
                    else:
                        selector.unregister(key.fd)
                # The child exited but something it started holds the pipes open: stop here.
                if selector.get_map() and _exited(proc.pid):
                    _kill_group(proc.pid)
                    _drain(captures, list(selector.get_map()))
                    break
        return {c.name: c for c in captures.values()}, timed_out

    def _make_cgroup(self) -> Path:
        assert self.isolation.cgroup_parent is not None
        name = f"rlhf-sandbox-{os.getpid()}-{next(_counter)}-{secrets.token_hex(3)}"
        path = Path(self.isolation.cgroup_parent) / name
        try:
            path.mkdir()
        except OSError as err:
            raise RewardError(
                f"code sandbox: cannot create the pids cgroup {path} ({err}). Fix: check that "
                f"{self.isolation.cgroup_parent} is writable (it was when first probed)."
            ) from err
        try:
            (path / "pids.max").write_text(str(self.limits.max_processes))
        except OSError as err:
            path.rmdir()
            raise RewardError(
                f"code sandbox: cannot set pids.max in {path} ({err}). Fix: give the trainer a "
                "pids cgroup it may configure, or none (runs then use RLIMIT_NPROC)."
            ) from err
        return path

    def _sweep(self, uid: int | None, cgroup: Path | None) -> None:
        """Kill what the run left behind (a dying pid namespace may still hold some a moment)."""
        if cgroup is not None:
            _kill_cgroup(cgroup)
        if uid is not None and shutil.which("kill"):
            # kill(-1) as that uid: every process of the run's own uid, and nothing else.
            subprocess.run(
                ["kill", "-KILL", "-1"],
                user=uid,
                group=uid,
                extra_groups=[],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )


class _Capture:
    """Keeps the first ``limit`` bytes of a stream, counts the rest."""

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self.parts: list[bytes] = []
        self.kept = 0
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = self.limit - self.kept
        if room > 0:
            self.parts.append(chunk[:room])
            self.kept += min(room, len(chunk))
        self.dropped += max(0, len(chunk) - max(room, 0))

    def text(self) -> str:
        return b"".join(self.parts).decode("utf-8", errors="replace")


def _drain(captures: dict[int, _Capture], fds: list[int], max_bytes: int = 1 << 22) -> None:
    """Read what is already buffered in ``fds`` without waiting (at most ``max_bytes``)."""
    for fd in fds:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        read = 0
        while read < max_bytes:
            try:
                chunk = os.read(fd, _READ_CHUNK)
            except BlockingIOError:
                break
            if not chunk:
                break
            captures[fd].add(chunk)
            read += len(chunk)


def _result(
    captures: dict[str, _Capture],
    token: str,
    tests: list[str],
    returncode: int | None,
    timed_out: str,
    wall_s: float,
) -> SandboxResult:
    stdout, stderr = captures["stdout"], captures["stderr"]
    events = [
        line.split()[1:]
        for line in captures["result"].text().splitlines()
        if line.startswith(token + " ")
    ]
    kinds = {event[0] for event in events if event}
    if returncode == SETUP_FAILED and not kinds:
        raise RewardError(
            f"code sandbox: the child could not lock itself down ({stderr.text().strip()}). "
            "Fix: run where the probed isolation works, or report this as a bug."
        )
    passed = len({event[1] for event in events if event[0] == "pass" and len(event) > 1})
    errors = [event[1] for event in events if event[0] == "error" and len(event) > 1]
    status, detail = _status(kinds, errors, returncode, timed_out, stderr.text())
    return SandboxResult(
        status=status,
        passed=min(passed, len(tests)),
        total=len(tests),
        stdout=stdout.text(),
        stderr=stderr.text(),
        truncated=bool(stdout.dropped or stderr.dropped),
        returncode=returncode,
        wall_s=wall_s,
        detail=detail,
    )


def _status(
    kinds: set[str], errors: list[str], returncode: int | None, timed_out: str, stderr: str
) -> tuple[str, str]:
    if "done" in kinds:
        return "ok", ""
    if timed_out == "wall clock":
        return "timeout", timed_out
    if errors:
        return ("memory" if errors[0] == "MemoryError" else "error"), errors[0]
    if timed_out:
        return "timeout", timed_out
    if returncode is not None and returncode < 0:
        number = -returncode
        return "crash", signal.Signals(number).name if number in signal.valid_signals() else str(
            number
        )
    if "MemoryError" in stderr:
        return "memory", "MemoryError"
    return "crash", f"exit code {returncode}"


def _clean_env(workdir: Path) -> dict[str, str]:
    """Nothing of the trainer's environment (tokens, keys, proxies) reaches the code."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }


def _exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it (its rusage is read by :func:`_reap`)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _reap(proc: subprocess.Popen) -> float:
    """Wait for the child; return the CPU seconds it and the processes it waited for used.

    Counting CPU here rather than reading the exit signal: the limit's SIGKILL reaches a pid
    namespace's first process (which ignores SIGXCPU), and ``unshare`` then reports it as a
    plain exit code.
    """
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:
        proc.wait()
        return 0.0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _kill_cgroup(cgroup: Path, wait_s: float = 2.0) -> None:
    """SIGKILL every process in ``cgroup`` until it is empty (pids.max bounds the number)."""
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        try:
            pids = [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
        except OSError:
            return
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def _remove_cgroup(cgroup: Path, wait_s: float = 2.0) -> None:
    end = time.monotonic() + wait_s
    while True:
        try:
            cgroup.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:  # EBUSY while dying processes are still counted
            if time.monotonic() > end:
                log.warning("code sandbox: could not remove %s; processes linger in it", cgroup)
                return
            _kill_cgroup(cgroup, wait_s=0.05)
            time.sleep(0.01)


def _working_namespaces(root: bool) -> tuple[str, ...]:
    """The strongest ``unshare`` prefix that runs the interpreter here, or ()."""
    user = () if root else ("--map-root-user",)
    candidates = (
        ("unshare", *user, "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "--"),
        ("unshare", *user, "--net", "--"),
    )
    return next((prefix for prefix in candidates if _works(prefix)), ())


def _works(prefix: tuple[str, ...]) -> bool:
    """Whether ``prefix`` (a command that runs another) runs the interpreter here."""
    if shutil.which(prefix[0]) is None:
        return False
    try:
        done = subprocess.run(
            [*prefix, sys.executable, "-I", "-S", "-c", "pass"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _writable_pids_cgroup() -> Path | None:
    """This process's pids cgroup directory, if a child cgroup with ``pids.max`` can be made."""
    for candidate in _own_pids_cgroups():
        probe = candidate / f"rlhf-sandbox-probe-{os.getpid()}-{secrets.token_hex(3)}"
        try:
            probe.mkdir()
        except OSError:
            continue
        try:
            (probe / "pids.max").write_text("1")
            return candidate
        except OSError:
            continue
        finally:
            probe.rmdir()
    return None


def _own_pids_cgroups() -> list[Path]:
    """Where this process sits in each mounted hierarchy that has the pids controller."""
    try:
        memberships = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    places = {}
    for line in memberships:
        _, controllers, path = line.split(":", 2)
        places["cgroup2" if controllers == "" else controllers] = path
    found = []
    for mount in mounts:
        fields = mount.split()
        separator = fields.index("-")
        mount_root, mount_point = fields[3], fields[4]
        fstype, options = fields[separator + 1], fields[separator + 3].split(",")
        if fstype == "cgroup" and "pids" in options:
            key = next((k for k in places if "pids" in k.split(",")), None)
        elif fstype == "cgroup2":
            key = "cgroup2"
        else:
            continue
        if key is None or not places[key].startswith(mount_root):
            continue
        relative = places[key][len(mount_root) :].lstrip("/")
        directory = Path(mount_point) / relative
        if fstype == "cgroup2" and "pids" not in _read(directory / "cgroup.subtree_control"):
            continue
        found.append(directory)
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _landlock_abi() -> int:
    """The kernel's Landlock ABI version (0: none), as ``landlock_create_ruleset`` reports it."""
    if sys.platform != "linux":
        return 0
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    version = libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(0, int(version))


def _world_readable(path: Path) -> bool:
    """Whether every directory down to ``path`` can be searched by other users."""
    for part in [path, *path.parents]:
        try:
            if not part.stat().st_mode & 0o001:
                return False
        except OSError:
            return False
    return True
