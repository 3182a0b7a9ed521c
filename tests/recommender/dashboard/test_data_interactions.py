"""The Data page's upload of any interactions file: form → queued task → report with bad rows."""

from __future__ import annotations

import io
import json

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django_celery_results.models import TaskResult

from catalog.models import Feedback, Item
from recommender.dashboard.tasks import catalog_import_task
from tests.factories import StaffUserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    client.force_login(StaffUserFactory())
    return client


def _upload(name: str, text: str) -> io.BytesIO:
    upload = io.BytesIO(text.encode("utf-8"))
    upload.name = name
    return upload


def test_an_uploaded_interactions_file_is_imported_with_its_mapping_and_its_bad_rows_shown(
    staff_client, django_capture_on_commit_callbacks, settings, tmp_path
):
    settings.UPLOAD_DIR = tmp_path / "uploads"
    page = staff_client.get(reverse("data")).content.decode()
    assert 'data-testid="interactions-form"' in page and "Item title column" in page

    form = {
        "interactions": _upload(
            "plays.tsv", "user\tartist\tplays\r\n7\t1\t250\r\n7\t2\t3\r\n8\t99\t4\r\n8\t1\tmany\r\n"
        ),
        "items_file": _upload("artists.tsv", "id\tname\n1\tMALICE MIZER\n2\tDiary of Dreams\n"),
        "user_col": "user",
        "item_col": "artist",
        "value_col": "plays",
        "kind": "play",
        "item_id_col": "id",
        "item_title_col": "name",
        "encoding": "utf-8",
        "header": "auto",
    }
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = staff_client.post(reverse("data-import-interactions"), form)
    assert response.status_code == 302
    task = TaskResult.objects.get(task_name="recommender.dashboard.tasks.catalog_import_task")
    assert task.status == "PENDING" and len(callbacks) == 1

    conf = catalog_import_task.app.conf
    previous = conf.task_always_eager, catalog_import_task.store_eager_result
    conf.task_always_eager, catalog_import_task.store_eager_result = True, True
    try:
        callbacks[0]()
    finally:
        conf.task_always_eager, catalog_import_task.store_eager_result = previous

    task.refresh_from_db()
    assert task.status == "SUCCESS", task.result
    assert json.loads(task.result)["added"]["feedback"] == 2
    assert dict(Item.objects.values_list("external_id", "title")) == {"1": "MALICE MIZER", "2": "Diary of Dreams"}
    assert sorted(Feedback.objects.values_list("value", flat=True)) == [3.0, 250.0]
    progress = staff_client.get(reverse("data-import-progress", args=[task.task_id])).content.decode()
    assert "2 bad rows skipped" in progress
    assert (
        "unknown item id 99 (not in artists.tsv)" in progress and "value &#x27;many&#x27; is not a number" in progress
    )
    assert list((tmp_path / "uploads").iterdir()) == []


def test_a_kind_column_and_a_fixed_kind_together_are_refused(staff_client, settings, tmp_path):
    settings.UPLOAD_DIR = tmp_path / "uploads"
    form = {
        "interactions": _upload("log.csv", "u,i,k\n1,2,view\n"),
        "user_col": "u",
        "item_col": "i",
        "kind_col": "k",
        "kind": "play",
        "encoding": "utf-8",
        "header": "auto",
    }
    response = staff_client.post(reverse("data-import-interactions"), form, follow=True)
    assert any("not both" in str(message) for message in get_messages(response.wsgi_request))
    assert not TaskResult.objects.exists()
