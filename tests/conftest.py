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
