"""Writes for the dashboard: the "view as" choices (a user, an experiment's variant), rule toggles,
and uploads queued for import."""

from __future__ import annotations

import logging
import shutil
import uuid
import zipfile
from pathlib import Path

from django.conf import settings
from django.db import transaction

from catalog.models import UserProfile
from config.exception_handlers import ApplicationError
from recommender.rerank.models import Rule
from recommender.rerank.services import rule_update
from recommender.serving.experiments import FORCED_VARIANTS_SESSION_KEY

from .selectors import IMPORT_TASK_NAME, VIEW_AS_LABEL_SESSION_KEY, VIEW_AS_SESSION_KEY

logger = logging.getLogger(__name__)

MAX_UNZIPPED_BYTES = 2 * 1024**3  # a zip bomb stops here; ml-25m unpacks to about 1.2 GB
ACCEPTED_NAMES = frozenset(
    {"u.data", "u.item", "u.user", "u.genre", "u.occupation", "ratings.csv", "movies.csv", "tags.csv", "links.csv"}
)


class UploadRejected(ApplicationError):
    status_code = 400


def upload_dir() -> Path:
    return Path(settings.UPLOAD_DIR)


def view_as_set(*, session, profile: UserProfile | None) -> None:
    """Remember (or forget, with None) which user staff are viewing the site as."""
    if profile is None:
        session.pop(VIEW_AS_SESSION_KEY, None)
        session.pop(VIEW_AS_LABEL_SESSION_KEY, None)
    else:
        session[VIEW_AS_SESSION_KEY] = profile.pk
        session[VIEW_AS_LABEL_SESSION_KEY] = profile.external_id  # shown in the nav without a query
    logger.info("dashboard.view_as profile_id=%s", profile.pk if profile else None)


def experiment_view_as_set(*, session, experiment_id: int, variant_key: str | None) -> None:
    """Serve this staff member ``variant_key`` of the experiment (None: their own assignment again)."""
    forced = dict(session.get(FORCED_VARIANTS_SESSION_KEY) or {})
    if variant_key is None:
        forced.pop(str(experiment_id), None)
    else:
        forced[str(experiment_id)] = variant_key
    if forced:
        session[FORCED_VARIANTS_SESSION_KEY] = forced
    else:
        session.pop(FORCED_VARIANTS_SESSION_KEY, None)
    logger.info("dashboard.view_as_variant experiment_id=%s variant=%s", experiment_id, variant_key)


def rule_set_enabled(*, rule: Rule, enabled: bool) -> Rule:
    """Turn a re-ranking rule on or off through the rules' own validated update."""
    return rule_update(rule=rule, enabled=enabled)


def _extract_zip(archive: Path, target: Path) -> None:
    with zipfile.ZipFile(archive) as bundle:
        total = sum(info.file_size for info in bundle.infolist())
        if total > MAX_UNZIPPED_BYTES:
            raise UploadRejected(
                f"The archive unpacks to {total / 1e9:.1f} GB; the limit is "
                f"{MAX_UNZIPPED_BYTES / 1e9:.0f} GB. Import it with `manage.py import_movielens`."
            )
        root = target.resolve()
        for info in bundle.infolist():
            destination = (target / info.filename).resolve()
            if not destination.is_relative_to(root):
                raise UploadRejected(f"The archive entry {info.filename!r} points outside its folder.")
        bundle.extractall(target)


def _dataset_folder(root: Path) -> Path:
    """The folder holding u.data or ratings.csv + movies.csv (a zip usually nests one folder)."""
    for candidate in [root, *sorted(path for path in root.rglob("*") if path.is_dir())]:
        if (candidate / "u.data").exists() or (
            (candidate / "ratings.csv").exists() and (candidate / "movies.csv").exists()
        ):
            return candidate
    raise UploadRejected(
        "No MovieLens files found: upload a MovieLens zip, or u.data + u.item (+ u.user), or ratings.csv + movies.csv."
    )


def catalog_upload_import(*, files: list, requested_by=None) -> str:
    """Save uploaded files under the upload folder, unpack a zip, and queue the import task.

    Returns the Celery task id; its progress and report live in django_celery_results' TaskResult.
    Raises UploadRejected (with what to upload instead) when the files are not a MovieLens dataset.
    """
    if not files:
        raise UploadRejected("Choose a MovieLens zip or its CSV/u.* files.")
    folder = upload_dir() / uuid.uuid4().hex
    folder.mkdir(parents=True)
    try:
        for upload in files:
            name = Path(upload.name).name
            destination = folder / name
            with destination.open("wb") as handle:
                for chunk in upload.chunks():
                    handle.write(chunk)
            if name.lower().endswith(".zip"):
                if not zipfile.is_zipfile(destination):
                    raise UploadRejected(f"{name} is not a valid zip archive.")
                _extract_zip(destination, folder / "unpacked")
                destination.unlink()
            elif name not in ACCEPTED_NAMES:
                raise UploadRejected(
                    f"{name} is not a MovieLens file; expected a zip or one of {', '.join(sorted(ACCEPTED_NAMES))}."
                )
        dataset = _dataset_folder(folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return _import_enqueue(dataset=dataset, upload_folder=folder, requested_by=requested_by)


def catalog_interactions_upload_import(*, files: dict, options: dict, requested_by=None) -> str:
    """Save an uploaded interactions file (and its item / user files) and queue their import.

    ``files`` maps ``interactions``, ``items_file`` and ``users_file`` to uploads (the last two
    optional); ``options`` are `import_interactions` options (the column mapping). Returns the
    Celery task id, as :func:`catalog_upload_import` does.
    """
    if not files.get("interactions"):
        raise UploadRejected("Choose an interactions file.")
    folder = upload_dir() / uuid.uuid4().hex
    folder.mkdir(parents=True)
    paths: dict[str, str] = {}
    try:
        for role in ("interactions", "items_file", "users_file"):
            upload = files.get(role)
            if upload is None:
                continue
            # One folder per role keeps two uploads of one name apart, and bad rows name the file
            # as the person uploaded it.
            destination = folder / role / Path(upload.name).name
            destination.parent.mkdir()
            with destination.open("wb") as handle:
                for chunk in upload.chunks():
                    handle.write(chunk)
            paths[role] = str(destination)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    interactions = {**options, **{role: path for role, path in paths.items() if role != "interactions"}}
    return _import_enqueue(
        dataset=Path(paths["interactions"]), upload_folder=folder, requested_by=requested_by, interactions=interactions
    )


def _import_enqueue(*, dataset: Path, upload_folder: Path, requested_by, interactions: dict | None = None) -> str:
    from django_celery_results.models import TaskResult

    from .tasks import catalog_import_task

    task_id = uuid.uuid4().hex
    # A PENDING row now, so the page shows the queued import before a worker picks it up;
    # the result backend updates this same row (keyed by task_id).
    TaskResult.objects.create(
        task_id=task_id,
        task_name=IMPORT_TASK_NAME,
        status="PENDING",
        task_kwargs=repr({"directory": str(dataset)}),
        result='{"phase": "queued", "progress": 0.0}',
        content_type="application/json",
        content_encoding="utf-8",
    )
    kwargs: dict = {
        "directory": str(dataset),
        "upload_folder": str(upload_folder),
        "requested_by": getattr(requested_by, "pk", None),
    }
    if interactions is not None:
        kwargs["interactions"] = interactions
    transaction.on_commit(lambda: catalog_import_task.apply_async(kwargs=kwargs, task_id=task_id))
    logger.info("dashboard.import_queued task_id=%s directory=%s", task_id, dataset)
    return task_id
