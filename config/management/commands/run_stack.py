"""`manage.py run_stack`: the foreground process behind `make run`.

It migrates, loads the demo data, then supervises the web server, a Celery worker and Celery beat
as child processes. Each child gets its own process group so that stopping it also stops what it
forked (Celery's prefork pool) when it has to be killed. Ctrl-C or SIGTERM stops everything; a
child that dies on its own takes the others down and makes `run_stack` exit non-zero, so a
half-running stack never lingers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from django.core.management.base import BaseCommand

from config.env import environment_with

MANAGE_PY = Path(__file__).resolve().parents[3] / "manage.py"


@dataclass
class ProcessGroup:
    """Start named child processes, watch them, and stop them all together.

    ``stop_timeout`` is how long children get after SIGTERM before they are killed.
    """

    out: TextIO = field(default_factory=lambda: sys.stdout)
    stop_timeout: float = 10.0
    poll_interval: float = 0.2
    children: dict[str, subprocess.Popen] = field(default_factory=dict)
    _stop_signal: int | None = None

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None) -> subprocess.Popen:
        # A new session makes the child the leader of its own process group: Ctrl-C in the
        # terminal reaches only us, and we decide the order and the grace period.
        process = subprocess.Popen(argv, env=env, start_new_session=True)
        self.children[name] = process
        self.out.write(f"process.started name={name} pid={process.pid} argv={' '.join(argv)}\n")
        self.out.flush()
        return process

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self._stop_signal = signum

    def run(self) -> int:
        """Wait until a signal arrives or a child exits; then stop all children.

        Returns 0 after a stop signal, and the dead child's exit code (at least 1) otherwise:
        a server or worker is never supposed to exit by itself.
        """
        exit_code = 0
        while self._stop_signal is None:
            dead = self._first_exited()
            if dead is not None:
                name, code = dead
                self.out.write(f"process.exited_unexpectedly name={name} code={code}: stopping the others\n")
                exit_code = code if code and code > 0 else 1
                break
            time.sleep(self.poll_interval)
        else:
            self.out.write(f"process_group.stopping signal={signal.Signals(self._stop_signal).name}\n")
        self.stop()
        return exit_code

    def _first_exited(self) -> tuple[str, int] | None:
        for name, process in self.children.items():
            code = process.poll()
            if code is not None:
                return name, code
        return None

    def stop(self) -> None:
        """SIGTERM every child, wait up to ``stop_timeout``, then SIGKILL its whole process group.

        SIGTERM goes to the child alone: Celery's main process shuts its own pool down cleanly
        (warm shutdown), which it cannot do when the pool is killed under it at the same time.
        """
        for process in self.children.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for name, process in self.children.items():
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.out.write(f"process.killed name={name} pid={process.pid} after={self.stop_timeout}s\n")
                _signal_group(process, signal.SIGKILL)
                process.wait()
        # A group can outlive its leader (a grandchild that ignored SIGTERM): make sure it is gone.
        for process in self.children.values():
            _signal_group(process, signal.SIGKILL)
        self.out.flush()


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group has already exited
        os.killpg(process.pid, signum)


def metrics_directory_prepare(*, base_dir: Path, port: int) -> dict[str, str]:
    """Give the stack's processes one metrics directory (multiprocess mode), emptied, unless one is set.

    The web server and the Celery worker run in other processes than the one a scrape reaches, so
    they share a directory (config/metrics.py). The default one belongs to this stack alone (one per
    port) and every process that writes into it is started below, so the files of an earlier run are
    stale and removed. A directory set in the environment is left as it is: other processes may
    be writing there. This process itself stays single-process (its metrics module was imported
    when Django loaded), so the first training it runs before the stack starts is not counted.
    Returns the variables to add to the children's environment (none when it had a directory).
    """
    from config.metrics import MULTIPROCESS_DIRECTORY

    if MULTIPROCESS_DIRECTORY:
        return {}
    directory = base_dir / "var" / "metrics" / f"stack-{port}"
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    return {"PROMETHEUS_MULTIPROC_DIR": str(directory)}


def stack_commands(*, host: str, port: int, gunicorn: bool, worker: bool, beat: bool) -> dict[str, list[str]]:
    """The child processes of the stack, by name."""
    python = sys.executable
    if gunicorn:
        web = [
            python,
            "-m",
            "gunicorn",
            "-c",
            "python:config.gunicorn",
            "config.wsgi",
            "--bind",
            f"{host}:{port}",
            "--workers",
            "2",
            "--access-logfile",
            "-",
        ]
    else:
        web = [python, str(MANAGE_PY), "runserver", f"{host}:{port}", "--noreload"]
    commands = {"web": web}
    if worker:
        commands["worker"] = [
            python,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-Q",
            "default,training",
            "--concurrency",
            "2",
            "-l",
            "info",
        ]
    if beat:
        commands["beat"] = [python, "-m", "celery", "-A", "config", "beat", "-l", "info"]
    return commands


class Command(BaseCommand):
    help = "Migrate, load demo data, and run the web server, Celery worker and beat until Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=None, help="Default: $PORT, else 8000.")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--gunicorn", action="store_true", help="Serve with gunicorn instead of runserver.")
        parser.add_argument("--no-worker", action="store_true")
        parser.add_argument("--no-beat", action="store_true")
        parser.add_argument("--no-demo", action="store_true", help="Skip bootstrap_demo.")

    def handle(self, *args, **options):
        from django.conf import settings
        from django.core.management import call_command
        from django.db import connections

        port = options["port"] or settings.RUN_STACK_PORT
        host = options["host"]
        call_command("migrate", interactive=False, verbosity=1, stdout=self.stdout)
        if not options["no_demo"]:
            call_command("bootstrap_demo", stdout=self.stdout)
            self._ensure_trained_model(call_command)
        # The children open their own connections; ours would only sit idle for hours.
        connections.close_all()

        child_environment = environment_with(**metrics_directory_prepare(base_dir=Path(settings.BASE_DIR), port=port))
        group = ProcessGroup(out=self.stdout)
        group.install_signal_handlers()
        commands = stack_commands(
            host=host,
            port=port,
            gunicorn=options["gunicorn"],
            worker=not options["no_worker"],
            beat=not options["no_beat"],
        )
        try:
            for name, argv in commands.items():
                group.start(name, argv, env=child_environment)
        except OSError:
            group.stop()
            raise
        base = f"http://{'localhost' if host in {'127.0.0.1', '0.0.0.0'} else host}:{port}"
        self.stdout.write(
            self.style.SUCCESS(
                f"\nThe stack is up ({', '.join(commands)}). Ctrl-C stops it.\n"
                f"  Dashboard: {base}/\n"
                f"  Admin:     {base}/admin/\n"
                f"  API docs:  {base}/api/docs/\n"
            )
        )
        exit_code = group.run()
        if exit_code:
            sys.exit(exit_code)

    def _ensure_trained_model(self, call_command) -> None:
        """Train a first model in this process so the dashboard opens with recommendations.

        In-process rather than through the worker: the worker is not started yet, and a first
        `make run` should not open on an empty homepage.
        """
        from catalog.models import Feedback
        from recommender.selectors import active_version

        if active_version() is not None or not Feedback.objects.exists():
            return
        self.stdout.write("No active model yet: training the first one (about 15 s on MovieLens 100k)...")
        try:
            call_command("train", inline=True, stdout=self.stdout)
        except Exception as error:  # the stack still serves popular items as a fallback
            self.stderr.write(f"The first training failed: {error}; serving fallbacks until a model is trained.")
