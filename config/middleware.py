"""The door of every request: hostile input refused, and every error under /api/ answered in JSON.

- :class:`HostileInputMiddleware` refuses NUL characters and oversized API bodies before any view
  runs. PostgreSQL text cannot hold NUL, so a NUL that reached a query would end in a 500;
  refusing it at the door keeps every view from having to know. API paths get DRF-shaped JSON;
  pages get a plain 400.
- :class:`ApiErrorsAsJsonMiddleware` makes sure no error under /api/ answers anything but that
  JSON, whoever produced it.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"

# The words DRF uses for these errors, so that an error under /api/ reads the same whoever answered it.
_ERROR_DETAILS = {
    400: "Bad request.",
    401: "Authentication credentials were not provided.",
    403: "You do not have permission to perform this action.",
    404: "Not found.",
    500: "Server error.",
}
# Headers an error answer must keep when its body is replaced: they tell the client what to do next.
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


def is_api_request(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX) or request.path == API_PREFIX.rstrip("/")


def api_error(detail: str, *, status: int, **extra) -> JsonResponse:
    """The JSON error of the API: ``{"detail": ...}``, the shape DRF gives its own errors."""
    return JsonResponse({"detail": detail, **extra}, status=status)


def api_error_detail(status: int, *, method: str = "") -> str:
    """DRF's wording for an error status, for the answers DRF did not write itself."""
    if status == 405:
        return f'Method "{method}" not allowed.'
    if status in _ERROR_DETAILS:
        return _ERROR_DETAILS[status]
    try:
        return f"{HTTPStatus(status).phrase}."
    except ValueError:
        return "Error."


def _has_nul(request: HttpRequest) -> bool:
    if "\x00" in request.path or "\x00" in request.META.get("QUERY_STRING", ""):
        return True
    return any("\x00" in key or any("\x00" in value for value in values) for key, values in request.GET.lists())


def _declared_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return -1


def _is_json(response: HttpResponse) -> bool:
    media_type = response.get("Content-Type", "").split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


class ApiErrorsAsJsonMiddleware:
    """Under /api/, replace an error answer that is not JSON with the API's JSON error.

    DRF's own errors are JSON already. This is the net for what answers without DRF's handler or
    renders with another media type: an unmatched route with DEBUG on (Django's technical 404 page
    bypasses handler404), an uncaught exception with DEBUG on (the technical 500 page; Django has
    logged the traceback by then), a view that is not DRF's, and the errors of the schema and Swagger
    UI views and of the browsable API (YAML, HTML). A DRF error keeps its ``detail``; any other
    gets DRF's wording for its status. It is first in MIDDLEWARE, so it sees every answer, and a
    redirect (CommonMiddleware's added slash on /api/schema) is not an error and passes untouched.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code < 400 or _is_json(response) or not is_api_request(request):
            return response
        data = getattr(response, "data", None)  # a DRF Response rendered as YAML or HTML
        if isinstance(data, dict) and "detail" in data:
            replacement = JsonResponse(data, status=response.status_code)
        else:
            replacement = api_error(
                api_error_detail(response.status_code, method=request.method or ""), status=response.status_code
            )
        for header in _KEPT_HEADERS:
            if header in response:
                replacement[header] = response[header]
        return replacement


class HostileInputMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        return self.get_response(request)

    def _refusal(self, request: HttpRequest) -> HttpResponse | None:
        api = is_api_request(request)
        if _has_nul(request):
            logger.info("request.refused reason=nul path_length=%s", len(request.path))
            if api:
                return api_error("The path or a parameter contains a NUL character.", status=400)
            return HttpResponseBadRequest(
                "The path or a parameter contains a NUL character.", content_type="text/plain; charset=utf-8"
            )
        if api:
            length = _declared_length(request)
            if length < 0:
                return api_error("Content-Length is not a number.", status=400)
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            # DRF streams the body straight from the request, bypassing Django's own size check.
            if limit is not None and length > limit:
                logger.info("request.refused reason=too_large length=%s limit=%s", length, limit)
                return api_error(f"The request body is larger than {limit} bytes.", status=413, limit_bytes=limit)
        return None
