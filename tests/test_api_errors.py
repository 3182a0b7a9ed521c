"""Every error under /api/ answers JSON, ``{"detail": ...}`` as DRF's own errors, with DEBUG on and off.

With DEBUG off Django's handlers (config/exception_handlers.py) answer the API's JSON; with DEBUG on
Django shows its technical pages instead, and config.middleware.ApiErrorsAsJsonMiddleware answers
the same JSON. Pages outside /api/ keep their usual HTML.
"""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from tests.factories import StaffUserFactory

pytestmark = pytest.mark.django_db

UNMATCHED = [
    "/api/v1/rules/null,null",
    "/api/v1/models/null,null",
    "/api/v1/rules/abc",
    "/api/v1/models/abc/activate",
    "/api/nope",
    "/api/v1/",
    "/api",
]


@pytest.fixture(params=[True, False], ids=["DEBUG", "production"])
def debug(request, settings):
    settings.DEBUG = request.param
    return request.param


def _raw_client() -> Client:
    # A crash becomes the 500 a real client would see instead of an exception in the test.
    return Client(raise_request_exception=False)


def assert_api_error(response, status: int, detail: str) -> None:
    assert response.status_code == status, (response.status_code, response.content[:200])
    assert response["Content-Type"] == "application/json", response["Content-Type"]
    assert response.json()["detail"] == detail


@pytest.mark.parametrize("path", UNMATCHED)
@pytest.mark.parametrize("method", ["get", "post", "delete"])
def test_unmatched_api_routes_answer_json_404(debug, path, method):
    assert_api_error(getattr(_raw_client(), method)(path), 404, "Not found.")


def test_unmatched_api_route_from_a_browser_is_still_json(debug):
    response = _raw_client().get("/api/v1/rules/null,null", HTTP_ACCEPT="text/html")
    assert_api_error(response, 404, "Not found.")


def test_a_wrong_method_answers_json_405_with_allow(debug):
    client = APIClient()
    client.force_authenticate(StaffUserFactory())
    response = client.delete("/api/v1/models/train")
    assert_api_error(response, 405, 'Method "DELETE" not allowed.')
    assert "POST" in response["Allow"]


@pytest.mark.parametrize(("method", "path"), [("put", "/api/schema/"), ("post", "/api/docs/")])
def test_the_schema_and_docs_views_answer_wrong_methods_in_json_not_yaml_or_html(debug, method, path):
    response = getattr(_raw_client(), method)(path)
    assert_api_error(response, 405, f'Method "{method.upper()}" not allowed.')
    assert "GET" in response["Allow"]


def test_an_error_of_the_browsable_api_answers_json_and_keeps_www_authenticate(debug):
    response = _raw_client().get("/api/v1/models/train", HTTP_ACCEPT="text/html")
    assert_api_error(response, 401, "Authentication credentials were not provided.")
    assert response["WWW-Authenticate"] == "Token"


def test_the_browsable_api_still_renders_successful_answers(debug):
    response = _raw_client().get("/api/v1/items", HTTP_ACCEPT="text/html")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")


@pytest.mark.urls("tests.api_error_urls")
@pytest.mark.parametrize(
    ("path", "status", "detail"),
    [
        ("/api/test/crash", 500, "Server error."),
        ("/api/test/refuse", 403, "You do not have permission to perform this action."),
        ("/api/test/suspicious", 400, "Bad request."),
        ("/api/test/missing", 404, "Not found."),
    ],
)
def test_errors_raised_by_a_view_answer_json(debug, path, status, detail):
    assert_api_error(_raw_client().get(path), status, detail)


@pytest.mark.urls("tests.api_error_urls")
def test_a_crash_is_still_logged_with_its_traceback(debug, caplog):
    _raw_client().get("/api/test/crash")
    logged = [record for record in caplog.records if record.name == "django.request" and record.exc_info]
    assert logged and "a bug in a view" in str(logged[0].exc_info[1])


@pytest.mark.urls("tests.api_error_urls")
def test_pages_outside_the_api_keep_their_html(debug):
    for response in (_raw_client().get("/no-such-page/"), _raw_client().get("/test/crash")):
        assert response.status_code in (404, 500)
        assert response["Content-Type"].startswith("text/html")


def test_redirects_under_the_api_are_not_errors(debug):
    response = _raw_client().get("/api/schema")  # CommonMiddleware adds the slash
    assert response.status_code == 301 and response["Location"] == "/api/schema/"
