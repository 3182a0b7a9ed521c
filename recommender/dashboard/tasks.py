"""Celery task of the dashboard: import an uploaded MovieLens dataset or interactions file.

It must be registered in the worker: config/celery.py discovers it with
``app.autodiscover_tasks(["recommender.dashboard"])`` (``<package>.tasks`` is what Celery looks for).
"""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

from celery import shared_task
from django.core.management import call_command

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    name="recommender.dashboard.tasks.catalog_import_task",
    acks_late=True,
    soft_time_limit=3 * 3600,
    time_limit=3 * 3600 + 300,
    max_retries=0,
)
def catalog_import_task(
    self,
    directory: str,
    upload_folder: str | None = None,
    requested_by: int | None = None,
    interactions: dict | None = None,
) -> dict:
    """Import one MovieLens folder with `manage.py import_movielens` and return its JSON report.

    With ``interactions`` (`import_interactions` options: the column mapping and the item and
    user file paths), ``directory`` is an interactions file imported with `manage.py
    import_interactions` instead.

    Running it twice is safe: the importer skips rows that already exist (by external id) and the
    whole import is one transaction, so a killed run leaves nothing half-imported. Not retried: a
    failure is recorded on the task (status FAILURE with the error) and the upload is kept for a
    look; a success deletes the upload.

    Progress goes to the result backend as state PROGRESS with ``{"phase", "progress"}``; the
    importer works in one transaction without a row callback, so progress is per phase.
    """
    logger.info("dashboard.import_started task_id=%s directory=%s user=%s", self.request.id, directory, requested_by)
    self.update_state(state="PROGRESS", meta={"phase": "importing", "progress": 0.2, "directory": directory})
    output = io.StringIO()
    try:
        if interactions is None:
            call_command("import_movielens", directory, json=True, no_progress=True, stdout=output)
        else:
            call_command(
                "import_interactions",
                directory,
                *_option_arguments(interactions),
                "--json",
                "--no-progress",
                stdout=output,
            )
    except Exception:
        logger.exception("dashboard.import_failed task_id=%s directory=%s", self.request.id, directory)
        raise
    report = _last_json_line(output.getvalue())
    if upload_folder:
        shutil.rmtree(Path(upload_folder), ignore_errors=True)
    logger.info(
        "dashboard.import_finished task_id=%s added=%s bad_rows=%s",
        self.request.id,
        report.get("added"),
        report.get("bad_row_count"),
    )
    return {"phase": "done", "progress": 1.0, **report}


def _option_arguments(options: dict) -> list[str]:
    """``{"user_col": "1", "item_feature_col": ["genre=3"]}`` → ``["--user-col=1", "--item-feature-col=genre=3"]``.

    ``--name=value`` in one word, so a value that starts with a dash is never read as an option.
    """
    arguments: list[str] = []
    for name, value in options.items():
        for one in value if isinstance(value, list) else [value]:
            arguments.append(f"--{name.replace('_', '-')}={one}")
    return arguments


def _last_json_line(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"the import printed no JSON summary; its output was: {text[-500:]!r}")
