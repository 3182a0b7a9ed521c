"""Health probes (/health/live, /health/ready), the health page and its JSON twin."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from ..health import database_check, health_report


@never_cache
def health_live(request: HttpRequest) -> JsonResponse:
    """The process answers HTTP; touches nothing else (docker-compose's healthcheck)."""
    return JsonResponse({"status": "ok"})


@never_cache
def health_ready(request: HttpRequest) -> JsonResponse:
    """Ready to serve: the database answers within a short statement timeout."""
    check = database_check()
    body = {"status": "ok" if check.ok else "error", "checks": [check.as_dict()]}
    return JsonResponse(body, status=200 if check.ok else 503)


def _status_code(report: dict) -> int:
    return 503 if report["status"] == "error" else 200


@never_cache
def health_page(request: HttpRequest) -> HttpResponse:
    report = health_report()
    return render(request, "dashboard/health.html", {"report": report}, status=_status_code(report))


@never_cache
def health_json(request: HttpRequest) -> JsonResponse:
    report = health_report()
    return JsonResponse(report, status=_status_code(report))
