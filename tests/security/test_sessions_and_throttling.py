"""CSRF on session POSTs, the sign-in lockout, API throttling, and the production deploy check."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from catalog.models import Feedback
from tests.security.conftest import PASSWORD, api_client

pytestmark = pytest.mark.django_db
REPO = Path(__file__).resolve().parents[2]


def _csrf_client(user=None) -> Client:
    client = Client(enforce_csrf_checks=True)
    if user is not None:
        client.force_login(user)
    return client


def _token_from(client: Client, url: str) -> str:
    client.get(url)
    return client.cookies["csrftoken"].value


# --- CSRF ------------------------------------------------------------------------------------------


def test_login_without_a_csrf_token_is_refused(world):
    client = _csrf_client()
    response = client.post(reverse("login"), {"username": "owner", "password": PASSWORD})
    assert response.status_code == 403
    assert "_auth_user_id" not in client.session
    token = _token_from(client, reverse("login"))
    response = client.post(reverse("login"), {"username": "owner", "password": PASSWORD, "csrfmiddlewaretoken": token})
    assert response.status_code == 302 and client.session["_auth_user_id"] == str(world.owner.pk)


@pytest.mark.parametrize(
    ("name", "args", "data"),
    [
        ("item-rate", ["item-b"], {"kind": "rating", "value": "5"}),
        ("feedback-delete", None, {}),
        ("logout", [], {}),
    ],
)
def test_page_posts_need_a_csrf_token(world, name, args, data):
    client = _csrf_client(world.owner)
    url = reverse(name, args=args if args is not None else [world.owner_feedback.pk])
    before = list(Feedback.objects.values_list("pk", "is_current"))
    assert client.post(url, data).status_code == 403
    assert list(Feedback.objects.values_list("pk", "is_current")) == before
    assert "_auth_user_id" in client.session  # logout did not happen either


@pytest.mark.parametrize(
    ("name", "data"), [("models-train", {}), ("view-as", {"user": "owner-profile"}), ("data-import", {})]
)
def test_staff_page_posts_need_a_csrf_token(world, name, data):
    assert _csrf_client(world.staff).post(reverse(name), data).status_code == 403


def test_api_with_session_auth_needs_csrf_and_with_a_token_does_not(world):
    body = {"item": "item-b", "kind": "rating", "value": 5}
    session = APIClient(enforce_csrf_checks=True)
    session.login(username="owner", password=PASSWORD)
    refused = session.post("/api/v1/feedback", body, format="json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    assert not Feedback.objects.filter(item=world.second_item).exists()

    csrf = _token_from(session, reverse("login"))
    accepted = session.post("/api/v1/feedback", body, format="json", HTTP_X_CSRFTOKEN=csrf)
    assert accepted.status_code == 201

    token_client = api_client(world.other, token=True)
    token_client.handler.enforce_csrf_checks = True
    assert token_client.post("/api/v1/feedback", body, format="json").status_code == 201
    assert Feedback.objects.filter(item=world.second_item).count() == 2


# --- Sign-in lockout -------------------------------------------------------------------------------


def _login(client: Client, password: str, *, ip: str = "10.0.0.1"):
    return client.post(reverse("login"), {"username": "owner", "password": password}, REMOTE_ADDR=ip)


def test_login_locks_out_after_n_failures_even_with_the_right_password(world, settings):
    settings.LOGIN_MAX_FAILURES = 3
    settings.LOGIN_LOCKOUT_SECONDS = 120
    client = Client()
    for _ in range(3):
        assert _login(client, "wrong").status_code == 200
    locked = _login(client, PASSWORD)
    assert locked.status_code == 429
    assert 0 < int(locked["Retry-After"]) <= 120
    assert "Too many failed sign-ins" in locked.content.decode()
    assert "_auth_user_id" not in client.session
    # Another address is not locked out: the key is username + address.
    assert _login(Client(), PASSWORD, ip="10.0.0.2").status_code == 302
    # Nor is another username from the same address.
    assert (
        Client().post(reverse("login"), {"username": "other", "password": PASSWORD}, REMOTE_ADDR="10.0.0.1").status_code
        == 302
    )


def test_a_forged_forwarded_for_header_does_not_escape_the_lockout(world, settings):
    settings.LOGIN_MAX_FAILURES = 2
    for _ in range(2):
        _login(Client(), "wrong")
    response = Client().post(
        reverse("login"),
        {"username": "owner", "password": PASSWORD},
        REMOTE_ADDR="10.0.0.1",
        HTTP_X_FORWARDED_FOR="203.0.113.9",
    )
    assert response.status_code == 429


def test_the_admin_sign_in_counts_and_honours_the_lockout(world, settings):
    settings.LOGIN_MAX_FAILURES = 2
    admin_login = reverse("admin:login")
    for _ in range(2):
        Client().post(admin_login, {"username": "staffer", "password": "wrong"}, REMOTE_ADDR="10.0.0.3")
    client = Client()
    response = client.post(admin_login, {"username": "staffer", "password": PASSWORD}, REMOTE_ADDR="10.0.0.3")
    assert response.status_code == 200  # the form again, not signed in
    assert "_auth_user_id" not in client.session


def test_a_success_before_the_limit_resets_the_count(world, settings):
    settings.LOGIN_MAX_FAILURES = 3
    for _ in range(2):
        _login(Client(), "wrong")
    assert _login(Client(), PASSWORD).status_code == 302
    for _ in range(2):
        _login(Client(), "wrong")
    assert _login(Client(), PASSWORD).status_code == 302


def test_lockout_settings_come_from_the_environment():
    code = (
        "from django.conf import settings as s; print(s.LOGIN_MAX_FAILURES, s.LOGIN_LOCKOUT_SECONDS, "
        "s.CACHES['default']['BACKEND'], s.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'])"
    )
    result = _django_subprocess(
        code,
        LOGIN_MAX_FAILURES="7",
        LOGIN_LOCKOUT_SECONDS="60",
        CACHE_URL="redis://cache.internal:6379/1",
        API_THROTTLE_ANON="off",
        API_THROTTLE_USER="10/second",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "7 60 django.core.cache.backends.redis.RedisCache {'anon': None, 'user': '10/second'}"
    )


# --- API throttling --------------------------------------------------------------------------------


def _throttle(settings, anon: str, user: str):
    rates = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"anon": anon, "user": user}}
    settings.REST_FRAMEWORK = rates  # DRF reloads api_settings on setting_changed


def test_api_answers_429_json_with_retry_after_beyond_the_rate(world, settings):
    from rest_framework.throttling import SimpleRateThrottle

    # DRF copies the rates onto the class at import; keep the original to put back, since the
    # settings fixture only reverts after this test, too late for the class attribute.
    original_rates = SimpleRateThrottle.THROTTLE_RATES
    _throttle(settings, "3/minute", "5/minute")
    SimpleRateThrottle.THROTTLE_RATES = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    try:
        anonymous = APIClient()
        assert [anonymous.get("/api/v1/items").status_code for _ in range(3)] == [200] * 3
        throttled = anonymous.get("/api/v1/items")
        assert throttled.status_code == 429
        assert throttled["Content-Type"].startswith("application/json") and "throttled" in throttled.json()["detail"]
        assert 0 < int(throttled["Retry-After"]) <= 60

        owner = api_client(world.owner, token=True)
        assert [owner.get("/api/v1/models").status_code for _ in range(5)] == [200] * 5
        assert owner.get("/api/v1/models").status_code == 429
        assert api_client(world.other, token=True).get("/api/v1/models").status_code == 200  # per user
    finally:
        SimpleRateThrottle.THROTTLE_RATES = original_rates


# --- Production settings -----------------------------------------------------------------------------


def _django_subprocess(code: str, *, settings_module: str = "config.settings.development", **env: str):
    from django.db import connection

    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "CACHE_URL", "REDIS_URL"}
    }
    # Point at the running server so the subprocess does not start the embedded one again.
    db = connection.settings_dict
    environment.setdefault(
        "DATABASE_URL",
        f"postgresql://{db['USER']}@/{db['NAME']}?host={db['HOST']}" + (f"&port={db['PORT']}" if db["PORT"] else ""),
    )
    environment.update({"DJANGO_SETTINGS_MODULE": settings_module, **env})
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _manage(*arguments: str, **env: str):
    from django.db import connection

    db = connection.settings_dict
    environment = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG", "ALLOWED_HOSTS"}}
    environment["DATABASE_URL"] = f"postgresql://{db['USER']}@/{db['NAME']}?host={db['HOST']}"
    environment.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_passes_the_deploy_check_with_warnings_as_errors():
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_SETTINGS_MODULE="config.settings.production",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_hardening_values():
    code = (
        "from django.conf import settings as s; print(s.DEBUG, s.ALLOWED_HOSTS, s.SECURE_HSTS_SECONDS >= 31536000, "
        "s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, "
        "s.SESSION_COOKIE_HTTPONLY, s.X_FRAME_OPTIONS, s.SECURE_CONTENT_TYPE_NOSNIFF)"
    )
    result = _django_subprocess(
        code,
        settings_module="config.settings.production",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="a.example,b.example",
        DEBUG="true",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False ['a.example', 'b.example'] True True True True True True DENY True"


def test_production_refuses_to_start_without_a_secret_key():
    result = _manage("check", DJANGO_SETTINGS_MODULE="config.settings.production", ALLOWED_HOSTS="example.com")
    assert result.returncode != 0
    assert "The environment variable SECRET_KEY is required here." in result.stderr


def test_the_development_key_fails_the_deploy_check():
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_SETTINGS_MODULE="config.settings.production",
        SECRET_KEY="dev-insecure-key-change-me-in-production",
        ALLOWED_HOSTS="example.com",
    )
    assert result.returncode != 0 and "security.W009" in result.stderr + result.stdout
