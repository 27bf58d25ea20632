"""One sandboxed run's mechanics, for ``rewards/sandbox.py``: the job file the child reads,
the pids cgroup, stdout/stderr and the result pipe read as they fill (output capped), the
result parsed from the child's token lines, and killing and reaping whatever is left.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, NamedTuple

from rlhf_lightning.errors import RewardError

log = logging.getLogger(__name__)

SETUP_FAILED = 121  # the child's exit code when it could not lock itself down
STATUSES = ("ok", "error", "timeout", "memory", "crash", "skipped")
RESULT_PIPE_BYTES = 1 << 16
READ_CHUNK = 1 << 16
_counter = itertools.count()


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


def write_job(workdir: Path, job: dict[str, Any]) -> Path:
    """Write the child's instructions into ``workdir``; only their owner can read them (the
    child, before it drops privileges, reads and deletes the file)."""
    path = workdir / ".job.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(job, file)
    return path


def collect(
    proc: subprocess.Popen, result_fd: int, deadline: float, max_output_bytes: int
) -> tuple[dict[str, Capture], bool]:
    """Read stdout, stderr and the result pipe until the child is gone or time is up.

    Returns:
        (the captures by name: ``stdout``, ``stderr``, ``result``; whether time ran out).
    """
    assert proc.stdout is not None and proc.stderr is not None
    captures = {
        proc.stdout.fileno(): Capture("stdout", max_output_bytes),
        proc.stderr.fileno(): Capture("stderr", max_output_bytes),
        result_fd: Capture("result", RESULT_PIPE_BYTES),
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
                chunk = os.read(key.fd, READ_CHUNK)
                if chunk:
                    captures[key.fd].add(chunk)
                else:
                    selector.unregister(key.fd)
            # The child exited but something it started holds the pipes open: stop here.
            if selector.get_map() and exited(proc.pid):
                kill_group(proc.pid)
                drain(captures, list(selector.get_map()))
                break
    return {c.name: c for c in captures.values()}, timed_out


def make_cgroup(parent: str, max_processes: int) -> Path:
    """A fresh pids cgroup under ``parent`` allowing ``max_processes`` processes."""
    name = f"rlhf-sandbox-{os.getpid()}-{next(_counter)}-{secrets.token_hex(3)}"
    path = Path(parent) / name
    try:
        path.mkdir()
    except OSError as err:
        raise RewardError(
            f"code sandbox: cannot create the pids cgroup {path} ({err}). Fix: check that "
            f"{parent} is writable (it was when first probed)."
        ) from err
    try:
        (path / "pids.max").write_text(str(max_processes))
    except OSError as err:
        path.rmdir()
        raise RewardError(
            f"code sandbox: cannot set pids.max in {path} ({err}). Fix: give the trainer a "
            "pids cgroup it may configure, or none (runs then use RLIMIT_NPROC)."
        ) from err
    return path


def sweep(uid: int | None, cgroup: Path | None) -> None:
    """Kill what the run left behind (a dying pid namespace may still hold some a moment)."""
    if cgroup is not None:
        kill_cgroup(cgroup)
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


class Capture:
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


def drain(captures: dict[int, Capture], fds: list[int], max_bytes: int = 1 << 22) -> None:
    """Read what is already buffered in ``fds`` without waiting (at most ``max_bytes``)."""
    for fd in fds:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        read = 0
        while read < max_bytes:
            try:
                chunk = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                break
            if not chunk:
                break
            captures[fd].add(chunk)
            read += len(chunk)


def parse_result(
    captures: dict[str, Capture],
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


def clean_env(workdir: Path) -> dict[str, str]:
    """Nothing of the trainer's environment (tokens, keys, proxies) reaches the code."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }


def exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it (its rusage is read by :func:`reap`)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def reap(proc: subprocess.Popen) -> float:
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


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def kill_cgroup(cgroup: Path, wait_s: float = 2.0) -> None:
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


def remove_cgroup(cgroup: Path, wait_s: float = 2.0) -> None:
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
            kill_cgroup(cgroup, wait_s=0.05)
            time.sleep(0.01)
