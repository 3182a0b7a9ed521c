"""Shared fixtures. Tests run on the real (embedded or DATABASE_URL) PostgreSQL with pgvector."""

from pathlib import Path

import pytest

SHARED_DIR = Path(__file__).resolve().parent.parent.parent / "shared"
MOVIELENS_100K = SHARED_DIR / "datasets" / "ml-100k"


@pytest.fixture
def movielens_100k_dir() -> Path:
    import os

    directory = Path(os.environ.get("MOVIELENS_DIR") or MOVIELENS_100K)
    if not (directory / "u.data").exists():
        pytest.skip(f"MovieLens 100k not found at {directory} (set MOVIELENS_DIR)")
    return directory


@pytest.fixture(scope="session", autouse=True)
def _impression_writer_stopped_at_the_end(django_db_setup):
    """The impression writer's thread holds a connection while it has work: end it before the
    test database is dropped (``DROP DATABASE`` refuses while any session uses it). Set up after
    ``django_db_setup``, so torn down before it."""
    yield
    from recommender.serving.impressions import WRITER

    WRITER.stop()


@pytest.fixture(autouse=True)
def _migration_seeded_rows(request):
    """Put back the rows the migrations seed (feedback kinds, the default training config).

    Transactional tests (``transaction=True``, ``live_server``) end by flushing every table, and
    ``serialized_rollback`` does not reliably restore them under pytest-django, so a later
    transactional test would start without them. Seeding is idempotent. At the end, the
    impressions still queued behind responses are written (`recommender.serving.impressions`).
    """
    marker = request.node.get_closest_marker("django_db")
    transactional = (marker is not None and marker.kwargs.get("transaction")) or any(
        name in request.fixturenames for name in ("transactional_db", "live_server")
    )
    if not transactional:
        yield
        return
    request.getfixturevalue("transactional_db")
    from recommender.selectors import default_training_config
    from recommender.serving.impressions import WRITER
    from tests.factories import feedback_kinds_ensure

    feedback_kinds_ensure()
    default_training_config()
    yield
    # Before the tables are flushed: impressions queued by this test's requests are written (or
    # skipped, their rows gone) now, never into the next test's tables.
    WRITER.stop()
