"""Database: an external PostgreSQL from DATABASE_URL, or the embedded one (the default).

Tests run on the same real PostgreSQL: pytest-django creates `test_<name>` beside it.
`TEST_DATABASE_NAME` lets several test runs share one server without sharing a database.
"""
from urllib.parse import parse_qs, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

from config.env import env_int, env_str


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


DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL is None:
    from config.embedded_postgres import ensure_running

    EMBEDDED_POSTGRES = ensure_running()
    DATABASE_URL = EMBEDDED_POSTGRES.url()
else:
    EMBEDDED_POSTGRES = None

_default = database_from_url(DATABASE_URL)
_default["OPTIONS"].setdefault("connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 5))
_default["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60)
_default["CONN_HEALTH_CHECKS"] = True
_default["TEST"] = {"NAME": env_str("TEST_DATABASE_NAME", f"test_{_default['NAME']}")}

DATABASES = {"default": _default}
