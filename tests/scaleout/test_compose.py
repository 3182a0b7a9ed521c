"""docker-compose.yml can run several workers (`docker compose up --scale worker=3`).

There is no Docker engine here: the file is parsed and checked for what scaling needs, and
`docker compose config` validates it too where the docker CLI is installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROJECT_DIR = Path(__file__).resolve().parents[2]
COMPOSE_FILE = PROJECT_DIR / "docker-compose.yml"


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def test_the_worker_service_can_be_scaled(services):
    worker = services["worker"]
    # A fixed container name or host port would make the second replica fail to start.
    assert "container_name" not in worker
    assert "ports" not in worker
    command = worker["command"]
    queues = command[command.index("-Q") + 1].split(",")
    assert set(queues) == {"default", "training"}
    assert "-n" not in command and "--hostname" not in command  # each container's own node name


def test_every_app_process_shares_redis_for_broker_and_cache(services):
    for name in ("web", "worker", "beat", "migrate"):
        environment = services[name]["environment"]
        assert environment["CELERY_BROKER_URL"].startswith("redis://redis:"), name
        assert environment["CACHE_URL"].startswith("redis://redis:"), name
        # Broker and cache in different Redis databases: flushing one never drops the other.
        assert environment["CELERY_BROKER_URL"] != environment["CACHE_URL"]
    for name in ("web", "worker", "beat"):
        assert "redis" in services[name]["depends_on"], name


def test_workers_share_the_model_artifacts_with_web(services):
    assert "model_artifacts:/app/var/models" in services["worker"]["volumes"]
    assert "model_artifacts:/app/var/models" in services["web"]["volumes"]


def _compose_command() -> list[str] | None:
    """``docker compose`` (the plugin) or ``docker-compose`` (v1), whichever this machine has."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=60, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def test_docker_compose_accepts_the_file():
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed here")
    completed = subprocess.run(
        [*command, "--env-file", ".env.example", "config", "-q"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
