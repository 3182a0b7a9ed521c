"""Refuse hostile requests before any view runs: NUL characters and oversized API bodies.

PostgreSQL text cannot hold NUL, so a NUL that reached a query would end in a 500; refusing it
at the door keeps every view from having to know. API paths get DRF-shaped JSON; pages get a
plain 400.
"""
from __future__ import annotations

import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"


def is_api_request(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def api_error(detail: str, *, status: int, **extra) -> JsonResponse:
    return JsonResponse({"detail": detail, **extra}, status=status)


def _has_nul(request: HttpRequest) -> bool:
    if "\x00" in request.path or "\x00" in request.META.get("QUERY_STRING", ""):
        return True
    return any("\x00" in key or any("\x00" in value for value in values) for key, values in request.GET.lists())


def _declared_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return -1


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
            return HttpResponseBadRequest("The path or a parameter contains a NUL character.",
                                          content_type="text/plain; charset=utf-8")
        if api:
            length = _declared_length(request)
            if length < 0:
                return api_error("Content-Length is not a number.", status=400)
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            # DRF streams the body straight from the request, bypassing Django's own size check.
            if limit is not None and length > limit:
                logger.info("request.refused reason=too_large length=%s limit=%s", length, limit)
                return api_error(f"The request body is larger than {limit} bytes.", status=413,
                                 limit_bytes=limit)
        return None
