"""Data page: catalogue counts, recent imports, and imports of uploaded MovieLens or interactions files."""

from __future__ import annotations

import json
import logging

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from ..access import staff_required
from ..forms import ImportUploadForm, InteractionsUploadForm
from ..selectors import catalog_counts, import_task_get, import_task_list
from ..services import UploadRejected, catalog_interactions_upload_import, catalog_upload_import

logger = logging.getLogger(__name__)

RUNNING_STATES = ("PENDING", "RECEIVED", "STARTED", "PROGRESS", "RETRY")


def import_view(task) -> dict:
    """Plain data for templates from a TaskResult row: phase, progress, report, error."""
    try:
        result = json.loads(task.result) if task.result else {}
    except (TypeError, ValueError):
        result = {"raw": task.result}
    if not isinstance(result, dict):
        result = {"raw": result}
    running = task.status in RUNNING_STATES
    failed = task.status in ("FAILURE", "REVOKED")
    progress = 1.0 if not running else float(result.get("progress", 0.0) or 0.0)
    directory = result.get("directory") or result.get("source") or ""
    return {
        "task_id": task.task_id,
        "status": task.status,
        "running": running,
        "failed": failed,
        "phase": "failed" if failed else result.get("phase", task.status.lower()),
        "progress": progress,
        "percent": round(progress * 100),
        "created": task.date_created,
        "done": task.date_done,
        "report": result if task.status == "SUCCESS" else None,
        "directory": directory,
        # A list, not the dict: the template engine would read ``added.items`` as the "items" key.
        "added": sorted((result.get("added") or {}).items()) if task.status == "SUCCESS" else [],
        "error": _error_text(result, task) if failed else "",
    }


def _error_text(result: dict, task) -> str:
    message = result.get("exc_message") or result.get("raw") or task.traceback or "The import failed."
    if isinstance(message, (list, tuple)):
        message = " ".join(str(part) for part in message)
    return f"{result.get('exc_type', 'Error')}: {message}"


@staff_required
def data_page(request: HttpRequest) -> HttpResponse:
    imports = [import_view(task) for task in import_task_list()]
    return render(
        request,
        "dashboard/data.html",
        {
            "counts": catalog_counts(),
            "imports": imports,
            "latest": imports[0] if imports else None,
            "form": ImportUploadForm(),
            "interactions_form": InteractionsUploadForm(),
        },
    )


@require_POST
@staff_required
def data_import(request: HttpRequest) -> HttpResponse:
    form = ImportUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, error)
        return redirect("data")
    try:
        task_id = catalog_upload_import(files=form.cleaned_data["files"], requested_by=request.user)
    except UploadRejected as error:
        messages.error(request, error.message)
        return redirect("data")
    messages.success(request, "Upload saved; the import is queued.")
    return redirect(f"{reverse('data')}#import-{task_id}")


@require_POST
@staff_required
def data_import_interactions(request: HttpRequest) -> HttpResponse:
    form = InteractionsUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        for field, errors in form.errors.items():
            label = form.fields[field].label if field in form.fields else ""
            for error in errors:
                messages.error(request, f"{label}: {error}" if label else error)
        return redirect("data")
    files = {role: form.cleaned_data.get(role) for role in ("interactions", "items_file", "users_file")}
    try:
        task_id = catalog_interactions_upload_import(
            files=files, options=form.command_options(), requested_by=request.user
        )
    except UploadRejected as error:
        messages.error(request, error.message)
        return redirect("data")
    messages.success(request, "Upload saved; the import is queued.")
    return redirect(f"{reverse('data')}#import-{task_id}")


@staff_required
def import_progress(request: HttpRequest, task_id: str) -> HttpResponse:
    task = import_task_get(task_id=task_id)
    if task is None:
        raise Http404("No such import.")
    return render(request, "partials/dashboard_import_progress.html", {"job": import_view(task)})
