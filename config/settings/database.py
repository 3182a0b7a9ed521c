"""Database: an external PostgreSQL from DATABASE_URL, or the embedded one (the default).

Timeouts: ``connect_timeout`` everywhere; statement and lock timeouts per process kind (see
``session_options`` and docs/resilience.md).

Tests run on the same real PostgreSQL: pytest-django creates `test_<name>` beside it.
`TEST_DATABASE_NAME` lets several test runs share one server without sharing a database.

Read replicas: `DATABASE_REPLICA_URLS` (comma-separated PostgreSQL URLs of hot standbys) adds the
aliases ``replica_0``, ``replica_1``… and `config.db_router.ReplicaRouter`, which sends the
serving reads there (docs/operations.md, "From one machine to many"). Unset, nothing changes.
"""

from urllib.parse import parse_qs, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

from config.env import env_float, env_int, env_list, env_str


def database_from_url(url: str) -> dict:
    """Turn ``postgres://user:pass@host:port/name?sslmode=…`` into a Django DATABASES entry."""
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql", "pgsql"}:
        raise ImproperlyConfigured(
            f"DATABASE_URL must be a PostgreSQL URL (postgresql://…), not {parts.scheme!r}: "
            "this project needs PostgreSQL with pgvector."
        )
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    host = unquote(parts.hostname or "") or query.pop("host", "")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(parts.port or ""),
        "OPTIONS": query,
    }


def _redacted(url: str) -> str:
    """The URL without its password, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def replica_databases(urls: list[str], *, primary: dict) -> dict[str, dict]:
    """DATABASES entries ``replica_<n>`` for the replica URLs, each a copy of the primary's settings
    (timeouts, connection reuse) with its own address.

    In tests each replica mirrors ``default`` (Django's ``TEST: {"MIRROR": …}``): the suite has one
    test database, and a read routed to a replica reads it. A malformed entry names its position.
    """
    replicas: dict[str, dict] = {}
    for position, url in enumerate(urls):
        try:
            entry = database_from_url(url)
        except (ImproperlyConfigured, ValueError) as error:
            raise ImproperlyConfigured(
                f"DATABASE_REPLICA_URLS entry {position} ({_redacted(url)!r}) is not a usable PostgreSQL URL "
                f"(postgresql://user:password@host:port/name, entries separated by commas): {error}"
            ) from error
        if not entry["HOST"]:
            raise ImproperlyConfigured(
                f"DATABASE_REPLICA_URLS entry {position} ({_redacted(url)!r}) names no host: give host:port "
                "or ?host=/socket/dir."
            )
        options = {**primary["OPTIONS"], **entry["OPTIONS"]}
        replicas[f"replica_{position}"] = {
            **primary,
            **{key: entry[key] for key in ("NAME", "USER", "PASSWORD", "HOST", "PORT")},
            "OPTIONS": options,
            "TEST": {"MIRROR": "default"},
        }
    return replicas


def session_options(existing: str, *, statement_timeout_ms: int, lock_timeout_ms: int) -> str:
    """libpq ``options`` with server-side timeouts, so a stuck database fails a request instead of hanging it.

    A request blocked behind a lock or a runaway query is cancelled by PostgreSQL itself
    (``QueryCanceled`` / ``LockNotAvailable``, both ``OperationalError`` in Django), which
    ``config.db_unavailable`` answers with a 503. 0 disables a timeout. Values already in the
    URL's ``options`` win, so one deployment can still tune them per role.
    """
    parts = [existing.strip()] if existing and existing.strip() else []
    for name, value in (("statement_timeout", statement_timeout_ms), ("lock_timeout", lock_timeout_ms)):
        if value < 0:
            raise ImproperlyConfigured(f"The {name} must be 0 (off) or a positive number of milliseconds.")
        if value and f"{name}=" not in (existing or ""):
            parts.append(f"-c {name}={int(value)}")
    return " ".join(parts)


_environment_url = env_str("DATABASE_URL")
if _environment_url is None:
    from config.embedded_postgres import EmbeddedServer, ensure_running

    EMBEDDED_POSTGRES: EmbeddedServer | None

    EMBEDDED_POSTGRES = ensure_running()
    DATABASE_URL = EMBEDDED_POSTGRES.url()
else:
    EMBEDDED_POSTGRES = None
    DATABASE_URL = _environment_url

_default = database_from_url(DATABASE_URL)
_default["OPTIONS"].setdefault("connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 5))
# Every process (web, Celery, manage.py): off by default, because an HNSW build over a million
# items or a 10M-row import legitimately runs one statement for minutes.
_options = session_options(
    _default["OPTIONS"].get("options", ""),
    statement_timeout_ms=env_int("DATABASE_STATEMENT_TIMEOUT_MS", 0),
    lock_timeout_ms=env_int("DATABASE_LOCK_TIMEOUT_MS", 0),
)
if _options:
    _default["OPTIONS"]["options"] = _options
# Web requests only (config.db_unavailable sets them on each new connection of a web process):
# a request stuck behind a lock or a runaway query is cancelled and answered 503, not left hanging.
WEB_STATEMENT_TIMEOUT_MS = env_int("WEB_STATEMENT_TIMEOUT_MS", 10_000)
WEB_LOCK_TIMEOUT_MS = env_int("WEB_LOCK_TIMEOUT_MS", 3_000)
# Bulk imports (catalog/importers/bulk.py): the memory one import transaction may use for its
# sorts, hashes and index builds, and how large an import must be, as a share of the rows a
# table already holds, before it drops and rebuilds that table's secondary indexes (which locks
# the table until the import commits; docs/importing.md).
IMPORT_MEMORY_BUDGET_BYTES = env_int("IMPORT_MEMORY_BUDGET_BYTES", 256 * 1024 * 1024)
IMPORT_REBUILD_RATIO = env_float("IMPORT_REBUILD_RATIO", 0.25)
_default["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60)
_default["CONN_HEALTH_CHECKS"] = True
_default["TEST"] = {"NAME": env_str("TEST_DATABASE_NAME", f"test_{_default['NAME']}")}

DATABASES = {"default": _default}

# Serving reads on replicas (config.db_router); everything else, and every write, on "default".
DATABASE_REPLICA_URLS = env_list("DATABASE_REPLICA_URLS")
DATABASES.update(replica_databases(DATABASE_REPLICA_URLS, primary=_default))
DATABASE_REPLICA_ALIASES = [alias for alias in DATABASES if alias != "default"]
# After a user's write, their reads stay on the primary until a replica has replayed it, for at
# most this long (then a replica serves them even if it still lags: see config/db_router.py).
DATABASE_REPLICA_PIN_SECONDS = env_int("DATABASE_REPLICA_PIN_SECONDS", 30)
if DATABASE_REPLICA_PIN_SECONDS < 0:
    raise ImproperlyConfigured("DATABASE_REPLICA_PIN_SECONDS must be 0 or a positive number of seconds.")
DATABASE_ROUTERS = ["config.db_router.ReplicaRouter"] if DATABASE_REPLICA_ALIASES else []
