"""Who is asking: the client address used by the sign-in lockout, consistent with DRF's throttles.

Both key on the same address so one setting (``TRUSTED_PROXY_COUNT``, mirrored into DRF's
``NUM_PROXIES``) decides how far X-Forwarded-For is believed.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest | None) -> str:
    """The client's address: REMOTE_ADDR, or the entry the trusted proxies added to X-Forwarded-For.

    With ``TRUSTED_PROXY_COUNT = 0`` the header is ignored: anyone can write it, so believing it
    would let a client pick a fresh identity per request.
    """
    if request is None:
        return "unknown"
    remote = request.META.get("REMOTE_ADDR", "") or "unknown"
    proxies = settings.TRUSTED_PROXY_COUNT
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies > 0 and forwarded:
        addresses = [part.strip() for part in forwarded.split(",") if part.strip()]
        if addresses:
            return addresses[-min(proxies, len(addresses))]
    return remote


def throttle_rate(value: str | None) -> str | None:
    """A DRF rate such as ``100/minute``; ``off``/``none`` (or empty) disables that throttle."""
    if value is None or value.strip().lower() in {"", "off", "none"}:
        return None
    return value.strip()
