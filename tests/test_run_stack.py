"""The process supervisor behind `make run`, driven with real (trivial) child processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from config.management.commands.run_stack import stack_commands

REPO = Path(__file__).resolve().parent.parent
SLEEPER = "import time; time.sleep(60)"

# A supervisor in its own process, so a real SIGTERM can be sent to it as `kill` or Ctrl-C would.
SUPERVISOR = textwrap.dedent("""
    import json, sys
    from config.management.commands.run_stack import ProcessGroup
    group = ProcessGroup(stop_timeout=float(sys.argv[1]), poll_interval=0.05)
    group.install_signal_handlers()
    for index, code in enumerate(json.loads(sys.argv[2])):
        group.start(f"child{index}", [sys.executable, "-c", code])
    print("PIDS " + json.dumps([p.pid for p in group.children.values()]), flush=True)
    sys.exit(group.run())
""")


def _start_supervisor(children: list[str], *, stop_timeout: float = 5.0) -> tuple[subprocess.Popen, list[int]]:
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, str(stop_timeout), json.dumps(children)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    for line in supervisor.stdout:
        if line.startswith("PIDS "):
            return supervisor, json.loads(line[5:])
    raise AssertionError(f"supervisor exited early with {supervisor.wait()}")


def _is_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_alive(pids: list[int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(psutil.pid_exists(pid) and not _is_gone(pid) for pid in pids):
            return
        time.sleep(0.05)
    raise AssertionError(f"children {pids} did not all start")


def test_sigterm_stops_every_child_and_exits_zero():
    supervisor, pids = _start_supervisor([SLEEPER, SLEEPER])
    _wait_alive(pids)
    started = time.monotonic()
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=15) == 0
    assert time.monotonic() - started < 5  # sleepers die on SIGTERM; no waiting for the kill timeout
    assert all(_is_gone(pid) for pid in pids)
    assert "process_group.stopping signal=SIGTERM" in supervisor.stdout.read()


def test_sigint_stops_every_child():
    supervisor, pids = _start_supervisor([SLEEPER])
    _wait_alive(pids)
    supervisor.send_signal(signal.SIGINT)
    assert supervisor.wait(timeout=15) == 0
    assert all(_is_gone(pid) for pid in pids)


def test_a_child_dying_stops_the_others_and_exits_nonzero():
    dies = "import sys, time; time.sleep(0.5); sys.exit(3)"
    supervisor, pids = _start_supervisor([SLEEPER, dies, SLEEPER])
    assert supervisor.wait(timeout=15) == 3
    assert all(_is_gone(pid) for pid in pids)
    assert "process.exited_unexpectedly name=child1 code=3" in supervisor.stdout.read()


def test_a_child_exiting_zero_still_counts_as_a_failure():
    supervisor, pids = _start_supervisor([SLEEPER, "pass"])
    assert supervisor.wait(timeout=15) == 1
    assert all(_is_gone(pid) for pid in pids)


def test_stubborn_child_and_its_grandchild_are_killed_after_the_timeout(tmp_path):
    grandchild_file = tmp_path / "grandchild.pid"
    stubborn = textwrap.dedent(f"""
        import signal, subprocess, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        grandchild = subprocess.Popen(["sleep", "60"])
        open({str(grandchild_file)!r}, "w").write(str(grandchild.pid))
        time.sleep(60)
    """)
    supervisor, pids = _start_supervisor([stubborn], stop_timeout=1.0)
    deadline = time.monotonic() + 10
    while not (grandchild_file.exists() and grandchild_file.read_text()):
        assert time.monotonic() < deadline, "the child never started its grandchild"
        time.sleep(0.05)
    grandchild = int(grandchild_file.read_text())
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=15) == 0
    output = supervisor.stdout.read()
    assert "process.killed name=child0" in output
    assert _is_gone(pids[0])
    # The grandchild died with its process group, not left running as an orphan.
    deadline = time.monotonic() + 5
    while not _is_gone(grandchild):
        assert time.monotonic() < deadline, "the grandchild outlived the stack"
        time.sleep(0.05)


def test_stack_commands_name_the_web_server_worker_and_beat():
    commands = stack_commands(host="127.0.0.1", port=8123, gunicorn=False, worker=True, beat=True)
    assert list(commands) == ["web", "worker", "beat"]
    assert commands["web"][-2:] == ["127.0.0.1:8123", "--noreload"]
    assert commands["worker"][commands["worker"].index("-Q") + 1] == "default,training"
    assert commands["beat"][-4:] == ["-A", "config", "beat", "-l", "info"][-4:]
    only_web = stack_commands(host="0.0.0.0", port=9000, gunicorn=True, worker=False, beat=False)
    assert list(only_web) == ["web"]
    assert "config.wsgi" in only_web["web"] and "0.0.0.0:9000" in only_web["web"]
    assert only_web["web"][only_web["web"].index("-c") + 1] == "python:config.gunicorn"


def test_the_stack_gets_its_own_emptied_metrics_directory(tmp_path, monkeypatch):
    from config import metrics
    from config.management.commands.run_stack import metrics_directory_prepare

    stale = tmp_path / "var" / "metrics" / "stack-8123" / "counter_host-1.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"from an earlier run")
    monkeypatch.setattr(metrics, "MULTIPROCESS_DIRECTORY", None)

    assert metrics_directory_prepare(base_dir=tmp_path, port=8123) == {"PROMETHEUS_MULTIPROC_DIR": str(stale.parent)}
    assert list(stale.parent.iterdir()) == []

    # A directory chosen in the environment is the operator's: kept, and inherited as it is.
    monkeypatch.setattr(metrics, "MULTIPROCESS_DIRECTORY", str(tmp_path / "theirs"))
    assert metrics_directory_prepare(base_dir=tmp_path, port=8123) == {}
