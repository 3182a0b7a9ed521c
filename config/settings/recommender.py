"""Recommender settings that are not admin-editable (those live in the database)."""

from django.core.exceptions import ImproperlyConfigured

from config.env import env_float, env_int, env_str

from .base import BASE_DIR

# Where model artifacts (np.savez files) are written.
MODEL_ARTIFACT_DIR = env_str("MODEL_ARTIFACT_DIR", str(BASE_DIR / "var" / "models"))

# Where the Data page saves uploaded MovieLens files. The worker reads what the web process saved:
# in docker-compose both mount this folder.
UPLOAD_DIR = env_str("UPLOAD_DIR", str(BASE_DIR / "var" / "uploads"))

# A running training whose heartbeat is older than this is marked failed (its worker died).
TRAINING_STALE_SECONDS = env_int("TRAINING_STALE_SECONDS", 300)

# LightFM threads for training; 0 = every core (see recommender/services/training.py).
TRAINING_NUM_THREADS = env_int("TRAINING_NUM_THREADS", 0)

# Related lists precomputed after each activation (recommender/services/precompute.py): items in
# popularity order until this many seconds are spent; the rest are computed on request, which
# answers the same list (docs/serving.md, "Budgets and their fallbacks"). Measured on ml-100k
# (2 shared cores, load 2-5, five runs): 56-105 items/s, so its 1,682 items take 16-30 s. The
# default 300 s covers 17,000-31,000 items at those rates (the former fixed limit was 20,000),
# keeps one worker of the default queue busy for at most five minutes per activation, well inside
# the task's 1,800 s soft time limit, and bounds the table (2.8 KB a row) to ~85 MB. 0 turns
# precomputation off.
RELATED_PRECOMPUTE_SECONDS = env_float("RELATED_PRECOMPUTE_SECONDS", 300.0)

# Optional hard cap on the items precomputed (the former fixed limit, now unset by default): set
# it to bound the table's size on a fast worker; 0 turns precomputation off as before.
RELATED_PRECOMPUTE_MAX_ITEMS: int | None = (
    env_int("RELATED_PRECOMPUTE_MAX_ITEMS", 0) if env_str("RELATED_PRECOMPUTE_MAX_ITEMS") is not None else None
)

# Item rows (with features) each process keeps for the lists it renders
# (recommender/serving/results.py, ``ITEM_ROWS``), by the estimate ``item_row_bytes`` (5.9 KB for
# an ml-100k row with its 3.7 features). The allowance, 64 MiB per process, keeps a web process's
# serving copies under ~100 MiB together with the vector and catalogue copies below (5.2 and
# 24.5 MiB); it holds ~11,000 such rows, every item of ml-100k in 10 MB. Rows past it are read
# from the database on each request: the same rows, two more queries.
ITEM_ROWS_BUDGET_BYTES = env_int("ITEM_ROWS_BUDGET_BYTES", 64 * 1024 * 1024)

# The in-process exact vector index (recommender/vectors/exact.py) holds a version's vectors while
# they fit this many bytes: every query scans them all, so this bounds its time as well as its
# memory. The default is 20k items of the default 32 components (66 floats each, plus the id and
# flag); above it pgvector's HNSW indexes answer. Measured with `python -m bench.vector_index` on
# 2 cores: at 20k items the copy answers the personal top-200 3.8x and "because you liked" 3.2x
# faster than HNSW; at 50k (13 MiB) the personal query is 1.5x slower. The default sits below that
# crossover.
VECTOR_EXACT_INDEX_BUDGET_BYTES = env_int("VECTOR_EXACT_INDEX_BUDGET_BYTES", 20_000 * (66 * 4 + 9))

