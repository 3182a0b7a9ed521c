"""The embedded PostgreSQL and DATABASE_URL: a second real server must receive the migrations."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from config.embedded_postgres import ensure_running, stop

REPO = Path(__file__).resolve().parent.parent
pgvector_migration = importlib.import_module("catalog.migrations.0001_pgvector")


def _manage(*args: str, database_url: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, DATABASE_URL=database_url)
    environment.pop("TEST_DATABASE_NAME", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=environment, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def second_server(tmp_path):
    path = tmp_path / "pg2"
    server = ensure_running(path=path, database="other")
    yield path, server
    stop(path)


def test_database_url_sends_everything_to_that_server(second_server):
    path, server = second_server
    url = server.url("other")
    assert server.socket_dir == str(path)
    if settings.EMBEDDED_POSTGRES is not None:
        assert settings.EMBEDDED_POSTGRES.socket_dir != server.socket_dir

    migrated = _manage("migrate", "--noinput", database_url=url)
    assert migrated.returncode == 0, migrated.stderr
    assert "Applying catalog.0001_pgvector... OK" in migrated.stdout

    probe = _manage(
        "shell",
        "-c",
        "from django.db import connection as c; s = c.settings_dict; "
        "print(s['HOST'], s['NAME'], c.cursor().execute('select current_database()').fetchone()[0])",
        database_url=url,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip().splitlines()[-1].split() == [str(path), "other", "other"]

    with psycopg.connect(url) as other:
        assert other.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        assert other.execute("SELECT to_regclass('catalog_item')").fetchone()[0] == "catalog_item"
        applied = other.execute("SELECT count(*) FROM django_migrations WHERE app = 'catalog'").fetchone()[0]
        assert applied >= 3

    if settings.EMBEDDED_POSTGRES is not None:
        # The default embedded server was not touched: it never even heard of the "other" database.
        with psycopg.connect(settings.EMBEDDED_POSTGRES.url("postgres")) as default:
            assert default.execute("SELECT 1 FROM pg_database WHERE datname = 'other'").fetchone() is None


def test_embedded_postgres_command_with_database_url(second_server):
    _path, server = second_server
    url = server.url("other")
    stopped = _manage("embedded_postgres", "stop", database_url=url)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == "DATABASE_URL is set: there is no embedded PostgreSQL to stop."
    printed = _manage("embedded_postgres", "url", database_url=url)
    assert printed.stdout.strip() == url
    # "stop" really did nothing: the server behind DATABASE_URL still answers.
    with psycopg.connect(url) as other:
        assert other.execute("SELECT 1").fetchone() == (1,)


def test_stop_reports_whether_a_server_was_running(tmp_path):
    path = tmp_path / "pg3"
    ensure_running(path=path, database="third")
    assert stop(path) is True
    assert stop(path) is False
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"postgresql://postgres@/third?host={path}", connect_timeout=2)


@pytest.mark.skipif(settings.EMBEDDED_POSTGRES is None, reason="DATABASE_URL points at an external server")
def test_status_of_the_shared_server(capsys):
    call_command("embedded_postgres", "status")
    output = capsys.readouterr().out
    assert "state:      running" in output
    assert f"socket dir: {settings.EMBEDDED_POSTGRES.socket_dir}" in output


@pytest.mark.django_db
def test_missing_pgvector_is_reported_with_the_fix():
    # A temporary view shadows the catalogue view for this session only (pg_temp is searched before
    # pg_catalog), so the real check runs against a server that "has no pgvector".
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP VIEW pg_available_extensions AS SELECT * FROM pg_catalog.pg_available_extensions WHERE false"
        )
    with pytest.raises(RuntimeError) as raised, connection.schema_editor() as editor:
        pgvector_migration.create_vector_extension(None, editor)
    message = str(raised.value)
    assert message == pgvector_migration.MISSING_PGVECTOR
    assert "no pgvector extension available" in message and "unset DATABASE_URL" in message


@pytest.mark.django_db
def test_pgvector_check_passes_where_the_extension_exists():
    with connection.schema_editor() as editor:
        pgvector_migration.create_vector_extension(None, editor)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
        assert cursor.fetchone() == (1,)
