"""The code sandbox contains hostile programs, scores them 0, and hands control back quickly.

Each threat runs with a small timeout; every test also checks the wall time the caller waited
and, where processes could linger, that none of the run's processes is left.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rlhf_lightning.errors import RewardError
from rlhf_lightning.rewards import sandbox as sandbox_module
from rlhf_lightning.rewards.sandbox import Sandbox, SandboxLimits, probe_isolation
from rlhf_lightning.rewards.sandbox_run import remove_cgroup

ISOLATION = probe_isolation()
ROOT = os.geteuid() == 0
# Each run's limits: short, so a contained threat ends well inside a test's budget.
LIMITS = SandboxLimits(timeout_s=1.5, cpu_s=2, memory_mb=256, max_processes=12)


@pytest.fixture
def runs_root() -> Path:
    """A directory of our own for the runs' working directories (searchable by a run's uid)."""
    root = Path(tempfile.mkdtemp(prefix="sandbox-test-"))
    root.chmod(0o755)
    yield root
    for leftover in root.iterdir():  # a failed test may leave one; never hide that silently
        raise AssertionError(f"run directory {leftover} was not deleted")
    root.rmdir()


def make_sandbox(root: Path, **changes) -> Sandbox:
    limits = dataclasses.replace(LIMITS, **changes.pop("limits", {}))
    isolation = dataclasses.replace(ISOLATION, **changes) if changes else ISOLATION
    return Sandbox(limits, isolation=isolation, workdir_root=str(root))


def processes_under(root: Path) -> list[int]:
    """Live processes started for runs under ``root`` (their command line names the job file)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(root).encode() in cmdline.read_bytes():
                status = (cmdline.parent / "stat").read_text()
                if status.split(") ", 1)[1][0] != "Z":  # zombies hold nothing
                    found.append(int(cmdline.parent.name))
        except OSError:
            pass
    return found


def no_processes_left(root: Path, wait_s: float = 3.0) -> bool:
    """True once none is left; a dying pid namespace may take a moment on a busy machine."""
    end = time.monotonic() + wait_s
    while processes_under(root):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def test_tests_pass_and_fail_in_the_code_namespace(runs_root):
    result = make_sandbox(runs_root).run(
        "def double(x):\n    return 2 * x\nprint('hello')",
        ["assert double(2) == 4", "assert double(3) == 5", "assert undefined_name"],
    )
    assert (result.status, result.passed, result.total) == ("ok", 1, 3)
    assert result.fraction == pytest.approx(1 / 3)
    assert result.stdout == "hello\n" and not result.truncated


def test_infinite_loop_times_out(runs_root):
    start = time.monotonic()
    result = make_sandbox(runs_root).run("while True:\n    pass", ["assert True"])
    assert (result.status, result.passed, result.fraction) == ("timeout", 0, 0.0)
    assert time.monotonic() - start < LIMITS.timeout_s + 1.0
    assert no_processes_left(runs_root)


def test_cpu_limit_ends_a_busy_program_before_the_wall_clock(runs_root):
    start = time.monotonic()
    sandbox = make_sandbox(runs_root, limits={"timeout_s": 20.0, "cpu_s": 1})
    result = sandbox.run("x = 0\nwhile True:\n    x += 1")
    assert (result.status, result.detail) == ("timeout", "cpu")
    assert time.monotonic() - start < 4.0  # 1 s of CPU, on a machine other work shares


@pytest.mark.parametrize(
    "code",
    [
        "x = bytearray(8 * 1024**3)",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024**2))",
    ],
    ids=["one-allocation", "growing"],
)
def test_memory_bomb_is_refused(runs_root, code):
    start = time.monotonic()
    # A small cap and a roomy clock: filling pages takes a while on a busy machine, and this
    # test is about the cap.
    sandbox = make_sandbox(runs_root, limits={"memory_mb": 128, "timeout_s": 5.0})
    result = sandbox.run(code, ["assert True"])
    assert (result.status, result.passed) == ("memory", 0)
    assert time.monotonic() - start < 5.0


FORK_COUNTER = """
import os, time
forks = 0
try:
    for _ in range(10_000):
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        forks += 1
except OSError as err:
    print("refused after", forks, type(err).__name__, flush=True)
"""
FORK_BOMB = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""


def test_fork_bomb_hits_the_process_limit(runs_root):
    result = make_sandbox(runs_root).run(FORK_COUNTER)
    assert result.status == "ok", result
    words = result.stdout.split()
    assert words[:2] == ["refused", "after"] and words[3] == "BlockingIOError"
    assert int(words[2]) < LIMITS.max_processes  # the first process counts too
    assert no_processes_left(runs_root)  # the 30 s sleepers were killed with the run


