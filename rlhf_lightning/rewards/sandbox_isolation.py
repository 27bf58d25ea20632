"""Which containment layers work on this machine, probed once per process: namespaces
(``unshare``), ``setpriv --pdeathsig``, a writable pids cgroup, Landlock, and whether runs must
switch to a fresh uid. ``rewards/sandbox.py`` says what each layer contains.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

# The run's first process gets SIGKILL when the thread that started it dies (setpriv execs the
# next command with the setting kept); with a pid namespace, everything in it follows.
PARENT_DEATH = ("setpriv", "--pdeathsig", "KILL", "--")


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
        parent_death=_works(PARENT_DEATH),
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
