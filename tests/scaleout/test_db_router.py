"""The replica settings and the router's decisions, in process (the real standby: test_replicas.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS
from django.test import override_settings

from config import db_router
from config.settings.database import replica_databases

PROJECT_DIR = Path(__file__).resolve().parents[2]
PRIMARY = {
    "ENGINE": "django.db.backends.postgresql",
    "NAME": "recs",
    "USER": "app",
    "PASSWORD": "pw",
    "HOST": "primary",
    "PORT": "5432",
    "OPTIONS": {"connect_timeout": 5, "options": "-c statement_timeout=100"},
    "CONN_MAX_AGE": 60,
    "CONN_HEALTH_CHECKS": True,
    "TEST": {"NAME": "test_recs"},
}


def test_each_replica_url_becomes_an_alias_that_mirrors_default_in_tests():
    replicas = replica_databases(
        ["postgresql://reader:secret@replica-a:5433/recs?sslmode=require", "postgresql://reader@/recs?host=/run/pg"],
        primary=PRIMARY,
    )
    assert list(replicas) == ["replica_0", "replica_1"]
    first, second = replicas["replica_0"], replicas["replica_1"]
    assert (first["HOST"], first["PORT"], first["USER"], first["PASSWORD"]) == ("replica-a", "5433", "reader", "secret")
    assert second["HOST"] == "/run/pg"
    # The primary's timeouts and connection reuse carry over; the URL's own options are added.
    assert first["OPTIONS"] == {**PRIMARY["OPTIONS"], "sslmode": "require"}
    assert first["CONN_MAX_AGE"] == 60 and first["CONN_HEALTH_CHECKS"] is True
    assert first["TEST"] == {"MIRROR": "default"}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://reader:secret@replica/recs", "entry 1"),
        ("replica-b:5432", "entry 1"),
        ("postgresql://reader:secret@replica:notaport/recs", "entry 1"),
        ("postgresql:///recs", "names no host"),
    ],
)
def test_a_malformed_replica_url_is_refused_with_its_position_and_no_password(url, message):
    with pytest.raises(ImproperlyConfigured, match=message) as raised:
        replica_databases(["postgresql://ok@replica-a/recs", url], primary=PRIMARY)
    assert "secret" not in str(raised.value)
    assert "DATABASE_REPLICA_URLS" in str(raised.value)


def test_a_malformed_replica_url_stops_the_process_at_startup():
    env = {**os.environ, "DATABASE_REPLICA_URLS": "postgresql://reader:secret@replica:port/recs"}
    completed = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=PROJECT_DIR,
        env={**env, "DJANGO_SETTINGS_MODULE": "config.settings.development"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode != 0
    assert "ImproperlyConfigured: DATABASE_REPLICA_URLS entry 0" in completed.stderr
    assert "secret" not in completed.stderr


@pytest.mark.skipif(bool(os.environ.get("DATABASE_REPLICA_URLS")), reason="this run configures replicas")
def test_without_replica_urls_nothing_is_routed():
    assert settings.DATABASE_ROUTERS == []
    assert list(settings.DATABASES) == ["default"]
    with db_router.serving_reads(profile_id=1) as alias:
        assert alias == DEFAULT_DB_ALIAS
        assert db_router.reading_connection().alias == DEFAULT_DB_ALIAS


@override_settings(DATABASE_REPLICA_ALIASES=["replica_0"])
def test_reads_in_a_serving_scope_go_to_its_replica_writes_and_fold_in_to_the_primary():
    router = db_router.ReplicaRouter()
    assert db_router.reading_alias() == DEFAULT_DB_ALIAS  # outside any serving scope
    token = db_router._serving_alias.set("replica_0")  # the scope serving_reads opens for an unpinned user
    try:
        assert db_router.reading_alias() == "replica_0"
        assert router.db_for_read(None) == "replica_0"
        assert router.db_for_write(None) == DEFAULT_DB_ALIAS
        with db_router.primary_reads_scope():
            assert router.db_for_read(None) == DEFAULT_DB_ALIAS
            # A serving scope opened inside keeps the primary.
            with db_router.serving_reads(profile_id=1) as alias:
                assert alias == DEFAULT_DB_ALIAS
        assert db_router.reading_alias() == "replica_0"
    finally:
        db_router._serving_alias.reset(token)
    assert router.allow_migrate(DEFAULT_DB_ALIAS, "catalog") is True
    assert router.allow_migrate("replica_0", "catalog") is False


@pytest.mark.django_db
@override_settings(DATABASE_REPLICA_ALIASES=["replica_0"])
def test_inside_a_transaction_on_the_primary_reads_stay_there():
    # pytest-django's test transaction is open on "default": a replica could not see its writes.
    with db_router.serving_reads(profile_id=1) as alias:
        assert alias == DEFAULT_DB_ALIAS
        assert db_router.ReplicaRouter().db_for_read(None) == DEFAULT_DB_ALIAS


@override_settings(
    DATABASE_REPLICA_ALIASES=["replica_0"],
    CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
)
def test_replicas_with_a_per_process_cache_are_warned_about():
    (warning,) = db_router.replica_pins_check()
    assert warning.id == "project.W001"
    assert "CACHE_URL" in warning.hint


@override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache"}})
def test_replicas_with_a_shared_cache_pass_the_check():
    with override_settings(DATABASE_REPLICA_ALIASES=["replica_0"]):
        assert db_router.replica_pins_check() == []
