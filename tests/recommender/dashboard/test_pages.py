"""Dashboard pages through the Django test client on a planted catalogue (real Postgres + pgvector)."""

import io
import json
import zipfile

import pytest
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.urls import reverse
from django_celery_results.models import TaskResult

from catalog.models import Item
from recommender.dashboard.selectors import VIEW_AS_SESSION_KEY, viewing_profile
from recommender.dashboard.tasks import catalog_import_task
from recommender.models import ModelVersion, VersionStatus
from recommender.rerank.models import Rule
from recommender.rerank.services import rule_create
from tests.factories import StaffUserFactory, UserFactory
from tests.recommender.test_training import train_inline

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    client.force_login(StaffUserFactory())
    return client


def test_models_page_lists_versions_metrics_and_charts(planted_catalog, staff_client):
    version = train_inline()
    page = staff_client.get(reverse("models")).content.decode()

    assert f'id="version-{version.pk}"' in page
    assert f"{version.metrics['precision_at_10']:.4f}" in page
    assert version.gate_reason in page
    assert page.count('data-metric="') == 4  # precision, recall, NDCG, coverage charts
    assert 'class="bar model"' in page and 'class="bar baseline"' in page
    assert "Training time per phase" in page and "training:" in page


def test_models_page_says_what_the_precomputations_covered(planted_catalog, staff_client, settings):
    from recommender.services.home_precompute import home_lists_precompute

    version = train_inline()
    assert 'data-testid="precompute-report"' not in staff_client.get(reverse("models")).content.decode()
    coverage = home_lists_precompute(version=version)
    page = staff_client.get(reverse("models")).content.decode()
    assert f"Precomputed lists of v{version.pk}" in page
    assert f"Homepage pools: {coverage.users} of {coverage.of} users with feedback" in page
    assert "Related lists: not precomputed yet." in page


def test_non_staff_see_no_buttons_and_get_403_on_actions(planted_catalog, client):
    client.force_login(UserFactory())
    page = client.get(reverse("models")).content.decode()
    assert "Train a new version" not in page
    assert client.post(reverse("models-train")).status_code == 403
    assert client.post(reverse("models-rollback")).status_code == 403
    assert ModelVersion.objects.count() == 0
    assert client.get(reverse("rules")).status_code == 403
    assert client.get(reverse("data")).status_code == 403


def test_train_button_queues_a_version_and_a_second_press_says_why_not(
    planted_catalog, staff_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):  # no broker call: the version stays queued
        response = staff_client.post(reverse("models-train"))
    version = ModelVersion.objects.get()
    assert response.status_code == 302 and response.url == f"{reverse('models')}?version={version.pk}"
    assert version.status == VersionStatus.QUEUED

    progress = staff_client.get(f"{reverse('models-progress')}?version={version.pk}").content.decode()
    assert 'hx-trigger="every 1s"' in progress and 'value="0"' in progress

    with django_capture_on_commit_callbacks(execute=False):
        response = staff_client.post(reverse("models-train"), follow=True)
    assert ModelVersion.objects.count() == 1
    assert any(f"v{version.pk} is already queued" in str(m) for m in get_messages(response.wsgi_request))


def test_the_progress_card_says_what_the_running_phase_is_doing(staff_client):
    detail = "HNSW index 2 of 3 (rec_item_vectors_v9_cos_hnsw): loading tuples, 400,000 of 1,000,000 items (40%)"
    version = ModelVersion.objects.create(status=VersionStatus.PUBLISHING, phase_detail=detail)
    progress = staff_client.get(f"{reverse('models-progress')}?version={version.pk}").content.decode()
    assert 'data-testid="training-detail"' in progress
    assert "loading tuples, 400,000 of 1,000,000 items (40%)" in progress


def test_finished_version_stops_polling_at_100_percent(planted_catalog, staff_client):
    version = train_inline()
    progress = staff_client.get(f"{reverse('models-progress')}?version={version.pk}").content.decode()
    assert "hx-trigger" not in progress
    assert 'value="100"' in progress


