"""Fixtures of the scale-out tests: a throwaway redis-server (skipped, saying why, when absent)."""

from __future__ import annotations

import shutil

import pytest

from .servers import RedisServer


@pytest.fixture
def redis_server():
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server); Redis tests skipped")
    server = RedisServer.start(binary)
    yield server
    server.stop()
