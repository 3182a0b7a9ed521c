"""A DRF view whose stored 200 is answered without DRF's request cycle: the lean hit path.

A cached homepage hit spent most of its CPU in machinery around one cache lookup: DRF's request
wrapping, content negotiation, the authenticators, the permission and throttle loops, the
renderer, the response's finalisation (issue 12; docs/serving.md, "What a hit costs"). A view
built on `StoredAnswerApiView` first asks ``stored_hit`` for a body rendered earlier; only when
it has one, and only for the plainest request, does it answer those bytes itself:

- ``GET``, with no ``Accept`` or one DRF would answer with its JSON renderer unchanged
  (``application/json``, ``*/*``): a browser's ``text/html`` still gets the browsable API;
- an ``Authorization: Token <key>`` header (`config.authentication.token_key`), read by the same
  statement and rules as `FastTokenAuthentication` (an unknown key, an inactive user: the full
  view answers, with DRF's own 401);
- the view's permissions, checked as DRF checks them; the view's own rule (``stored_hit``
  returns None when the user may not read this object: the full view answers its 403 or 404);
- the view's throttles, each asked once, as DRF asks them. A refusal is handed to the full view,
  which raises DRF's ``Throttled`` with that wait (same 429 body and ``Retry-After``) without
  counting the request a second time;
- the response: the stored bytes with DRF's ``Content-Type``, ``Allow`` and ``Vary`` (the
  middleware adds the rest, as for any response). A test compares it with the full view's.

Anything else (no stored body, another method, a session, an odd query) is the full view's, so
every error keeps its shape. Throttles run last, so a request handed to the full view before
them is counted once, there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.http import HttpResponse
from django.utils.cache import patch_vary_headers
from rest_framework.views import APIView

from config.authentication import FastTokenAuthentication, token_key

# What DRF's negotiation answers with JSONRenderer unchanged (no "indent" parameter).
_JSON_ACCEPTS = frozenset({"", "*/*", "application/json"})
_NOT_THROTTLED: list = []


@dataclass(frozen=True)
class StoredHit:
    user: object  # the authenticated user, as DRF would set it
    body: bytes  # the rendered JSON of the 200
    served: Callable[[], None]  # what the hit does besides answering (metrics, impressions)


class StoredAnswerApiView(APIView):
    """An APIView that answers a stored body through the lean path when ``stored_hit`` has one."""

    def stored_hit(self, request, key: str, **kwargs) -> StoredHit | None:
        """The stored answer for this token ``key`` and URL, or None for the full view (override)."""
        return None

    def dispatch(self, request, *args, **kwargs):
        self._lean_throttle_durations = _NOT_THROTTLED
        if request.method == "GET" and request.META.get("HTTP_ACCEPT", "") in _JSON_ACCEPTS:
            response = self._lean_answer(request, **kwargs)
            if response is not None:
                return response
        return super().dispatch(request, *args, **kwargs)

    def _lean_answer(self, request, **kwargs) -> HttpResponse | None:
        key = self._lean_token_key(request)
        hit = self.stored_hit(request, key, **kwargs) if key is not None else None
        if hit is None:
            return None
        request.user = hit.user  # as DRF's Request does; the permissions and throttles read it
        if not all(permission.has_permission(request, self) for permission in self.get_permissions()):
            return None
        throttles = self.get_throttles()
        durations = [throttle.wait() for throttle in throttles if not throttle.allow_request(request, self)]
        if durations:
            self._lean_throttle_durations = durations
            return None
        hit.served()
        return self._stored_response(hit.body)

    def _lean_token_key(self, request) -> str | None:
        # Only when the token authenticator is the view's first: DRF would then authenticate by it.
        classes = self.authentication_classes
        if not classes or not issubclass(classes[0], FastTokenAuthentication):
            return None
        return token_key(request)

    def _stored_response(self, body: bytes) -> HttpResponse:
        response = HttpResponse(body, content_type="application/json")  # JSONRenderer's type, no charset
        headers = dict(self.default_response_headers)
        vary = headers.pop("Vary", None)
        if vary is not None:
            patch_vary_headers(response, [part.strip() for part in vary.split(",")])
        for name, value in headers.items():
            response[name] = value
        return response

    def check_throttles(self, request):
        durations = getattr(self, "_lean_throttle_durations", _NOT_THROTTLED)
        if durations:
            # The lean path asked every throttle already: the same verdict, not a second count.
            self.throttled(request, max((wait for wait in durations if wait is not None), default=None))
        super().check_throttles(request)
