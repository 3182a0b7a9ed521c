"""Sign-in lockout: after LOGIN_MAX_FAILURES failed passwords for one username from one address,
that pair is refused for LOGIN_LOCKOUT_SECONDS, even with the right password.

Keyed by username *and* address, so an attacker elsewhere cannot lock a real user out. The
counters live in the default cache: per process with LocMem, shared with Redis (``CACHE_URL``).
Enforced in the authentication backend, so the site's sign-in page and the admin's both count;
the site's page also says plainly that the pair is locked and answers 429 with Retry-After.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.core.exceptions import PermissionDenied

from config.throttling import client_ip

logger = logging.getLogger(__name__)


def _key(prefix: str, username: str, ip: str) -> str:
    # Hashed: usernames may hold characters some cache backends refuse in keys.
    digest = hashlib.sha256(f"{username.casefold()}\x1f{ip}".encode("utf-8", "surrogatepass")).hexdigest()
    return f"login-{prefix}:{digest}"


def login_lockout_remaining(*, username: str, ip: str) -> int:
    """Seconds left on this pair's lockout; 0 when it may try."""
    until = cache.get(_key("locked", username, ip))
    return max(0, math.ceil(until - time.time())) if until else 0


def login_failure_record(*, username: str, ip: str) -> int:
    """Count one failure; lock the pair out when it reaches the limit. Returns the failure count."""
    key = _key("failures", username, ip)
    window = settings.LOGIN_LOCKOUT_SECONDS
    cache.add(key, 0, timeout=window)
    try:
        failures = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=window)
        failures = 1
    if failures >= settings.LOGIN_MAX_FAILURES:
        cache.set(_key("locked", username, ip), time.time() + window, timeout=window)
        cache.delete(key)
        logger.warning("login.locked_out ip=%s failures=%s seconds=%s", ip, failures, window)
    return failures


def login_failures_clear(*, username: str, ip: str) -> None:
    cache.delete_many([_key("failures", username, ip), _key("locked", username, ip)])


class LockoutModelBackend(ModelBackend):
    """ModelBackend that refuses locked-out pairs and counts failures.

    Raising PermissionDenied ends Django's backend chain, so the plain ModelBackend listed after
    this one (kept for sessions that name it) never checks the same password a second time.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        username = username if username is not None else kwargs.get(get_user_model().USERNAME_FIELD)
        if username is None or password is None:
            return None
        ip = client_ip(request)
        if login_lockout_remaining(username=username, ip=ip):
            raise PermissionDenied("locked out")
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            login_failure_record(username=username, ip=ip)
            raise PermissionDenied("bad credentials")
        login_failures_clear(username=username, ip=ip)
        return user


class LockoutAuthenticationForm(AuthenticationForm):
    locked_for = 0

    def clean(self):
        username = self.cleaned_data.get("username")
        if username:
            self.locked_for = login_lockout_remaining(username=username, ip=client_ip(self.request))
            if self.locked_for:
                minutes = max(1, math.ceil(self.locked_for / 60))
                raise forms.ValidationError(
                    f"Too many failed sign-ins for this account from your address. "
                    f"Try again in {minutes} minute{'s' if minutes != 1 else ''}.",
                    code="locked_out",
                )
        return super().clean()


class LockoutLoginView(LoginView):
    """The site's sign-in page: 429 with Retry-After while the pair is locked out."""

    form_class = LockoutAuthenticationForm

    def form_invalid(self, form):
        response = super().form_invalid(form)
        if form.locked_for:
            response.status_code = 429
            response["Retry-After"] = str(form.locked_for)
        return response
