"""The program a sandbox runs: lock itself down, then run untrusted code and its tests.

Run by :mod:`rlhf_lightning.rewards.sandbox` as ``python -I -c <this source> <job file>``; it is
never imported. Standard library only, one pass from top to bottom:

1. read the job (code, tests, limits, the result pipe's fd and a random token) from the job
   file, then delete the file;
2. join the per-run pids cgroup (when the parent made one), set resource limits;
3. block Python sockets when there is no network namespace (before 4: it imports);
4. drop privileges: as root either switch to an unprivileged uid, or stay uid 0 with every
   capability dropped; then ``no_new_privs``;
5. restrict itself with Landlock (writes only inside the working directory, no TCP, no signals
   or abstract sockets outside the sandbox) where the kernel has it;
6. run the code, then each test, reporting ``<token> <event>`` lines on the result pipe.

A failure in steps 1-5 exits with :data:`SETUP_FAILED` before any untrusted code runs, so a
sandbox that could not lock itself down never runs the code.

What the pipe protocol does and does not prove: exiting early (``sys.exit``, ``os._exit``)
or printing fake results cannot fake a pass, since only this harness writes pass lines, after
the test ran, to a pipe that is not stdout, each prefixed with a token the code never sees in
its source. Code that deliberately searches its own process (frames, ``gc``) for the token
and the pipe could forge lines; the sandbox contains damage, it does not make an adversarial
program honest.
"""

import contextlib
import ctypes
import json
import os
import resource
import sys
import traceback

SETUP_FAILED = 121

# Landlock (linux/landlock.h). Syscall numbers are the same on every architecture (generic table).
_LL_CREATE, _LL_ADD_RULE, _LL_RESTRICT = 444, 445, 446
_LL_RULE_PATH_BENEATH = 1
_FS_WRITE_FILE = 1 << 1
_FS_REMOVE_DIR, _FS_REMOVE_FILE = 1 << 4, 1 << 5
_FS_MAKE_ALL = sum(1 << bit for bit in range(6, 13))  # char, dir, reg, sock, fifo, block, sym
_FS_REFER, _FS_TRUNCATE = 1 << 13, 1 << 14  # ABI 2, ABI 3
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6
_PR_SET_NO_NEW_PRIVS, _PR_CAPBSET_DROP = 38, 24
_CAP_VERSION_3 = 0x20080522


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_libc = ctypes.CDLL(None, use_errno=True)


def _check(result, what):
    if result < 0:
        raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")
    return result


def _drop_capabilities():
    """Stay uid 0 but without any capability (no module loading, no DAC override, no mounts)."""
    for cap in range(64):
        if _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) < 0:
            break  # EINVAL past the last capability; EPERM where there is nothing to drop
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def _landlock(abi, workdir):
    """Writes only beneath ``workdir`` (and to /dev/null); no TCP; no signals out (by ABI)."""
    fs = _FS_WRITE_FILE | _FS_REMOVE_DIR | _FS_REMOVE_FILE | _FS_MAKE_ALL
    fs |= (_FS_REFER if abi >= 2 else 0) | (_FS_TRUNCATE if abi >= 3 else 0)
    net = _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0
    scoped = _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL if abi >= 6 else 0
    attr = _RulesetAttr(fs, net, scoped)  # older kernels accept the zeroed tail fields
    size = ctypes.c_size_t(ctypes.sizeof(attr))
    ruleset = _check(_libc.syscall(_LL_CREATE, ctypes.byref(attr), size, 0), "landlock")
    file_rights = fs & (_FS_WRITE_FILE | _FS_TRUNCATE)
    for path, rights in ((workdir, fs), (os.devnull, file_rights)):
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        rule = _PathBeneath(rights, fd)
        _check(
            _libc.syscall(_LL_ADD_RULE, ruleset, _LL_RULE_PATH_BENEATH, ctypes.byref(rule), 0),
            f"landlock rule for {path}",
        )
        os.close(fd)
    _check(_libc.syscall(_LL_RESTRICT, ruleset, 0), "landlock_restrict_self")
    os.close(ruleset)


def _block_sockets():
    """No network namespace: refuse non-Unix sockets in Python (ctypes could still bypass it)."""
    import _socket
    import socket

    def refuse(family):
        if family not in (socket.AF_UNIX, getattr(socket, "AF_NETLINK", -2)):
            raise PermissionError(1, "network access is disabled in this sandbox")

    class GuardedSocket(_socket.socket):
        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            if fileno is None:
                refuse(socket.AF_INET if family == -1 else family)
            super().__init__(family, type, proto, fileno)

    original_init = socket.socket.__init__

    def guarded_init(self, family=-1, type=-1, proto=-1, fileno=None):
        if fileno is None:
            refuse(socket.AF_INET if family == -1 else family)
        original_init(self, family, type, proto, fileno)

    socket.socket.__init__ = guarded_init
    _socket.socket = _socket.SocketType = GuardedSocket


def _setup(job):
    if job["cgroup"]:
        with open(os.path.join(job["cgroup"], "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))
    for name, value in job["rlimits"].items():
        soft, hard = value if isinstance(value, list) else (value, value)
        resource.setrlimit(getattr(resource, name), (soft, hard))
    if job["block_sockets"]:
        _block_sockets()  # before a uid switch: it imports, and the new uid may not read them
    if job["uid"] is not None:
        os.setgroups([])
        os.setgid(job["uid"])
        os.setuid(job["uid"])
    elif job["drop_capabilities"]:
        _drop_capabilities()
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    if job["landlock_abi"]:
        _landlock(job["landlock_abi"], job["workdir"])


def _run(job):
    token, fd = job["token"], job["result_fd"]

    def report(event):
        with contextlib.suppress(OSError):  # the code closed the pipe: the parent counts what came
            os.write(fd, f"{token} {event}\n".encode())

    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(job["code"], "<solution>", "exec"), namespace)
    except BaseException as err:  # SystemExit too: leaving before the tests passes nothing
        report(f"error {type(err).__name__}")
        traceback.print_exc()
        _exit(1)
    report(f"ran {len(job['tests'])}")
    for index, test in enumerate(job["tests"]):
        try:
            exec(compile(test, f"<test {index}>", "exec"), namespace)
        except BaseException as err:
            report(f"fail {index} {type(err).__name__}")
        else:
            report(f"pass {index}")
    report("done")
    _exit(0)


def _exit(code):
    """Flush what the code printed, then leave without waiting for its threads or atexit hooks."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _main():
    try:
        with open(sys.argv[1]) as file:
            job = json.load(file)
        os.unlink(sys.argv[1])
        _setup(job)
    except BaseException as err:
        sys.stderr.write(f"sandbox setup failed: {type(err).__name__}: {err}\n")
        sys.stderr.flush()
        os._exit(SETUP_FAILED)
    del sys.argv[1:]
    _run(job)


_main()