def test_a_just_ready_version_is_watched_until_its_activation_can_have_landed(staff_client):
    """Activation follows "ready" in a second step: the card polls through it, then stops."""
    from datetime import timedelta

    from django.utils import timezone

    from recommender.models import ACTIVATION_SETTLE_SECONDS

    version = ModelVersion.objects.create(status=VersionStatus.READY, finished_at=timezone.now(), config_snapshot={})
    url = f"{reverse('models-progress')}?version={version.pk}"
    assert "hx-trigger" in staff_client.get(url).content.decode()
    ModelVersion.objects.filter(pk=version.pk).update(
        finished_at=timezone.now() - timedelta(seconds=ACTIVATION_SETTLE_SECONDS + 1)
    )
    assert "hx-trigger" not in staff_client.get(url).content.decode()


def test_activate_and_rollback_buttons(planted_catalog, staff_client):
    first = train_inline()
    second = train_inline()
    ModelVersion.objects.filter(pk=second.pk).update(status=VersionStatus.READY)
    ModelVersion.objects.filter(pk=first.pk).update(status=VersionStatus.ACTIVE)

    staff_client.post(reverse("models-activate", args=[second.pk]))
    assert ModelVersion.objects.get(status=VersionStatus.ACTIVE).pk == second.pk
    staff_client.post(reverse("models-rollback"))
    assert ModelVersion.objects.get(status=VersionStatus.ACTIVE).pk == first.pk


def test_embedding_map_json_places_the_planted_clusters_apart(planted_catalog, staff_client):
    version = train_inline()
    data = staff_client.get(reverse("embedding-map-json"), {"color": "genre"}).json()

    assert data["version"] == version.pk
    assert len(data["points"]) == Item.objects.count() == 60
    names = [category["name"] for category in data["categories"]]
    assert sorted(names) == ["cluster-0", "cluster-1"]
    by_cluster = {name: [p[0] for p in data["points"] if names[p[2]] == name] for name in names}
    a, b = by_cluster["cluster-0"], by_cluster["cluster-1"]
    # The first principal axis is the cluster axis: the two means sit far apart relative to the spread.
    assert abs(sum(a) / len(a) - sum(b) / len(b)) > 0.3
    assert {p[3] for p in data["points"]} == set(Item.objects.values_list("external_id", flat=True))

    assert staff_client.get(reverse("embedding-map-json"), {"color": "nonsense"}).status_code == 400
    assert "provider" in staff_client.get(reverse("embedding-map")).content.decode()


def test_rule_toggle_changes_the_preview(planted_catalog, staff_client):
    train_inline()
    rule = rule_create(
        name="No cluster 0",
        kind="filter_feature",
        enabled=False,
        params={"feature_type": "genre", "values": ["cluster-0"]},
    )
    user = planted_catalog.profiles_by_cluster[0][0].external_id

    before = staff_client.get(reverse("rules-preview"), {"user": user}).content.decode()
    after_list = before.split('data-testid="preview-after"')[1]
    assert "Cluster 0 item" in after_list

    response = staff_client.post(reverse("rules-toggle", args=[rule.pk]), {"enabled": "on"})
    assert response["HX-Trigger"] == "rules-changed"
    assert Rule.objects.get(pk=rule.pk).enabled is True
    filtered = staff_client.get(reverse("rules-preview"), {"user": user}).content.decode()
    assert "Cluster 0 item" not in filtered.split('data-testid="preview-after"')[1]
    assert "No cluster 0" in filtered.split('data-testid="preview-trace"')[1]

    staff_client.post(reverse("rules-toggle", args=[rule.pk]), {})
    assert Rule.objects.get(pk=rule.pk).enabled is False
    assert "No such" not in staff_client.get(reverse("rules")).content.decode()
    unknown = staff_client.get(reverse("rules-preview"), {"user": "nobody"}).content.decode()
    assert "No user has the external id" in unknown


