"""/metrics after real traffic: the series config/metrics.py names, scraped and parsed as Prometheus would.

Every value is compared with a scrape taken before the traffic, because the series of one test
process keep counting across tests (single-process mode). The multiprocess tests start real
processes writing into one directory and scrape it once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from catalog.importers.synthetic import plan_catalog
from catalog.importers.synthetic_loader import synthetic_catalog_generate
from catalog.models import UserProfile
from config import gunicorn, metrics
from config.metrics_scrape import registry_build
from tests.recommender.conftest import build_planted_catalog
from tests.recommender.test_training import train_inline

REPO = Path(__file__).resolve().parent.parent

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client: Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("text/plain")
    return parse(response.content.decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture
def staff_client(db) -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_user("metrics-staff", is_staff=True))
    return client


@pytest.mark.django_db
def test_a_scrape_after_traffic_shows_each_named_series(staff_client, django_capture_on_commit_callbacks):
    before = scrape(staff_client)
    catalog = build_planted_catalog(users_per_cluster=15, items_per_cluster=30, ratings_per_user=10)
    version = train_inline()
    profile = catalog.profiles_by_cluster[0][0]
    item = catalog.items_by_cluster[0][0]
    user_client = Client()
    user_client.force_login(profile.user)

    first = user_client.get(f"/api/v1/users/{profile.external_id}/recommendations?k=5")
    second = user_client.get(f"/api/v1/users/{profile.external_id}/recommendations?k=5")
    related = user_client.get(f"/api/v1/items/{item.external_id}/related?k=5")
    newcomer = UserProfile.objects.create(
        user=get_user_model().objects.create_user("metrics-newcomer"), external_id="metrics-newcomer"
    )
    unknown = staff_client.get(f"/api/v1/users/{newcomer.external_id}/recommendations?k=5")
    with django_capture_on_commit_callbacks(execute=True):
        posted = user_client.post(
            "/api/v1/feedback",
            json.dumps({"user": profile.external_id, "item": item.external_id, "kind": "rating", "value": 4}),
            content_type="application/json",
        )
    after = scrape(staff_client)

    assert [first.status_code, second.status_code, related.status_code, unknown.status_code] == [200] * 4
    assert posted.status_code == 201, posted.content
    assert [first.json()["fallback"], second.json()["fallback"], unknown.json()["fallback"]] == [False, False, True]

    # Latency by surface: three homepage answers (two for the user, one for the newcomer), one related.
    assert delta(before, after, "recsys_serving_request_duration_seconds_count", surface="home") == 3
    assert delta(before, after, "recsys_serving_request_duration_seconds_count", surface="related") == 1
    assert delta(before, after, "recsys_serving_request_duration_seconds_sum", surface="home") > 0
    assert value(after, "recsys_serving_request_duration_seconds_bucket", surface="home", le="+Inf") == value(
        after, "recsys_serving_request_duration_seconds_count", surface="home"
    )
    # The homepage cache: the user's first request and the newcomer's miss, the second hits.
    assert delta(before, after, "recsys_serving_cache_misses_total", surface="home") == 2
    assert delta(before, after, "recsys_serving_cache_hits_total", surface="home") == 1
    # Related lists are precomputed after the activation commits, which a test transaction never does.
    assert delta(before, after, "recsys_serving_cache_misses_total", surface="related_precomputed") == 1
    assert delta(before, after, "recsys_serving_cache_misses_total", surface="related") == 1  # the result cache
    # Below the homepage cache, the stored pool: none in a test transaction (the newcomer has no vector).
    assert delta(before, after, "recsys_serving_cache_misses_total", surface="home_precomputed") == 1
    assert delta(before, after, "recsys_serving_fallbacks_total", surface="home", reason="unknown_user") == 1
    assert delta(before, after, "recsys_serving_fallbacks_total", surface="related", reason="unknown_user") == 0
    # Impressions of every homepage answer: the user's two lists and the newcomer's fallback.
    shown = len(first.json()["items"]) + len(second.json()["items"]) + len(unknown.json()["items"])
    assert delta(before, after, "recsys_impressions_total", surface="home") == shown
    assert delta(before, after, "recsys_feedback_total", kind="rating") == 1

    assert delta(before, after, "recsys_training_run_duration_seconds_count", outcome="ready") == 1
    assert delta(before, after, "recsys_training_run_duration_seconds_count", outcome="failed") == 0
    for phase in ("building_dataset", "training", "evaluating", "publishing"):
        assert delta(before, after, "recsys_training_phase_duration_seconds_count", phase=phase) >= 1, phase
    assert value(after, "recsys_active_model_version") == version.pk


@pytest.mark.django_db
def test_the_active_version_is_zero_without_one(staff_client):
    assert value(scrape(staff_client), "recsys_active_model_version") == 0


@pytest.mark.django_db
def test_an_import_counts_its_duration_and_rows_by_kind(staff_client):
    before = scrape(staff_client)
    summary = synthetic_catalog_generate(
        plan=plan_catalog(users=200, items=300, interactions=5000, seed=7, clusters=3), progress=False
    )
    after = scrape(staff_client)

    assert delta(before, after, "recsys_import_duration_seconds_count", kind="synthetic", outcome="ok") == 1
    assert summary.added["feedback"] > 0
    for table, count in summary.added.items():
        assert delta(before, after, "recsys_import_rows_total", kind="synthetic", table=table) == count, table


@pytest.mark.django_db
def test_a_failed_import_counts_as_failed(staff_client, tmp_path):
    from catalog.importers.base import CatalogImportError
    from catalog.importers.movielens import movielens_import

    before = scrape(staff_client)
    with pytest.raises(CatalogImportError):
        movielens_import(directory=tmp_path / "absent", progress=False)
    after = scrape(staff_client)

    assert delta(before, after, "recsys_import_duration_seconds_count", kind="movielens", outcome="failed") == 1
    assert delta(before, after, "recsys_import_duration_seconds_count", kind="movielens", outcome="ok") == 0


# --- Several processes, one scrape ---------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import os, sys
    from prometheus_client import Gauge
    from config import metrics

    metrics.cache_lookup("home", hit=True)
    metrics.cache_lookup("home", hit=False)
    metrics.training_phase_observe("training", float(sys.argv[1]))
    # A live gauge, the kind a dead process must not leave behind (config/gunicorn.py).
    Gauge("recsys_test_live", "A live gauge.", multiprocess_mode="livesum", registry=None).set(1)
    print(os.getpid())
    """
)


