"""Concurrent writers, small: clients post ratings through a real gunicorn; none is lost or doubled.

The same run as `bench/load_feedback.py` (which reports the figures at 50 clients × 30 s), on
the test database with fewer clients and seconds. Half of the clients re-send recent requests
of any client with the same idempotency key, often while the original is still in flight.
"""

from __future__ import annotations

import pytest

from bench.load_feedback import feedback_load
from tests.recommender.conftest import _test_database_url

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_every_acknowledged_rating_is_stored_exactly_once(tmp_path):
    result = feedback_load(
        database_url=_test_database_url(),
        log_dir=tmp_path,
        clients=12,
        seconds=6,
        items=30,
        workers=2,
        threads=4,
        resend=0.4,
    )

    assert result["problems"] == []
    summary, figures = result["summary"], result["figures"]
    assert summary["5xx"] == 0 and summary["transport_errors"] == 0
    assert summary["2xx"] == summary["requests"] > 50
    assert figures["re-sent requests"] > 0
    assert figures["keys answered more than once"] > 0  # idempotency was really exercised
    assert figures["rows stored"] == figures["keys acknowledged"]
