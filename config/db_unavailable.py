"""When PostgreSQL is down or stuck, answer 503 at once instead of a 500 or a hung request.

Two halves (docs/resilience.md):

- **Bounded waits.** Each new database connection of a web process gets ``statement_timeout``
  and ``lock_timeout`` (``WEB_STATEMENT_TIMEOUT_MS``, ``WEB_LOCK_TIMEOUT_MS``), set in the
  ``connection_created`` signal, connected in ``config/wsgi.py``: only processes that serve HTTP
  through it (gunicorn, runserver) get them, so Celery workers, imports, index builds and the
  test process keep their long statements. ``connect_timeout`` (settings) bounds a connect
  to a host that does not answer; a stopped server refuses at once.
- **A clear answer.** :class:`DatabaseUnavailableMiddleware` turns ``OperationalError`` and
  ``InterfaceError`` (refused connection, cancelled statement, lock timeout, server gone) raised
  by a view into ``503`` with ``Retry-After``: JSON under ``/api/``, a short page elsewhere.

Recovery needs no restart: ``CONN_HEALTH_CHECKS`` makes Django test a reused connection at the
start of each request and reconnect when the server came back.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

from config.middleware import is_api_request

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Temporarily unavailable</title></head>
<body><h1>Temporarily unavailable</h1>
<p>The database cannot be reached right now. Please try again in a few seconds.</p></body></html>
"""


def web_timeouts_apply(sender, connection, **kwargs) -> None:
    """Give a web process's new connection its statement and lock timeouts (0 leaves one off)."""
    if connection.vendor != "postgresql":
        return
    statements = []
    for name, value in (
        ("statement_timeout", settings.WEB_STATEMENT_TIMEOUT_MS),
        ("lock_timeout", settings.WEB_LOCK_TIMEOUT_MS),
    ):
        if value:
            statements.append(f"SET {name} = {int(value)}")
    if statements:
        with connection.cursor() as cursor:
            cursor.execute("; ".join(statements))


class DatabaseUnavailableMiddleware:
    """Answer 503 (JSON for the API) when a view fails because the database is unreachable or stuck."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        logger.warning(
            "database.unavailable path=%s error=%s",
            request.path,
            f"{type(exception).__name__}: {exception}".replace("\n", " ")[:300],
        )
        if is_api_request(request):
            response = JsonResponse(
                {"detail": "The database is unavailable; retry shortly.", "code": "database_unavailable"}, status=503
            )
        else:
            response = HttpResponse(_PAGE, status=503, content_type="text/html; charset=utf-8")
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
