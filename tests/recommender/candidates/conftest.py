"""Fixtures of the candidate-source tests (their trained catalogue, `trained`, is in tests/recommender/conftest.py)."""

from __future__ import annotations

import pytest
from django.utils import timezone


@pytest.fixture
def now():
    return timezone.now()