# The vector index above the exact budget (recommender/vectors/__init__.py index_for): "auto" is
# pgvector's HNSW; "deep_retrieval" fits a Deep Retrieval structure at publish time (seed 001,
# docs/deep_retrieval.md) and serves LightFM's space through it from an in-process copy held within
# VECTOR_DEEP_RETRIEVAL_COPY_BUDGET_BYTES, with pgvector for feature filters and over-budget
# versions. Off by default: on 100k synthetic items it rescored 3.8% of items per query for
# recall@100 0.987 on users like the training ones, but 0.847 on users unlike them, where HNSW
# kept 0.997 (bench/deep_retrieval.py); its build took 7 minutes there.
VECTOR_INDEX_KIND = env_str("VECTOR_INDEX_KIND", "auto")
if VECTOR_INDEX_KIND not in ("auto", "deep_retrieval"):
    raise ImproperlyConfigured(f"VECTOR_INDEX_KIND must be 'auto' or 'deep_retrieval', got {VECTOR_INDEX_KIND!r}.")
VECTOR_DEEP_RETRIEVAL_COPY_BUDGET_BYTES = env_int("VECTOR_DEEP_RETRIEVAL_COPY_BUDGET_BYTES", 1024 * 1024 * 1024)
VECTOR_DEEP_RETRIEVAL_BEAM = env_int("VECTOR_DEEP_RETRIEVAL_BEAM", 64)

# Loaded models each serving process keeps (recommender/memo.py VersionModels): the stacks' families
# (recommender/stacking.py) and the blends' item-item weights (recommender/blend.py), half each, by
# their byte counts, most recently used first; the newest is always kept. Formerly a fixed three
# versions each, which at a million items (EASE's 256 MiB serving copy, ALS and LightFM factors of
# 1M rows) is several GiB per process. 1 GiB keeps every recent ml-100k version.
SERVING_MODELS_BUDGET_BYTES = env_int("SERVING_MODELS_BUDGET_BYTES", 1024 * 1024 * 1024)

# The per-process catalogue copy the content-based and fresh sources scan (items and their feature
# postings, recommender/candidates/_catalogue.py); a larger catalogue is answered by SQL. 256 MiB
# holds the 1M-item synthetic catalogue (1M items, 2.5M postings: 153 MB, loaded in 4 s), where the
# SQL TF-IDF statement took 1.5 s a request (its df counts and posting scans grow with the catalogue)
# and the copy answers in ~50 ms. It was 25 MB (50k items, 500k postings) before issue 12.
CATALOGUE_COPY_BUDGET_BYTES = env_int("CATALOGUE_COPY_BUDGET_BYTES", 256 * 1024 * 1024)

# The blend (recommender/blend.py). Fewer validation users with a positive than this give weights
# that are mostly noise, so the model's score is served alone; and a blend is stored only when its
# validation precision beats the model's by this relative gain.
RECOMMENDER_BLEND_MIN_USERS = env_int("RECOMMENDER_BLEND_MIN_USERS", 200)
RECOMMENDER_BLEND_MIN_GAIN = env_float("RECOMMENDER_BLEND_MIN_GAIN", 0.01)

# Candidates per source and surface, e.g. {"home": {"personal_ann": 300, "popular": 50}}. A surface
# not listed uses recommender.candidates.DEFAULT_CANDIDATE_SIZES. A nested mapping, so it is set in
# a settings module rather than from the environment.
RECOMMENDER_CANDIDATE_SIZES: dict[str, dict[str, int]] = {}

# The popular source counts feedback of this window, each event decayed with this half-life.
RECOMMENDER_POPULAR_WINDOW_DAYS = env_float("RECOMMENDER_POPULAR_WINDOW_DAYS", 90.0)
RECOMMENDER_POPULAR_HALF_LIFE_DAYS = env_float("RECOMMENDER_POPULAR_HALF_LIFE_DAYS", 14.0)

