"""``GET /metrics``: the Prometheus exposition of `config.metrics`, for staff and for the scraper.

Access (docs/operations.md, "Metrics"): a staff session, or ``Authorization: Bearer <METRICS_TOKEN>``
when that setting is set (Prometheus' ``authorization`` scrape option sends exactly this). Anyone
else gets the API's JSON errors: 401 without credentials or with a wrong token, 403 for a signed-in
user who is not staff.
"""

from __future__ import annotations

import hmac
import logging

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from config import metrics
from config.middleware import api_error, api_error_detail

logger = logging.getLogger(__name__)


class ActiveVersionCollector:
    """``recsys_active_model_version``: the id of the version serving now (0: none), read at scrape time.

    Read from the database rather than set by the activation: the activation runs in a Celery
    worker or another web process, and a gauge written there would say what that process last
    did, not what is in force.
    """

    def collect(self):
        from recommender.selectors import active_version

        try:
            version = active_version()
        except DatabaseError:
            # The serving and training series are still worth a scrape while the database is away;
            # an absent series (rather than a wrong 0) is what Prometheus alerts on as missing.
            logger.exception("metrics.active_version_unavailable")
            return
        gauge = GaugeMetricFamily(
            "recsys_active_model_version", "Id of the active model version (0 when none is active)."
        )
        gauge.add_metric([], float(version.pk) if version is not None else 0.0)
        yield gauge


class _OwnSeries:
    """This process's values of the project's series (single-process mode)."""

    def collect(self):
        return metrics.REGISTRY.collect()


def registry_build(*, directory: str | None) -> CollectorRegistry:
    """What one scrape reads: every process's files under ``directory``, else this process's values."""
    registry = CollectorRegistry(auto_describe=False)
    if directory:
        MultiProcessCollector(registry, path=directory)
    else:
        registry.register(_OwnSeries())
    registry.register(ActiveVersionCollector())
    return registry


def _refusal(request: HttpRequest) -> HttpResponse | None:
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer":
        token = settings.METRICS_TOKEN
        if token and hmac.compare_digest(credentials.strip().encode(), token.encode()):
            return None
        return _unauthorised("Invalid token.")
    user = request.user
    if not user.is_authenticated:
        return _unauthorised(api_error_detail(401))
    if not user.is_staff:
        return api_error(api_error_detail(403), status=403)
    return None


def _unauthorised(detail: str) -> HttpResponse:
    response = api_error(detail, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


def metrics_view(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        response = api_error(api_error_detail(405, method=request.method or ""), status=405)
        response["Allow"] = "GET, HEAD"
        return response
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encode(registry_build(directory=metrics.MULTIPROCESS_DIRECTORY))
    return HttpResponse(body, content_type=content_type)
