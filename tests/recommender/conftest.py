"""Planted catalogues and a real Celery worker for recommender tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from catalog.models import Feature, Feedback, Item, ItemFeature, UserFeature, UserProfile
from recommender.models import ModelVersion, TrainingConfig
from recommender.vectors import store
from tests.recommender.test_training import train_inline

PROJECT_DIR = Path(__file__).resolve().parents[2]


@dataclass
class PlantedCatalog:
    """Users of cluster c rate items of cluster c highly; items carry feature genre=cluster-c."""

    clusters: int
    items_by_cluster: dict[int, list[Item]]
    profiles_by_cluster: dict[int, list[UserProfile]]

    def cluster_of_item(self, item_id: int) -> int:
        for cluster, items in self.items_by_cluster.items():
            if any(item.pk == item_id for item in items):
                return cluster
        raise KeyError(item_id)


def build_planted_catalog(
    *,
    clusters: int = 2,
    users_per_cluster: int = 25,
    items_per_cluster: int = 30,
    ratings_per_user: int = 12,
    seed: int = 0,
) -> PlantedCatalog:
    from tests.factories import feedback_kind_for

    rng = np.random.default_rng(seed)
    # Transactional tests flush the rows the migrations seeded; put the rating kind back if needed.
    rating = feedback_kind_for("rating")
    now = timezone.now()
    items_by_cluster, profiles_by_cluster = {}, {}
    user_model = get_user_model()
    for cluster in range(clusters):
        genre = Feature.objects.create(subject="item", type="genre", value=f"cluster-{cluster}")
        segment = Feature.objects.create(subject="user", type="segment", value=str(cluster))
        items = Item.objects.bulk_create(
            [
                Item(
                    external_id=f"p{cluster}-{i}",
                    title=f"Cluster {cluster} item {i}",
                    provider=f"studio-{i % 3}",
                    published_at=now - timezone.timedelta(days=int(rng.integers(1, 900))),
                )
                for i in range(items_per_cluster)
            ]
        )
        ItemFeature.objects.bulk_create([ItemFeature(item=item, feature=genre) for item in items])
        users = user_model.objects.bulk_create(
            [user_model(username=f"planted-{cluster}-{u}") for u in range(users_per_cluster)]
        )
        profiles = UserProfile.objects.bulk_create(
            [UserProfile(user=user, external_id=f"pu{cluster}-{u}") for u, user in enumerate(users)]
        )
        UserFeature.objects.bulk_create([UserFeature(profile=profile, feature=segment) for profile in profiles])
        items_by_cluster[cluster], profiles_by_cluster[cluster] = items, profiles
    feedback = []
    for cluster, profiles in profiles_by_cluster.items():
        own = items_by_cluster[cluster]
        # Zipf-like popularity inside the cluster so the model has something to learn beyond the cluster.
        popularity = 1.0 / np.arange(1, len(own) + 1)
        popularity /= popularity.sum()
        for profile in profiles:
            chosen = rng.choice(len(own), size=ratings_per_user, replace=False, p=popularity)
            feedback += [
                Feedback(
                    user=profile,
                    item=own[i],
                    kind=rating,
                    value=float(rng.integers(4, 6)),
                    created_at=now,
                    is_current=True,
                )
                for i in chosen
            ]
    Feedback.objects.bulk_create(feedback)
    return PlantedCatalog(clusters, items_by_cluster, profiles_by_cluster)


@pytest.fixture
def planted_catalog(db) -> PlantedCatalog:
    return build_planted_catalog()


@dataclass
class Trained:
    """A planted catalogue with a trained, active model (shared by the candidate, ranking and ANN tests)."""

    catalog: PlantedCatalog
    version: ModelVersion

    def own_item_ids(self, cluster: int) -> set[int]:
        return {item.pk for item in self.catalog.items_by_cluster[cluster]}

    def user_vector(self, profile_id: int):
        return store.user_vector_fetch(version_id=self.version.pk, profile_id=profile_id)


@pytest.fixture
def trained(db) -> Trained:
    catalog = build_planted_catalog(users_per_cluster=15, items_per_cluster=30, ratings_per_user=10)
    return Trained(catalog=catalog, version=train_inline())


def lightfm_only_config() -> TrainingConfig:
    """A configuration that fits LightFM alone: its scorer is the model's score (or the blend)."""
    return TrainingConfig.objects.create(name="lightfm only", families="lightfm")


@pytest.fixture
def trained_lightfm(db) -> Trained:
    """As `trained`, with a LightFM-only version (no stack), for tests of the model score itself."""
    catalog = build_planted_catalog(users_per_cluster=15, items_per_cluster=30, ratings_per_user=10)
    return Trained(catalog=catalog, version=train_inline(config=lightfm_only_config()))


def _test_database_url() -> str:
    settings = connection.settings_dict
    host = settings["HOST"]
    if host.startswith("/"):
        return f"postgresql://{settings['USER']}@/{settings['NAME']}?host={host}"
    password = f":{settings['PASSWORD']}" if settings["PASSWORD"] else ""
    port = f":{settings['PORT']}" if settings["PORT"] else ""
    return f"postgresql://{settings['USER']}{password}@{host}{port}/{settings['NAME']}"


class WorkerProcess:
    """A real `celery worker` process on the test database (broker included)."""

    def __init__(self, log_path: Path):
        env = dict(os.environ)
        env.pop("CELERY_BROKER_URL", None)  # the broker follows DATABASE_URL: the test database
        env.update(DATABASE_URL=_test_database_url(), CELERY_TASK_ALWAYS_EAGER="0", PYTHONUNBUFFERED="1")
        self.log_path = log_path
        self.log = open(log_path, "wb")  # noqa: SIM115  (the worker's stdout until stop() closes it)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-Q",
                "training,default",
                "--pool",
                "solo",
                "--concurrency",
                "1",
                "-l",
                "info",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=PROJECT_DIR,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        self.log.flush()
        state = "running" if self.process.poll() is None else f"exited {self.process.returncode}"
        return f"[worker {state}]\n" + self.log_path.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


def _point_broker_at(url: str) -> str:
    """Make this process publish to ``url``; the settings computed the broker before the test DB existed."""
    from kombu.transport.sqlalchemy import Channel

    from config.celery import app

    previous = app.conf.broker_url
    app.conf.broker_url = url
    app._pool = None  # drop connections and producers built for the previous broker
    app.amqp._producer_pool = None
    # kombu caches one SQLAlchemy engine per broker database for the whole process; its pooled
    # session on the test database would otherwise keep that database from being dropped.
    for engine, _ in Channel._engines.values():
        engine.dispose()
    Channel._engines.clear()
    return previous


@pytest.fixture
def celery_worker_process(transactional_db, tmp_path):
    url = _test_database_url()
    previous = _point_broker_at("sqla+postgresql+psycopg://" + url.split("://", 1)[1])
    worker = WorkerProcess(tmp_path / "worker.log")
    yield worker
    worker.stop()
    _point_broker_at(previous)


def wait_for(predicate, *, timeout: float, interval: float = 0.25, message: str = "", on_timeout=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    details = f"\n{on_timeout()[-4000:]}" if on_timeout else ""
    raise AssertionError(f"timed out after {timeout}s: {message}{details}")
