"""Models page: versions, live training progress, metric and phase-time charts, train/activate/rollback."""

from __future__ import annotations

import logging

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from config.exception_handlers import ApplicationError
from recommender.models import ModelVersion
from recommender.selectors import (
    active_version,
    home_precompute_coverage,
    model_version_list,
    related_precompute_coverage,
    running_versions,
)
from recommender.services.activation import model_version_activate, model_version_rollback
from recommender.services.training import model_training_request

from ..access import staff_required
from ..charts import METRICS, metric_charts, phase_chart

logger = logging.getLogger(__name__)

VERSIONS_SHOWN = 20


def _watched_version(request: HttpRequest) -> ModelVersion | None:
    """The version whose progress to show: ?version=N, else the oldest running one."""
    version_id = request.GET.get("version", "")
    if version_id.isdigit():
        return ModelVersion.objects.filter(pk=int(version_id)).first()
    return running_versions().first()


def scorer_report(versions: list[ModelVersion]) -> dict | None:
    """The newest version's families and learned scorer, as the Models page shows them (None: no stack)."""
    version = next((v for v in versions if isinstance(v.metrics, dict) and v.metrics.get("stack")), None)
    if version is None:
        return None
    stack = version.metrics["stack"]
    k = version.config_snapshot.get("eval_k", 10)
    validation = stack.get("validation") or {}
    lift_users = validation.get("on_lift_users") or {}
    rows = [("served scorer: " + str(stack.get("choice")), stack.get("scorer") or {})]
    rows += [(f"{name} alone", metrics) for name, metrics in (stack.get("families") or {}).items()]
    rows.append(("popularity", stack.get("popularity") or {}))
    return {
        "version": version,
        "k": k,
        "reason": validation.get("reason", ""),
        "rows": [
            {
                "label": label,
                "precision": metrics.get(f"precision_at_{k}"),
                "ndcg": metrics.get(f"ndcg_at_{k}"),
                "coverage": metrics.get("coverage"),
                "fit_seconds": metrics.get("fit_seconds"),
            }
            for label, metrics in rows
        ],
        "lift": sorted((validation.get("ranker_lift") or {}).items()),
        "lift_users": validation.get("lift_users"),
        "validation_rows": sorted(
            (name, metrics.get(f"precision_at_{k}"), metrics.get(f"ndcg_at_{k}"))
            for name, metrics in lift_users.items()
        ),
        "importances": list((validation.get("importances") or {}).items())[:8],
        "search": {name: len(rows) for name, rows in (validation.get("search") or {}).items()},
        "params": (validation.get("search") or {}),
    }


def precompute_report(version: ModelVersion | None) -> dict | None:
    """What the active version's last precomputations covered (seed 000), or None before any ran."""
    if version is None:
        return None
    home = home_precompute_coverage(version_id=version.pk)
    related = related_precompute_coverage(version_id=version.pk)
    if home is None and related is None:
        return None
    return {"version": version, "home": home, "related": related}


@login_required
def models_page(request: HttpRequest) -> HttpResponse:
    versions = list(model_version_list()[:VERSIONS_SHOWN])
    active = active_version()
    context = {
        "versions": versions,
        "rows": [
            {"version": v, "metrics": [(v.metrics.get(key), v.baseline_metrics.get(key)) for key, _ in METRICS]}
            for v in versions
        ],
        "active": active,
        "watched": _watched_version(request),
        "metric_columns": METRICS,
        "metric_charts": metric_charts(versions),
        "phase_chart": phase_chart(versions),
        "scorer_report": scorer_report(versions),
        "precompute_report": precompute_report(active),
    }
    return render(request, "dashboard/models.html", context)


@login_required
def training_progress(request: HttpRequest) -> HttpResponse:
    """The progress partial, polled every second by htmx while its version runs."""
    return render(request, "partials/dashboard_training_progress.html", {"watched": _watched_version(request)})


@require_POST
@staff_required
def model_train(request: HttpRequest) -> HttpResponse:
    try:
        version = model_training_request(requested_by=request.user)
    except ApplicationError as error:  # TrainingAlreadyRunning, or a configuration the service refuses
        messages.error(request, error.message)
        return redirect("models")
    except ValidationError as error:  # the default configuration's fields (e.g. unknown families)
        messages.error(request, "The training configuration is refused: " + "; ".join(error.messages))
        return redirect("models")
    except Exception as error:  # the broker refused the task: the service already marked the version failed
        logger.exception("dashboard.train_enqueue_failed user=%s", request.user.pk)
        messages.error(request, f"The training could not be queued ({type(error).__name__}); see the Health page.")
        return redirect("models")
    messages.success(request, f"Training v{version.pk} queued.")
    return redirect(f"{reverse('models')}?version={version.pk}")


@require_POST
@staff_required
def model_activate(request: HttpRequest, version_id: int) -> HttpResponse:
    version = ModelVersion.objects.filter(pk=version_id).first()
    if version is None:
        raise Http404("No such version.")
    try:
        model_version_activate(
            version=version, reason=f"Activated by {request.user.get_username()} on the Models page."
        )
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"v{version.pk} is now active.")
    return redirect("models")


@require_POST
@staff_required
def model_rollback(request: HttpRequest) -> HttpResponse:
    try:
        version = model_version_rollback()
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Rolled back: v{version.pk} is active again.")
    return redirect("models")
