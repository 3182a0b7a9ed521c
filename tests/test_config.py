"""Configuration: the env helpers, DATABASE_URL parsing, and the production deployment files.

No container engine runs here, so docker-compose.yml and the Dockerfile are checked by parsing:
every reference must point at something that exists.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_float, env_int, env_list, env_str
from config.settings.database import database_from_url

REPO = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = ["migrate", "web", "worker", "beat"]


# --- config.env ---------------------------------------------------------------------------------


def test_env_str_default_required_and_empty(monkeypatch):
    monkeypatch.delenv("RECSYS_TEST_VALUE", raising=False)
    assert env_str("RECSYS_TEST_VALUE", "fallback") == "fallback"
    monkeypatch.setenv("RECSYS_TEST_VALUE", "")
    assert env_str("RECSYS_TEST_VALUE", "fallback") == "fallback"  # empty counts as unset
    with pytest.raises(ImproperlyConfigured, match="RECSYS_TEST_VALUE is required"):
        env_str("RECSYS_TEST_VALUE", required=True)
    monkeypatch.setenv("RECSYS_TEST_VALUE", "set")
    assert env_str("RECSYS_TEST_VALUE", required=True) == "set"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("TRUE", True),
        (" yes ", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("", False),
    ],
)
def test_env_bool_accepts_the_usual_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv("RECSYS_TEST_FLAG", raw)
    assert env_bool("RECSYS_TEST_FLAG", not expected) is expected


def test_env_bool_rejects_nonsense_with_the_variable_named(monkeypatch):
    monkeypatch.delenv("RECSYS_TEST_FLAG", raising=False)
    assert env_bool("RECSYS_TEST_FLAG", True) is True
    monkeypatch.setenv("RECSYS_TEST_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match=r"RECSYS_TEST_FLAG='maybe' is not a boolean"):
        env_bool("RECSYS_TEST_FLAG")


def test_env_int_float_and_list(monkeypatch):
    monkeypatch.setenv("RECSYS_TEST_INT", "42")
    monkeypatch.setenv("RECSYS_TEST_FLOAT", "0.25")
    monkeypatch.setenv("RECSYS_TEST_LIST", " a.example, ,b.example ,")
    assert env_int("RECSYS_TEST_INT", 1) == 42
    assert env_float("RECSYS_TEST_FLOAT", 1.0) == 0.25
    assert env_list("RECSYS_TEST_LIST") == ["a.example", "b.example"]
    monkeypatch.setenv("RECSYS_TEST_INT", "4.5")
    with pytest.raises(ImproperlyConfigured, match=r"RECSYS_TEST_INT='4\.5' is not an integer"):
        env_int("RECSYS_TEST_INT", 1)
    monkeypatch.setenv("RECSYS_TEST_FLOAT", "fast")
    with pytest.raises(ImproperlyConfigured, match="is not a number"):
        env_float("RECSYS_TEST_FLOAT", 1.0)
    monkeypatch.setenv("RECSYS_TEST_LIST", "   ")
    assert env_list("RECSYS_TEST_LIST", ["x"]) == ["x"]


# --- DATABASE_URL -------------------------------------------------------------------------------


def test_database_url_with_host_port_and_options():
    entry = database_from_url("postgresql://app:s3cret@db.internal:6543/recs?sslmode=require")
    assert entry["ENGINE"] == "django.db.backends.postgresql"
    assert (entry["NAME"], entry["USER"], entry["PASSWORD"]) == ("recs", "app", "s3cret")
    assert (entry["HOST"], entry["PORT"]) == ("db.internal", "6543")
    assert entry["OPTIONS"] == {"sslmode": "require"}


def test_database_url_socket_host_in_query_string():
    entry = database_from_url("postgresql://postgres@/recsys?host=/work/main/.pgdata")
    assert entry["HOST"] == "/work/main/.pgdata"
    assert entry["PORT"] == ""
    assert "host" not in entry["OPTIONS"]  # consumed, not passed twice to libpq
    quoted = database_from_url("postgres://u@/d?host=%2Fvar%2Frun%2Fpostgresql")
    assert quoted["HOST"] == "/var/run/postgresql"


def test_database_url_password_and_name_are_unquoted():
    entry = database_from_url("postgres://me:p%40ss%3Aw%2Fd%23@localhost/my%20db")
    assert entry["PASSWORD"] == "p@ss:w/d#"
    assert entry["NAME"] == "my db"
    assert database_from_url("pgsql://localhost")["NAME"] == "postgres"


@pytest.mark.parametrize("url", ["sqlite:///db.sqlite3", "mysql://u:p@h/d"])
def test_database_url_rejects_other_databases_clearly(url):
    with pytest.raises(ImproperlyConfigured, match=r"must be a PostgreSQL URL .*needs PostgreSQL with pgvector"):
        database_from_url(url)


# --- production settings ------------------------------------------------------------------------


def _settings_subprocess(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DATABASE_URL"}}
    environment.update({"DJANGO_SETTINGS_MODULE": "config.settings.production", **env})
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=environment, capture_output=True, text=True, timeout=120
    )


def test_production_refuses_to_start_without_secret_key():
    result = _settings_subprocess("import django; django.setup()", DATABASE_URL="postgresql://u@localhost/unused")
    assert result.returncode != 0
    assert "The environment variable SECRET_KEY is required here." in result.stderr


def test_production_settings_load_as_the_dockerfile_build_step_does():
    # Same environment as the Dockerfile's collectstatic step: it must not need a database.
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.DEBUG, settings.ALLOWED_HOSTS, settings.CELERY_BROKER_URL, "
        "settings.DATABASES['default']['HOST'])"
    )
    result = _settings_subprocess(
        code,
        DATABASE_URL="postgresql://build@localhost/build",
        SECRET_KEY="collectstatic-only",
        ALLOWED_HOSTS="a.example,localhost",
        CELERY_BROKER_URL="redis://redis:6379/0",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0] == "False ['a.example', 'localhost'] redis://redis:6379/0 localhost"


def test_production_refuses_to_start_without_database_url_and_starts_no_server(tmp_path):
    data_dir = tmp_path / "pgdata"
    try:
        result = _settings_subprocess("import django; django.setup()", SECRET_KEY="set", EMBEDDED_PG_DIR=str(data_dir))
        assert result.returncode != 0
        assert "ImproperlyConfigured: DATABASE_URL is required in production" in result.stderr
        assert not data_dir.exists(), "the embedded PostgreSQL was started"
    finally:
        if data_dir.exists():  # a regression must not leave a stray postmaster behind
            from config.embedded_postgres import stop

            stop(data_dir)


def test_production_with_database_url_loads_without_the_embedded_server(tmp_path):
    data_dir = tmp_path / "pgdata"
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.EMBEDDED_POSTGRES, settings.DATABASES['default']['NAME'])"
    )
    result = _settings_subprocess(
        code, DATABASE_URL="postgresql://u@db.internal/recs", SECRET_KEY="set", EMBEDDED_PG_DIR=str(data_dir)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0] == "None recs"
    assert not data_dir.exists()


# --- docker-compose.yml -------------------------------------------------------------------------


def _env_example() -> dict[str, str]:
    lines = (REPO / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _interpolate(text: str, values: dict[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?error}``, enough for this file."""

    def substitute(match: re.Match) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        value = values.get(name) or ""
        if not value and operator == ":-":
            return argument
        if not value and operator == ":?":
            raise AssertionError(f"{name} is required: {argument}")
        return value

    return re.sub(r"\$\{([A-Z0-9_]+)(?:(:-|:\?)([^}]*))?\}", substitute, text)