def _write_from_a_process(directory: Path, seconds: float) -> int:
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    completed = subprocess.run(
        [sys.executable, "-c", WRITER, str(seconds)],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return int(completed.stdout.strip())


@pytest.mark.django_db
def test_one_scrape_sums_what_two_processes_wrote(staff_client, tmp_path, monkeypatch):
    directory = tmp_path / "metrics"  # absent: the first process creates it
    pids = [_write_from_a_process(directory, 2.0), _write_from_a_process(directory, 3.0)]
    monkeypatch.setattr(metrics, "MULTIPROCESS_DIRECTORY", str(directory))

    samples = scrape(staff_client)

    assert value(samples, "recsys_serving_cache_hits_total", surface="home") == 2
    assert value(samples, "recsys_serving_cache_misses_total", surface="home") == 2
    assert value(samples, "recsys_serving_cache_hits_total", surface="related") == 0
    assert value(samples, "recsys_training_phase_duration_seconds_count", phase="training") == 2
    assert value(samples, "recsys_training_phase_duration_seconds_sum", phase="training") == 5.0
    assert value(samples, "recsys_active_model_version") == 0  # read from the database, not the files
    assert {path.name for path in directory.glob("counter_*.db")} == {
        f"counter_{metrics.process_identifier(pid)}.db" for pid in pids
    }


@pytest.mark.django_db
def test_a_dead_worker_leaves_its_totals_but_not_its_live_gauges(tmp_path, monkeypatch):
    from prometheus_client import generate_latest

    directory = tmp_path / "metrics"
    dead, _alive = _write_from_a_process(directory, 1.0), _write_from_a_process(directory, 1.0)
    monkeypatch.setattr(metrics, "MULTIPROCESS_DIRECTORY", str(directory))

    gunicorn.child_exit(server=None, worker=SimpleNamespace(pid=dead))

    samples = parse(generate_latest(registry_build(directory=str(directory))).decode())
    assert value(samples, "recsys_test_live") == 1  # the live process's gauge alone
    assert value(samples, "recsys_serving_cache_hits_total", surface="home") == 2