def test_health_endpoints(planted_catalog, client):
    assert client.get("/health/live").json() == {"status": "ok"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"
    report = client.get("/health.json").json()
    checks = {check["name"]: check for check in report["checks"]}
    assert set(checks) == {"database", "broker", "worker", "model"}
    assert checks["database"]["state"] == "ok" and checks["broker"]["state"] == "ok"
    assert checks["model"]["state"] == "error"  # nothing trained yet
    assert report["status"] == "degraded"

    train_inline()
    # A worker that just finished the periodic maintenance task is alive.
    TaskResult.objects.create(
        task_id="t1", task_name="recommender.tasks.model_versions_maintain_task", status="SUCCESS", result="{}"
    )
    report = client.get("/health.json").json()
    assert report["status"] == "ok", report
    assert "health-status" in client.get("/health/").content.decode()


def test_view_as_switcher_sets_the_profile_pages_read(planted_catalog, staff_client, rf):
    target = planted_catalog.profiles_by_cluster[1][3]
    staff_client.post(reverse("view-as"), {"user": target.external_id, "next": "/models/"})
    assert staff_client.session[VIEW_AS_SESSION_KEY] == target.pk

    request = rf.get("/")
    request.user = get_user_model().objects.get(is_staff=True)
    request.session = staff_client.session
    assert viewing_profile(request) == target
    suggestions = staff_client.get(reverse("view-as-suggestions"), {"user": "pu1-"}).content.decode()
    assert f'value="{target.external_id}"' in suggestions

    staff_client.post(reverse("view-as"), {"user": "", "clear": "1"})
    assert VIEW_AS_SESSION_KEY not in staff_client.session


def _movielens_zip() -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr(
            "ml-tiny/movies.csv",
            "movieId,title,genres\n1,Toy Story (1995),Animation|Comedy\n2,Heat (1995),Action|Crime\n",
        )
        bundle.writestr(
            "ml-tiny/ratings.csv",
            "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,5.0,964982704\n2,404,4.0,964982705\n2,1,3.0\n",
        )
    buffer.seek(0)
    buffer.name = "ml-tiny.zip"
    return buffer


def test_upload_queues_an_import_whose_report_lists_bad_rows(
    staff_client, django_capture_on_commit_callbacks, settings, tmp_path
):
    settings.UPLOAD_DIR = tmp_path / "uploads"
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = staff_client.post(reverse("data-import"), {"files": _movielens_zip()})
    assert response.status_code == 302
    task = TaskResult.objects.get(task_name="recommender.dashboard.tasks.catalog_import_task")
    assert task.status == "PENDING" and len(callbacks) == 1
    page = staff_client.get(reverse("data")).content.decode()
    assert f'id="import-{task.task_id}"' in page and 'hx-trigger="every 1s"' in page

    # What a worker does with the queued message, run in-process with its result stored as a worker would.
    conf = catalog_import_task.app.conf
    previous = conf.task_always_eager, catalog_import_task.store_eager_result
    conf.task_always_eager, catalog_import_task.store_eager_result = True, True
    try:
        callbacks[0]()
    finally:
        conf.task_always_eager, catalog_import_task.store_eager_result = previous

    task.refresh_from_db()
    assert task.status == "SUCCESS"
    assert json.loads(task.result)["added"]["feedback"] == 2
    assert Item.objects.filter(external_id__in=["1", "2"]).count() == 2
    progress = staff_client.get(reverse("data-import-progress", args=[task.task_id])).content.decode()
    assert "hx-trigger" not in progress and 'value="100"' in progress
    assert "2 bad rows skipped" in progress
    assert "unknown item id 404" in progress and "expected 4 columns, found 3" in progress
    assert list((tmp_path / "uploads").iterdir()) == []  # the upload is deleted after a success


def test_an_upload_that_is_not_movielens_is_refused(staff_client, settings, tmp_path):
    settings.UPLOAD_DIR = tmp_path / "uploads"
    upload = io.BytesIO(b"hello")
    upload.name = "notes.txt"
    response = staff_client.post(reverse("data-import"), {"files": upload}, follow=True)
    assert any("not a MovieLens file" in str(m) for m in get_messages(response.wsgi_request))
    assert not TaskResult.objects.exists()
    assert list((tmp_path / "uploads").iterdir()) == []