def test_compose_has_the_production_services():
    assert set(SERVICES) == {"db", "redis", "migrate", "web", "worker", "beat"}
    assert SERVICES["db"]["image"] == "pgvector/pgvector:pg17"
    assert SERVICES["redis"]["image"] == "redis:7-alpine"
    for name in APP_SERVICES:
        assert SERVICES[name]["build"] == "." and SERVICES[name]["image"] == "recsys-platform:latest"


def test_compose_healthchecks():
    assert "pg_isready" in " ".join(SERVICES["db"]["healthcheck"]["test"])
    assert SERVICES["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    web_check = " ".join(SERVICES["web"]["healthcheck"]["test"])
    assert "urllib.request" in web_check and "/health/live" in web_check and "curl" not in web_check
    # The healthcheck code itself must at least be valid Python.
    compile(SERVICES["web"]["healthcheck"]["test"][-1], "healthcheck", "exec")


def test_compose_dependencies_exist_and_are_gated_on_health():
    for name, service in SERVICES.items():
        for target, rule in service.get("depends_on", {}).items():
            assert target in SERVICES, f"{name} depends on unknown service {target}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{name} waits for {target}, which has no healthcheck"
            else:
                assert rule["condition"] == "service_completed_successfully" and target == "migrate"
    for name in ("web", "worker", "beat"):
        assert set(SERVICES[name]["depends_on"]) == {"db", "redis", "migrate"}
    assert SERVICES["migrate"]["restart"] == "no"


def test_compose_application_environment():
    for name in APP_SERVICES:
        environment = SERVICES[name]["environment"]
        assert environment["DJANGO_SETTINGS_MODULE"] == "config.settings.production"
        assert environment["CELERY_BROKER_URL"] == "redis://redis:6379/0"
        assert environment["DATABASE_URL"].startswith("postgresql://") and "@db:5432/" in environment["DATABASE_URL"]
        assert "${SECRET_KEY:?" in environment["SECRET_KEY"]  # no default secret, ever
        assert "ALLOWED_HOSTS" in environment
        assert environment["MODEL_ARTIFACT_DIR"] == "/app/var/models"
    # With the values of .env.example filled in, DATABASE_URL is one this project accepts.
    url = _interpolate(SERVICES["web"]["environment"]["DATABASE_URL"], _env_example())
    entry = database_from_url(url)
    assert (entry["HOST"], entry["PORT"], entry["NAME"], entry["USER"]) == ("db", "5432", "recsys", "recsys")
    assert entry["PASSWORD"] == _env_example()["POSTGRES_PASSWORD"]


def test_compose_commands_point_at_real_modules():
    assert importlib.util.find_spec("config.settings.production") is not None
    web = SERVICES["web"]["command"]
    assert web[0] == "gunicorn" and "config.wsgi" in web and importlib.util.find_spec("config.wsgi") is not None
    # gunicorn's hooks (config/gunicorn.py): the dead workers' live gauges leave the metrics directory.
    assert web[web.index("-c") + 1] == "python:config.gunicorn" and importlib.util.find_spec("config.gunicorn")
    for name, queues in (("worker", "default,training"), ("beat", None)):
        command = SERVICES[name]["command"]
        app = command[command.index("-A") + 1]
        assert importlib.util.find_spec(f"{app}.celery") is not None
        if queues:
            assert command[command.index("-Q") + 1] == queues
    migrate = SERVICES["migrate"]["command"]
    assert (REPO / migrate[1]).exists() and migrate[2] == "migrate"


def test_compose_volumes_are_declared_and_mounted():
    declared = set(COMPOSE["volumes"])
    assert {"postgres_data", "model_artifacts"} <= declared
    for name, service in SERVICES.items():
        for mount in service.get("volumes", []):
            assert mount.split(":")[0] in declared, f"{name} mounts undeclared volume {mount}"
    assert "postgres_data:/var/lib/postgresql/data" in SERVICES["db"]["volumes"]
    for name in ("web", "worker"):
        assert "model_artifacts:/app/var/models" in SERVICES[name]["volumes"]
        # One metrics directory for both, so a scrape of web sums the worker's training and imports.
        assert "metrics:/app/var/metrics" in SERVICES[name]["volumes"]
        assert SERVICES[name]["environment"]["PROMETHEUS_MULTIPROC_DIR"] == "/app/var/metrics"


def test_every_compose_variable_is_in_env_example():
    referenced = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", (REPO / "docker-compose.yml").read_text()))
    example = set(_env_example())
    assert referenced, "the compose file should be configured through the environment"
    assert referenced <= example, f"missing from .env.example: {sorted(referenced - example)}"


# --- Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_shape():
    dockerfile = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", dockerfile, flags=re.M)
    assert stages and all(image == "python:3.11-slim" for image in stages)
    assert "gcc" in dockerfile
    assert re.search(r"^USER app$", dockerfile, flags=re.M)
    assert "collectstatic --noinput" in dockerfile
    # The image must run as non-root from the last USER on, and collectstatic must run before it.
    assert dockerfile.index("collectstatic") < dockerfile.index("USER app")
    # torch must come from PyTorch's CPU index: PyPI's Linux wheel pulls several GB of CUDA.
    wheel_step = next(line for line in dockerfile.splitlines() if line.startswith("RUN pip wheel"))
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in wheel_step
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".pgdata", ".env"} <= set(ignored)