def test_fork_bomb_is_killed_with_all_its_processes(runs_root):
    start = time.monotonic()
    result = make_sandbox(runs_root).run(FORK_BOMB, ["assert True"])
    assert (result.status, result.passed) == ("timeout", 0)
    assert time.monotonic() - start < LIMITS.timeout_s + 1.5
    assert no_processes_left(runs_root)


@pytest.mark.skipif(not ROOT, reason="switching to an unprivileged uid needs root")
def test_fork_bomb_as_root_without_a_cgroup_is_capped_by_a_fresh_uid(runs_root):
    """RLIMIT_NPROC never binds uid 0: without a pids cgroup, runs switch to their own uid."""
    sandbox = make_sandbox(runs_root, cgroup_parent=None, switch_uid=True)
    result = sandbox.run(FORK_COUNTER)
    words = result.stdout.split()
    assert words[:2] == ["refused", "after"], result
    assert int(words[2]) < LIMITS.max_processes
    start = time.monotonic()
    bomb = sandbox.run(FORK_BOMB)
    assert bomb.status == "timeout"
    assert time.monotonic() - start < LIMITS.timeout_s + 1.5
    assert no_processes_left(runs_root)


def test_processes_that_leave_the_process_group_are_killed_too(runs_root):
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(60)\n"
        "    os._exit(0)\n"
    )
    for sandbox in (
        make_sandbox(runs_root),
        make_sandbox(runs_root, namespaces=(), network_namespace=False, pid_namespace=False),
    ):
        start = time.monotonic()
        assert sandbox.run(code).status == "ok"
        assert time.monotonic() - start < 3.0  # not the 60 s the grandchild holds the pipes
        assert no_processes_left(runs_root)


TRAINER = """
import sys, types
from pathlib import Path
# The sandbox modules without rlhf_lightning.rewards' __init__ (torch): starts fast.
rewards = types.ModuleType("rlhf_lightning.rewards")
rewards.__path__ = [str(Path(sys.argv[1]).parent)]
sys.modules["rlhf_lightning.rewards"] = rewards
from rlhf_lightning.rewards.sandbox import Sandbox, SandboxLimits
Sandbox(SandboxLimits(timeout_s=60), workdir_root=sys.argv[2]).run(
    "import os, time\\nos.fork()\\ntime.sleep(60)"
)
"""


@pytest.mark.skipif(not ISOLATION.parent_death, reason="needs setpriv --pdeathsig")
def test_runs_die_with_a_trainer_killed_outright(runs_root):
    trainer = subprocess.Popen(
        [sys.executable, "-c", TRAINER, sandbox_module.__file__, str(runs_root)]
    )
    try:
        end = time.monotonic() + 20  # the trainer imports, probes, starts the run
        while len(processes_under(runs_root)) < 2 and time.monotonic() < end:
            time.sleep(0.05)
        assert len(processes_under(runs_root)) >= 2  # the run and its forked child sleep
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
        assert no_processes_left(runs_root, wait_s=2.0)
    finally:
        trainer.kill()
        trainer.wait()
        # What a killed trainer leaves: its run's (empty) working and cgroup directories.
        for leftover in runs_root.iterdir():
            shutil.rmtree(leftover)
        if ISOLATION.cgroup_parent:
            for cgroup in Path(ISOLATION.cgroup_parent).glob(f"rlhf-sandbox-{trainer.pid}-*"):
                # The killed processes stay counted (EBUSY) until the kernel finishes their exit.
                remove_cgroup(cgroup, wait_s=10.0)
                assert not cgroup.exists(), f"{cgroup} still holds processes"


@pytest.fixture
def listening_port():
    """A TCP server of the test process on 127.0.0.1 that records whether anyone connected."""
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    yield server
    server.close()


NETWORK = """
import socket
for address in [("127.0.0.1", {port}), ("1.1.1.1", 80)]:
    try:
        socket.create_connection(address, timeout=1).close()
        print("connected", address)
    except OSError as err:
        print("blocked", type(err).__name__)
"""


@pytest.mark.parametrize("namespaces", [True, False], ids=["probed", "without-namespaces"])
def test_network_is_unreachable(runs_root, listening_port, namespaces):
    changes = {} if namespaces else {"namespaces": (), "network_namespace": False}
    sandbox = make_sandbox(runs_root, **changes)
    start = time.monotonic()
    result = sandbox.run(NETWORK.format(port=listening_port.getsockname()[1]))
    assert result.status == "ok", result
    assert "connected" not in result.stdout and result.stdout.count("blocked") == 2
    with pytest.raises(BlockingIOError):
        listening_port.accept()  # nobody got through
    assert time.monotonic() - start < 3.0