# Candidates each model family nominates per user when the training run builds the learned ranker's
# validation pools (recommender/ml/stack.py); serving's family sources use RECOMMENDER_CANDIDATE_SIZES.
# 50 each gave the same ml-100k test precision as 100 (0.308) with half the ranker's rows.
RECOMMENDER_STACK_POOL_SIZES = {"lightfm": 50, "als": 50, "ease": 50}
# Time budget of each training run's hyperparameter search (each family's grid, tried in order on
# the validation split; the first entry is always fitted). recommender/ml/stack.py.
# 5 s: on ml-100k the first fits plus a few tries each (about 3x a LightFM fit for the whole run,
# bench.training); grids are ordered by what won, so a cut search keeps the likeliest entries.
TRAINING_SEARCH_SECONDS = env_float("TRAINING_SEARCH_SECONDS", 5.0)
# Time budget of the learned ranker's LambdaRank fit at each training run (boosting stops at the
# tree that crosses it; the trees so far serve). recommender/ml/ranker.py.
TRAINING_RANKER_SECONDS = env_float("TRAINING_RANKER_SECONDS", 5.0)
# Scores one training run's evaluation may compute (evaluated users × items): every test user while
# it fits, else a uniform sample of budget / items users (recommender.ml.evaluation.users_within_budget).
# 200M cells is every user of ml-100k (1.6M) and lastfm-2k (33M), 2,000 at 100k items and 200 at a
# million. Each whole-catalogue pass at 500M took ~16-44 s at 1M items on 2 busy cores, and a run
# makes about a dozen (every scorer, the search, the ranker's pools).
TRAINING_EVALUATION_BUDGET_CELLS = env_int("TRAINING_EVALUATION_BUDGET_CELLS", 200_000_000)
# Wall-time budget of one training run, request to ready. Only measured fallbacks use it: the
# stack's families serve as fitted on the training part when their refit on all the data is
# predicted past it (recommender/services/training.py). 540 s leaves a minute of a 10-minute
# request -> active for queueing, activation and the precompute's start.
TRAINING_RUN_SECONDS = env_float("TRAINING_RUN_SECONDS", 540.0)
# Time budget of each family fit inside a training run's stack (recommender/services/scorer.py):
# EASE's fit_seconds (the exact head is what this machine's measured flop rate inverts in half of it,
# the tail columns are solved most popular first in the rest; fitted three times a run) and the
# validation search's LightFM fit (the served LightFM model has TRAINING_LIGHTFM_FIT_SECONDS).
# Catalogues whose fits are cheap (ml-100k: EASE 0.3 s, LightFM 3 s) never reach it.
TRAINING_FAMILY_FIT_SECONDS = env_float("TRAINING_FAMILY_FIT_SECONDS", 60.0)
# Time budget of the served LightFM model's epochs (the protocol fit; the refit on all the data gets
# the held-out share of it). An epoch runs only while the one before says it will end within the
# budget, so a run never overshoots by more than an epoch's jitter; the epochs actually run are kept
# on the version. ml-100k's 30 epochs take ~3 s and lastfm's ~20 s: only catalogues of hundreds of
# thousands of items reach it (at 1M items / 5M interactions an epoch took ~40 s on 2 cores).
TRAINING_LIGHTFM_FIT_SECONDS = env_float("TRAINING_LIGHTFM_FIT_SECONDS", 180.0)
# Memory an HNSW index build may ask PostgreSQL for (maintenance_work_mem, per build session): the
# graph's estimate when it fits, capped here. Unset: a quarter of this machine's memory
# (recommender/vectors/build.py). Set it when the database runs on another machine.
VECTOR_INDEX_BUILD_MEMORY_BYTES = env_int("VECTOR_INDEX_BUILD_MEMORY_BYTES", 0) or None