# --- docs/operations.md lists every variable config/ reads -------------------------------------


def _configuration_rows() -> dict[str, list[str]]:
    """The rows of the Configuration table in docs/operations.md, by variable name."""
    doc = (REPO / "docs" / "operations.md").read_text()
    table = doc.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 4:
            for name in re.findall(r"`([A-Z0-9_]+)`", cells[0]):
                rows[name] = cells
    return rows


def test_operations_doc_lists_every_environment_variable():
    names = set()
    for path in (REPO / "config").rglob("*.py"):
        text = path.read_text()
        names |= set(re.findall(r"env_(?:str|bool|int|float|list)\(\s*\"([A-Z0-9_]+)\"", text))
        names |= set(re.findall(r"os\.environ(?:\.get)?[\(\[]\s*\"([A-Z0-9_]+)\"", text))
    assert {"SECRET_KEY", "DATABASE_URL", "EMBEDDED_PG_DIR", "ADMIN_PASSWORD", "PORT", "UPLOAD_DIR"} <= names
    rows = _configuration_rows()
    missing = sorted(names - set(rows))
    assert not missing, f"the Configuration table of docs/operations.md does not list: {missing}"
    undescribed = sorted(name for name, (_, default, _, meaning) in rows.items() if not default or not meaning)
    assert not undescribed, f"rows without a default or a meaning: {undescribed}"