def test_huge_output_is_capped_without_blocking(runs_root):
    start = time.monotonic()
    result = make_sandbox(runs_root).run(
        "import sys\nsys.stdout.write('x' * 100_000_000)\nsys.stdout.flush()", ["assert True"]
    )
    assert (result.status, result.passed, result.truncated) == ("ok", 1, True)
    assert result.stdout == "x" * LIMITS.max_output_bytes
    assert time.monotonic() - start < 5.0


def test_deleting_files_stays_inside_the_working_directory(runs_root, tmp_path):
    outside = tmp_path / "keep" / "important.txt"
    outside.parent.mkdir()
    outside.write_text("precious")
    code = f"""
import os, shutil
open("scratch.txt", "w").write("mine")
os.remove("scratch.txt")
shutil.rmtree(os.getcwd(), ignore_errors=True)
for attempt in (lambda: os.remove({str(outside)!r}), lambda: shutil.rmtree({str(outside.parent)!r})):
    try:
        attempt()
        print("deleted")
    except OSError as err:
        print("refused", type(err).__name__)
"""
    result = make_sandbox(runs_root).run(code)
    assert result.status == "ok", result
    assert result.stdout.split() == ["refused", "PermissionError"] * 2
    assert outside.read_text() == "precious"
    # runs_root's fixture checks the run's own directory was deleted afterwards.


@pytest.mark.parametrize(
    "code, detail",
    [
        ("import os\nos._exit(0)", "exit code 0"),
        ("import ctypes\nctypes.string_at(0)", "SIGSEGV"),
    ],
    ids=["os._exit", "segfault"],
)
def test_crashes_score_zero(runs_root, code, detail):
    start = time.monotonic()
    result = make_sandbox(runs_root).run(code, ["assert True"])
    assert (result.status, result.detail, result.passed) == ("crash", detail, 0)
    assert time.monotonic() - start < 3.0


def test_leaving_early_or_printing_results_passes_nothing(runs_root):
    sandbox = make_sandbox(runs_root)
    exited = sandbox.run("import sys\nsys.exit(0)", ["assert True"])
    assert (exited.status, exited.detail, exited.passed) == ("error", "SystemExit", 0)
    forged = sandbox.run("print('pass 0')\nprint('done')\nimport os\nos._exit(0)", ["assert True"])
    assert (forged.status, forged.passed) == ("crash", 0)


def test_environment_secrets_do_not_reach_the_code(runs_root, monkeypatch):
    monkeypatch.setenv("RLHF_TEST_SECRET", "s3cret-token")
    code = f"""
import os
print(sorted(os.environ))
try:
    print(open("/proc/{os.getpid()}/environ", "rb").read())
except OSError as err:
    print("refused", type(err).__name__)
"""
    result = make_sandbox(runs_root).run(code)
    assert result.status == "ok", result
    assert "s3cret" not in result.stdout and "RLHF_TEST_SECRET" not in result.stdout
    assert result.stdout.split("\n")[0] == "['HOME', 'LANG', 'LC_ALL', 'PATH', 'TMPDIR']"


def test_run_many_runs_concurrently_within_a_total_bound(runs_root):
    good = ("def f():\n    return 1", ["assert f() == 1"])
    loop = ("while True:\n    pass", ["assert True"])
    sandbox = make_sandbox(runs_root, limits={"timeout_s": 5.0, "cpu_s": 10})
    start = time.monotonic()
    results = sandbox.run_many([good, good, loop, loop, loop, loop], 2, total_timeout_s=1.5)
    elapsed = time.monotonic() - start
    assert [r.status for r in results[:2]] == ["ok", "ok"]
    assert {r.status for r in results[2:]} <= {"timeout", "skipped"}
    assert "skipped" in {r.status for r in results[2:]}  # 2 workers, all loops to the bound
    assert all(r.passed == 0 for r in results[2:])
    assert elapsed < 1.5 + 1.5
    assert no_processes_left(runs_root)


def test_an_unusable_cgroup_fails_loudly(runs_root):
    sandbox = make_sandbox(runs_root, cgroup_parent="/nonexistent/cgroup")
    with pytest.raises(RewardError, match="pids cgroup"):
        sandbox.run("pass")


def test_limits_are_checked():
    with pytest.raises(RewardError, match="memory_mb >= 64"):
        SandboxLimits(memory_mb=16)
    with pytest.raises(RewardError, match="positive"):
        SandboxLimits(timeout_s=0)


def test_isolation_is_described():
    text = ISOLATION.describe()
    assert text.startswith("network: ") and "processes: " in text and "files: " in text
