"""Helpers shared by the benchmarks: a scratch database on the embedded server, and table printing."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
SHARED_MOVIELENS = REPO.parent / "shared" / "datasets" / "ml-100k"


def movielens_dir() -> Path | None:
    directory = Path(os.environ.get("MOVIELENS_DIR") or SHARED_MOVIELENS)
    return directory if (directory / "u.data").exists() else None


def print_table(title: str, columns: list[str], rows: list[list], note: str = "") -> None:
    """A Markdown table on stdout, so `make bench` can concatenate every benchmark's output."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        print("| " + " | ".join(_cell(value) for value in row) + " |")
    if note:
        print(f"\n{note}")
    sys.stdout.flush()


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


@contextmanager
def scratch_database(name: str, *, keep: bool = False):
    """Create database ``name`` (dropped first if it exists) and yield its URL.

    Uses DATABASE_URL's server when set, otherwise the embedded one; never touches the project's
    own database.
    """
    import psycopg
    from psycopg import sql

    base = os.environ.get("DATABASE_URL")
    if base:
        # Swap the path (the database name) only: a socket URL keeps ``?host=/dir`` in its query.
        parts = urlsplit(base)
        admin_url, url = (urlunsplit(parts._replace(path=f"/{database}")) for database in ("postgres", name))
    else:
        sys.path.insert(0, str(REPO))
        from config.embedded_postgres import ensure_running

        server = ensure_running(database="postgres")
        admin_url, url = server.url("postgres"), server.url(name)
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield url
    finally:
        if not keep:
            with psycopg.connect(admin_url, autocommit=True) as connection:
                connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def manage(url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, DATABASE_URL=url)
    env.pop("CELERY_BROKER_URL", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, check=check, capture_output=True, text=True
    )