def test_only_config_reads_the_environment():
    """catalog/ and recommender/ read settings; config/env.py is the one reader of os.environ.

    Setting DJANGO_SETTINGS_MODULE's default (manage.py, wsgi, the Celery app) is not reading a setting.
    """
    offenders = []
    for folder in ("config", "catalog", "recommender"):
        for path in (REPO / folder).rglob("*.py"):
            if path == REPO / "config" / "env.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(r"os\.(environ|getenv)", line) and "DJANGO_SETTINGS_MODULE" not in line:
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "read these through config.env and a setting:\n" + "\n".join(offenders)


def test_demo_settings_come_from_the_environment(monkeypatch):
    from config.settings import demo

    monkeypatch.setenv("ADMIN_USERNAME", "demo-admin")
    monkeypatch.setenv("ADMIN_PASSWORD", "from-the-environment")
    monkeypatch.setenv("PORT", "8123")
    try:
        importlib.reload(demo)
        assert (demo.ADMIN_USERNAME, demo.ADMIN_PASSWORD, demo.RUN_STACK_PORT) == (
            "demo-admin",
            "from-the-environment",
            8123,
        )
        monkeypatch.delenv("ADMIN_USERNAME")
        monkeypatch.setenv("ADMIN_PASSWORD", "")  # empty counts as unset: a password is generated
        monkeypatch.delenv("PORT")
        importlib.reload(demo)
        assert (demo.ADMIN_USERNAME, demo.ADMIN_PASSWORD, demo.RUN_STACK_PORT) == ("admin", None, 8000)
    finally:
        monkeypatch.undo()
        importlib.reload(demo)


@pytest.mark.django_db
def test_the_test_process_keeps_long_statements():
    """Only web processes (config.wsgi) bound statements. A test module importing config.wsgi would
    bound every test's connection and make the long ones (imports, index builds) flaky."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "0"
