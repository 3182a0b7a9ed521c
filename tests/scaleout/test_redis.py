"""CACHE_URL on a real redis-server: one cache shared by every process (the broker: test_workers.py).

Each test starts its own redis-server on a unix socket in a temporary folder and stops it after
(`conftest.redis_server`); without Debian's redis-server they skip, saying so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.recommender.conftest import _test_database_url

PROJECT_DIR = Path(__file__).resolve().parents[2]

PIN_SCRIPT = """
import json, sys
import django
django.setup()
from django.conf import settings
from config import db_router
action, profile_id = sys.argv[1], int(sys.argv[2])
if action == "pin":
    db_router.user_reads_pin(profile_id=profile_id)  # autocommit: recorded at once
    print(json.dumps({"cache": settings.CACHES["default"]["BACKEND"]}))
else:
    with db_router.serving_reads(profile_id=profile_id) as alias:
        print(json.dumps({"alias": alias}))
"""


def _django(script: str, *args: str, env: dict[str, str]) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _env(**values: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("CACHE_URL", "REDIS_URL")}
    env.update(DJANGO_SETTINGS_MODULE="config.settings.development", DATABASE_URL=_test_database_url(), **values)
    return env


@pytest.mark.django_db
def test_cache_url_is_one_cache_for_every_process(redis_server):
    env = _env(CACHE_URL=redis_server.url())
    write = "import django; django.setup(); from django.core.cache import cache; cache.set('probe', 42, 60); print(1)"
    _django(write, env=env)
    read = (
        "import django, json; django.setup(); from django.core.cache import cache; "
        "print(json.dumps({'value': cache.get('probe')}))"
    )
    assert _django(read, env=env) == {"value": 42}
    # And not a per-process cache: without CACHE_URL the other process does not see it.
    assert _django(read, env=_env()) == {"value": None}


@pytest.mark.django_db
def test_a_read_your_writes_pin_recorded_by_one_process_routes_another(redis_server):
    # The "replica" is the test database itself: not a standby, so a pin holds for its whole
    # window (pg_last_wal_replay_lsn() is NULL there); the real standby is in test_replicas.py.
    env = _env(CACHE_URL=redis_server.url(), DATABASE_REPLICA_URLS=_test_database_url())
    assert _django(PIN_SCRIPT, "pin", "7", env=env) == {"cache": "django.core.cache.backends.redis.RedisCache"}
    assert _django(PIN_SCRIPT, "read", "7", env=env) == {"alias": "default"}
    assert _django(PIN_SCRIPT, "read", "8", env=env) == {"alias": "replica_0"}
    # A window of 0 turns pinning off.
    pinless = {**env, "DATABASE_REPLICA_PIN_SECONDS": "0"}
    _django(PIN_SCRIPT, "pin", "9", env=pinless)
    assert _django(PIN_SCRIPT, "read", "9", env=pinless) == {"alias": "replica_0"}


def test_a_cache_url_that_is_not_redis_is_refused():
    env = _env(CACHE_URL="memcached://cache:11211")
    completed = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode != 0
    assert "CACHE_URL must be a redis:// URL" in completed.stderr