# pgvector HNSW (recommender/vectors/store.py builds, recommender/vectors/pgvector.py queries), from
# the recall/latency curve of `python -m bench.ann_curve` (docs/operations.md "ANN settings at a
# million items"): the point with recall@10 >= 0.98 against exact top-10 for user -> items and
# item -> items. m and ef_construction apply to the next build.
# Measured at 100k items (the 1M run did not finish in time): m 16 / ef_construction 64 reached
# user -> items recall@10 0.965 at ef_search 1000; m 32 / 128 reached 1.000 (0.983 at ef_search 400)
# and 0.94 instead of 0.63 for a 2.9% category filter, at the cost of a build ~3x longer.
VECTOR_HNSW_M = env_int("VECTOR_HNSW_M", 32)
VECTOR_HNSW_EF_CONSTRUCTION = env_int("VECTOR_HNSW_EF_CONSTRUCTION", 128)
# A version's ANN indexes (three: user -> items, cosine and inner product on embeddings) are HNSW
# while their builds are predicted to fit this many seconds, else IVFFlat (recommender/vectors/build.py).
# The prediction times a pilot HNSW build over VECTOR_INDEX_PILOT_ITEMS sampled rows of the version
# (n·log n scaling); a catalogue no larger than the sample builds HNSW directly. 240 s: what a
# 10-minute request-to-active leaves the indexes at a million items after the fits (issue 12).
VECTOR_INDEX_BUILD_SECONDS = env_float("VECTOR_INDEX_BUILD_SECONDS", 240.0)
VECTOR_INDEX_PILOT_ITEMS = env_int("VECTOR_INDEX_PILOT_ITEMS", 20_000)
# IVFFlat: rows per list (lists = items / this, pgvector's advice up to 1M rows) and the lists each
# query probes, so a query reads about probes x rows-per-list rows at any size. 40 probes of 1,000
# lists gave user -> items recall@10 0.985 at 1M items (0.934 at 20, 0.998 at 80; docs/operations.md).
# Iterative scans (filters) go on up to VECTOR_IVFFLAT_MAX_PROBES lists; a short answer is re-asked exactly.
VECTOR_IVFFLAT_ROWS_PER_LIST = env_int("VECTOR_IVFFLAT_ROWS_PER_LIST", 1000)
VECTOR_IVFFLAT_PROBES = env_int("VECTOR_IVFFLAT_PROBES", 40)
VECTOR_IVFFLAT_MAX_PROBES = env_int("VECTOR_IVFFLAT_MAX_PROBES", 160)
# Candidate list of each HNSW scan (pgvector's maximum is 1000); set once per serving connection.
VECTOR_HNSW_EF_SEARCH = env_int("VECTOR_HNSW_EF_SEARCH", 1000)
# Each ANN query reads this many times k rows from the index (iterative scans go on past ef_search
# to fill them), re-sorts them by exact distance and keeps k: recall rises with it.
VECTOR_HNSW_OVERFETCH = env_float("VECTOR_HNSW_OVERFETCH", 2.0)
# Tuples an iterative scan (hnsw.iterative_scan = relaxed_order) may visit before it stops and a
# short filtered answer is re-asked exactly (so filtered queries still return k rows).
VECTOR_HNSW_MAX_SCAN_TUPLES = env_int("VECTOR_HNSW_MAX_SCAN_TUPLES", 50_000)

# Homepage impressions are written behind the response (recommender/serving/impressions.py): a
# per-process buffer flushed by a thread every this many seconds, in one insert. "Demote recently
# shown" sees them at most this late.
IMPRESSIONS_FLUSH_SECONDS = env_float("IMPRESSIONS_FLUSH_SECONDS", 0.2)

# The buffer's bound while the database refuses writes: the oldest rows past it are dropped
# (telemetry, logged). 200k rows hold about 20k requests, ~40 MB.
IMPRESSIONS_BUFFER_ROWS = env_int("IMPRESSIONS_BUFFER_ROWS", 200_000)

# Homepage pools precomputed after each activation (recommender/services/home_precompute.py): users
# in order of their latest feedback until this many seconds are spent; the rest are served live,
# with the same list. A row is refreshed after that user's feedback. 0 turns it off.
HOME_PRECOMPUTE_SECONDS = env_float("HOME_PRECOMPUTE_SECONDS", 300.0)
