"""Recommender settings that are not admin-editable (those live in the database)."""
from config.env import env_str

# Where model artifacts (np.savez files) are written.
from .base import BASE_DIR

MODEL_ARTIFACT_DIR = env_str("MODEL_ARTIFACT_DIR", str(BASE_DIR / "var" / "models"))
MOVIELENS_DIR = env_str("MOVIELENS_DIR")

from config.env import env_int  # noqa: E402

# A running training whose heartbeat is older than this is marked failed (its worker died).
TRAINING_STALE_SECONDS = env_int("TRAINING_STALE_SECONDS", 300)

# LightFM threads for training; 0 = every core (see recommender/services/training.py).
TRAINING_NUM_THREADS = env_int("TRAINING_NUM_THREADS", 0)

# Related lists precomputed after each activation: the most popular active items only (the rest
# are computed live on request). Each item costs one pipeline run, so this bounds the task.
RELATED_PRECOMPUTE_MAX_ITEMS = env_int("RELATED_PRECOMPUTE_MAX_ITEMS", 20_000)

# The in-process exact vector index (recommender/vectors/exact.py) holds a version's vectors while
# they fit this many bytes: every query scans them all, so this bounds its time as well as its
# memory. The default is the former fixed limit, 20k items of the default 32 components (66 floats
# each, plus the id and flag); above it pgvector's HNSW indexes answer.
VECTOR_EXACT_INDEX_BUDGET_BYTES = env_int("VECTOR_EXACT_INDEX_BUDGET_BYTES", 20_000 * (66 * 4 + 9))

# The per-process catalogue copy the content-based and fresh sources scan (items and their feature
# postings, recommender/candidates/_catalogue.py). The default holds the former fixed limits,
# 50k items and 500k postings; a larger catalogue is answered by SQL.
CATALOGUE_COPY_BUDGET_BYTES = env_int("CATALOGUE_COPY_BUDGET_BYTES", 50_000 * 33 + 500_000 * 48)
