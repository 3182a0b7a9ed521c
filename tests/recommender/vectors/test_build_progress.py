"""Index-build progress (recommender/vectors/build_progress.py) and where it goes: the version row."""

from __future__ import annotations

import numpy as np
import pytest

from recommender.models import ModelVersion, VersionStatus
from recommender.services.training import _Progress
from recommender.vectors import store
from recommender.vectors.build_progress import BuildStep, build_progress_read, progress_message


def test_the_message_names_the_index_and_its_share_of_the_items():
    step = BuildStep(number=2, total=3, index="rec_item_vectors_v7_cos_hnsw", n_items=1_000_000)

    assert progress_message(step, None, None, None) == "HNSW index 2 of 3 (rec_item_vectors_v7_cos_hnsw): starting"
    assert progress_message(step, "loading tuples", 400_000, 0) == (
        "HNSW index 2 of 3 (rec_item_vectors_v7_cos_hnsw): loading tuples, 400,000 of 1,000,000 items (40%)"
    )
    # pgvector may count past the rows it was told about (parallel workers): never above 100%.
    assert progress_message(step, "loading tuples", 1_200_000, 1_000_000).endswith(
        "1,000,000 of 1,000,000 items (100%)"
    )
    assert (
        progress_message(step, "initializing", 0, 0) == "HNSW index 2 of 3 (rec_item_vectors_v7_cos_hnsw): initializing"
    )


@pytest.mark.django_db
def test_no_build_running_reads_as_none():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    assert build_progress_read(pid) == (None, None, None)


@pytest.mark.django_db
def test_publishing_reports_each_step_and_each_index_build_to_the_version_row():
    version = ModelVersion.objects.create(status=VersionStatus.QUEUED)
    progress = _Progress(version)
    progress.enter(VersionStatus.PUBLISHING)
    heard: list[str] = []

    def report(message: str) -> None:
        heard.append(message)
        progress.detail(message)

    rng = np.random.default_rng(0)
    n_items, dimension = 300, 8
    embeddings = rng.standard_normal((n_items, dimension)).astype(np.float32)
    store.vectors_publish(
        version_id=version.pk,
        item_ids=np.arange(1, n_items + 1),
        item_score_vectors=np.hstack([embeddings, np.zeros((n_items, 1)), np.ones((n_items, 1))]).astype(np.float32),
        item_embeddings=embeddings,
        user_ids=np.arange(1, 4),
        user_score_vectors=rng.standard_normal((3, dimension + 2)).astype(np.float32),
        progress=report,
    )

    tables = store.VersionTables(version.pk)
    assert heard[:2] == ["copying 300 item vectors", "copying 3 user vectors"]
    starts = [message for message in heard if message.endswith(": starting")]
    assert starts == [
        f"HNSW index 1 of 3 ({tables.item_ip_index}): starting",
        f"HNSW index 2 of 3 ({tables.item_cosine_index}): starting",
        f"HNSW index 3 of 3 ({tables.item_embedding_ip_index}): starting",
    ]
    version.refresh_from_db()
    # Every new step reached the row (not throttled away); the last one is the third build.
    assert version.phase_detail.startswith(f"HNSW index 3 of 3 ({tables.item_embedding_ip_index})")
    assert version.heartbeat_at is not None
    store.vectors_drop(version_id=version.pk)
