"""Token authentication with the same rules as DRF's, in one hand-written query.

DRF's ``TokenAuthentication`` loads the token with ``select_related("user")``: correct, but the
ORM compiles that join on every request, which on a cached homepage hit cost more than the query
itself (issue 12: a hit should cost about one round trip). This class reads the same row with a
fixed statement and builds the user from it. Revocation is still immediate (no caching), an
inactive user is still refused, and the error messages are DRF's own.
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth import get_user_model
from django.db import connection
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token


class FastTokenAuthentication(TokenAuthentication):
    model = Token

    # What a view may read in the same statement (`with_lookup`): trusted SQL from the project,
    # a SELECT list and a JOIN over the token's row, their parameters, and what to make of the
    # extra columns. Set per request (DRF builds the authenticators of each request anew).
    lookup: tuple[str, str, list, Callable[[tuple], object]] | None = None
    looked_up: object = None

    def authenticate_credentials(self, key):
        User = get_user_model()
        fields = list(User._meta.concrete_fields)
        columns = ", ".join(f'account."{field.column}"' for field in fields)
        extra_columns, extra_join, extra_params, extra_read = self.lookup or ("", "", [], None)
        with connection.cursor() as cursor:
            cursor.execute(
                f'SELECT token."key", {columns}{extra_columns} FROM authtoken_token AS token '
                f'JOIN "{User._meta.db_table}" AS account ON account."{User._meta.pk.column}" = token.user_id '
                f'{extra_join} WHERE token."key" = %s',
                [*extra_params, key],
            )
            row = cursor.fetchone()
        if row is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        width = 1 + len(fields)
        user = User.from_db(connection.alias, [field.attname for field in fields], row[1:width])
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        if extra_read is not None:
            self.looked_up = extra_read(row[width:])
        token = Token(key=row[0], user=user)
        token._state.adding = False
        return user, token


def lookup_arm(request, *, columns: str, join: str, params: list, read: Callable[[tuple], object]) -> None:
    """Ask the token's statement to read a view's own row too (call before DRF authenticates).

    ``columns`` (starting with a comma) and ``join`` are trusted SQL from the project over the
    token's row; ``params`` fill their placeholders in that order; ``read`` turns the extra
    columns into what the view wants. The same checks as always run (an unknown token or an
    inactive user is refused): one round trip instead of two, what a cached homepage hit costs.
    """
    for authenticator in request.authenticators:
        if isinstance(authenticator, FastTokenAuthentication):
            authenticator.lookup = (columns, join, params, read)


def lookup_result(request) -> tuple[bool, object]:
    """(whether the token's statement read the view's row, what ``read`` made of it).

    (False, None) for a request authenticated otherwise (a session) or not at all: the view
    reads its row itself.
    """
    authenticator = request.successful_authenticator
    if isinstance(authenticator, FastTokenAuthentication) and authenticator.lookup is not None:
        return True, authenticator.looked_up
    return False, None
