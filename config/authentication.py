"""Token authentication with the same rules as DRF's, in one hand-written, prepared query.

DRF's ``TokenAuthentication`` loads the token with ``select_related("user")``: correct, but the
ORM compiles that join on every request, which on a cached homepage hit cost more than the query
itself (issue 12: a hit should cost about one round trip). This class reads the same row with a
fixed statement and builds the user from it. Revocation is still immediate (no caching), an
inactive user is still refused, and the error messages are DRF's own.

Two more savings, both on the statement a cached hit waits for (`token_lookup`, also used by
the lean hit path of `config.stored_answers`):

- **Prepared.** PostgreSQL planned the statement (a join and two sub-selects) on every call,
  and planning cost more than running it (0.37 ms against 0.21 ms, EXPLAIN ANALYZE at ml-100k).
  It is sent with server-side binding and ``prepare=True`` (`_PreparedCursor`), so each
  connection plans it once (``CONN_MAX_AGE`` keeps connections for a minute). A pooler in
  transaction mode needs protocol-level prepared statements (PgBouncer 1.21+).
- **The statement is the health check.** ``CONN_HEALTH_CHECKS`` sends ``SELECT 1`` before a
  reused connection's first statement of a request: a second round trip on every hit. This
  statement is read-only and may run twice, so it runs first and, when it fails on a connection
  that no longer answers, the connection is replaced and the statement sent again: what the
  health check would have done, for one round trip instead of two.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import psycopg
from django.contrib.auth import get_user_model
from django.db import InterfaceError, OperationalError, connection
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token


class Lookup(NamedTuple):
    """A view's own row read in the token's statement (`lookup_arm`, `token_lookup`).

    ``columns`` (a SELECT list starting with a comma) and ``join`` (over the token's row, whose
    user is ``account``) are trusted SQL from the project; ``params`` fill their placeholders in
    that order; ``read`` turns the extra columns into what the view wants.
    """

    columns: str
    join: str
    params: list
    read: Callable[[tuple], object]


class _PreparedCursor(psycopg.Cursor):
    """A server-side binding cursor whose statements are prepared (Django's cursors never prepare)."""

    def execute(self, query, params=None, *, prepare=None, binary=None):
        return super().execute(query, params, prepare=True, binary=binary)


def _fetch_one(statement: str, params: list) -> tuple | None:
    # Any: django-stubs know neither the health-check attributes nor _prepare_cursor, which wraps
    # the cursor as Django's own are (error translation, the query log of tests and DEBUG).
    db: Any = connection

    def run() -> tuple | None:
        db.ensure_connection()
        with db._prepare_cursor(_PreparedCursor(db.connection)) as cursor:
            cursor.execute(statement, params)
            return cursor.fetchone()

    if db.health_check_enabled and not db.health_check_done and db.connection is not None:
        db.health_check_done = True  # this statement is the check (module docstring)
        try:
            return run()
        except (OperationalError, InterfaceError):
            if db.is_usable():
                raise  # the statement failed, not the connection
            db.close()
    return run()


@functools.cache  # one text per lookup kind: the same text is what makes it one prepared statement
def _statement(extra_columns: str, extra_join: str) -> tuple[str, list]:
    User = get_user_model()
    fields = list(User._meta.concrete_fields)
    columns = ", ".join(f'account."{field.column}"' for field in fields)
    statement = (
        f'SELECT token."key", {columns}{extra_columns} FROM authtoken_token AS token '
        f'JOIN "{User._meta.db_table}" AS account ON account."{User._meta.pk.column}" = token.user_id '
        f'{extra_join} WHERE token."key" = %s'
    )
    return statement, fields


def token_lookup(key: str, lookup: Lookup | None = None):
    """(user, token, what ``lookup`` read) for a token key, in one statement; DRF's rules and errors.

    Raises ``AuthenticationFailed`` for an unknown key or an inactive user, as DRF does.
    """
    statement, fields = _statement(lookup.columns if lookup else "", lookup.join if lookup else "")
    row = _fetch_one(statement, [*(lookup.params if lookup else []), key])
    if row is None:
        raise exceptions.AuthenticationFailed(_("Invalid token."))
    User = get_user_model()
    width = 1 + len(fields)
    user = User.from_db(connection.alias, [field.attname for field in fields], row[1:width])
    if not user.is_active:
        raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
    looked_up = lookup.read(row[width:]) if lookup is not None else None
    token = Token(key=row[0], user=user)
    token._state.adding = False
    return user, token, looked_up


@dataclass(frozen=True)
class TokenRead:
    """A successful `token_lookup` of this request, kept on it (`token_lookup_for_request`)."""

    key: str
    lookup: Lookup | None
    user: object
    token: Token
    looked_up: object


def token_lookup_for_request(request, key: str, lookup: Lookup | None = None):
    """`token_lookup`, remembered on the (Django) request: when the lean path hands the request to
    the full view, `FastTokenAuthentication` reuses this read instead of sending the statement again."""
    user, token, looked_up = token_lookup(key, lookup)
    request.token_read = TokenRead(key, lookup, user, token, looked_up)
    return user, token, looked_up


def token_key(request) -> str | None:
    """The key of a plain ``Authorization: Token <key>`` header (ASCII, two words), else None.

    The lean path only: any other header (none, another scheme, malformed) is left to DRF, which
    answers it with its own rules and errors.
    """
    header = request.META.get("HTTP_AUTHORIZATION")
    if not header or not header.isascii():
        return None
    parts = header.split()
    if len(parts) != 2 or parts[0].lower() != TokenAuthentication.keyword.lower():
        return None
    return parts[1]


class FastTokenAuthentication(TokenAuthentication):
    model = Token

    # What a view may read in the same statement (`lookup_arm`). Set per request (DRF builds the
    # authenticators of each request anew).
    lookup: Lookup | None = None
    looked_up: object = None

    read: TokenRead | None = None

    def authenticate(self, request):
        self.read = getattr(request._request, "token_read", None)
        return super().authenticate(request)

    def authenticate_credentials(self, key):
        read = self.read
        if read is not None and read.key == key and self.lookup in (None, read.lookup):
            # The same request's lean path read this row a moment ago (and found it valid).
            self.looked_up = read.looked_up if self.lookup is not None else None
            return read.user, read.token
        user, token, self.looked_up = token_lookup(key, self.lookup)
        return user, token


def lookup_arm(request, lookup: Lookup) -> None:
    """Ask the token's statement to read a view's own row too (call before DRF authenticates).

    The same checks as always run (an unknown token or an inactive user is refused): one round
    trip instead of two, what a cached homepage hit costs.
    """
    for authenticator in request.authenticators:
        if isinstance(authenticator, FastTokenAuthentication):
            authenticator.lookup = lookup


def lookup_result(request) -> tuple[bool, object]:
    """(whether the token's statement read the view's row, what ``read`` made of it).

    (False, None) for a request authenticated otherwise (a session) or not at all: the view
    reads its row itself.
    """
    authenticator = request.successful_authenticator
    if isinstance(authenticator, FastTokenAuthentication) and authenticator.lookup is not None:
        return True, authenticator.looked_up
    return False, None
