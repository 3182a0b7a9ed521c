"""Real time without retraining: user fold-in, item and user cold start.

- **Fold-in** (seed 003, WALS): on each feedback event the user's vector is re-solved by
  regularised least squares against the *active* version's item vectors and stored in that
  version's user table, synchronously (a few milliseconds), so the next homepage request ranks
  with it. The next retrain publishes trained vectors and replaces it.
- **Item cold start**: a new (or re-featured) item gets ``[v, b, 1]`` from its side-feature
  embeddings, mapped by name onto the artifact's feature columns, and is inserted into the HNSW
  tables at once.
- **User cold start**: a user unknown to the model gets a vector from their side features.

Artifacts are loaded once per version per process (small LRU); the fold-in solver (Gram matrix
``V^T V``) is cached beside them and grows in place when cold-start items join.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from catalog.array_selectors import user_feedback_weight_rows
from catalog.models import Feedback, ItemFeature, UserFeature
from config.db_router import primary_reads
from recommender.ml.dataset import FeatureShapeError, implicit_event_weights, value_transform_codes
from recommender.ml.foldin import FoldIn
from recommender.ml.training import FittedModel
from recommender.vectors import store

from ..models import ModelVersion
from ..selectors import active_version

logger = logging.getLogger(__name__)

ARTIFACTS_KEPT = 3
NEGATIVE_CONFIDENCE = 1.0  # weight of a "not for me" target (low rating, dislike) in the fold-in


@dataclass
class _VersionState:
    """What this process keeps per version: the artifact and the fold-in solver."""

    model: FittedModel
    solver: FoldIn | None = None
    row_of_item: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


_states: OrderedDict[tuple[int, str], _VersionState] = OrderedDict()
_states_lock = threading.Lock()


def _state(version: ModelVersion) -> _VersionState:
    key = (version.pk, version.artifact_path)
    with _states_lock:
        state = _states.get(key)
        if state is not None:
            _states.move_to_end(key)
            return state
    started = time.perf_counter()
    state = _VersionState(model=FittedModel.load(version.artifact_path))
    with _states_lock:
        _states[key] = state
        while len(_states) > ARTIFACTS_KEPT:
            _states.popitem(last=False)
    logger.info("realtime.artifact_loaded version=%s ms=%.1f", version.pk, 1000 * (time.perf_counter() - started))
    return state


def fitted_model(version: ModelVersion) -> FittedModel:
    """The version's artifact, loaded once per process."""
    return _state(version).model


def _solver(version: ModelVersion, state: _VersionState, item_ids: set[int]) -> FoldIn:
    """The version's fold-in solver over its item vectors, extended by any cold-start items in ``item_ids``."""
    with state.lock:
        if state.solver is None:
            augmented = state.model.item_vectors_with_bias()
            state.solver = FoldIn.from_vectors_with_bias(augmented)
            state.row_of_item = {int(item_id): row for row, item_id in enumerate(state.model.item_ids.ids.tolist())}
        missing = sorted(item_ids - state.row_of_item.keys())
        if missing:
            ids, augmented = store.item_vectors_fetch(version_id=version.pk, item_ids=missing)
            if len(ids):
                # Grow V, b, G = V^T V and h = V^T b in place: the new items join "all items".
                solver = state.solver
                # Stored rows are [v, b, 1, MIPS coordinate] (see recommender.vectors).
                dimension = state.model.n_components
                new_vectors = augmented[:, :dimension].astype(np.float64)
                new_biases = augmented[:, dimension].astype(np.float64)
                base = len(solver.item_vectors)
                for offset, item_id in enumerate(ids.tolist()):
                    state.row_of_item[int(item_id)] = base + offset
                solver.item_vectors = np.vstack([solver.item_vectors, new_vectors])
                solver.item_biases = np.concatenate([solver.item_biases, new_biases])
                solver.gram = solver.gram + new_vectors.T @ new_vectors
                solver.bias_projection = solver.bias_projection + new_vectors.T @ new_biases
        return state.solver


def _feedback_targets(profile_id: int, positive_threshold: float) -> dict[int, tuple[float, float]]:
    """{item_id: (confidence, preference)} from the user's in-force feedback, as training weighs it.

    Mirrors `recommender.ml.dataset.build_interactions`: explicit ratings at or above the
    threshold and positive implicit kinds are positives (weights add up); a low rating or a
    negative kind vetoes the pair, which becomes a negative target (preference 0).
    """
    rows = user_feedback_weight_rows(profile_id=profile_id)
    positive: dict[int, float] = {}
    vetoed: set[int] = set()
    for item_id, value, kind_weight, is_explicit, max_value, transform in rows:
        if is_explicit:
            if value >= positive_threshold and kind_weight > 0:
                positive[item_id] = positive.get(item_id, 0.0) + kind_weight * value / (max_value or 5.0)
            else:
                vetoed.add(item_id)
        elif kind_weight > 0:
            # The kind's value transform (a play count → log or confidence), exactly as training applies it.
            weight = implicit_event_weights([kind_weight], [value], value_transform_codes([transform]))[0]
            positive[item_id] = positive.get(item_id, 0.0) + float(weight)
        elif kind_weight < 0:
            vetoed.add(item_id)
    targets = {item_id: (weight, 1.0) for item_id, weight in positive.items() if item_id not in vetoed}
    targets.update(dict.fromkeys(vetoed, (NEGATIVE_CONFIDENCE, 0.0)))
    return targets


def feedback_targets(*, profile_id: int, positive_threshold: float) -> dict[int, tuple[float, float]]:
    """{item_id: (confidence, preference)} of one user's in-force feedback, weighed as training weighs it."""
    return _feedback_targets(profile_id, positive_threshold)


def user_vector_fold_in(*, profile_id: int, version: ModelVersion | None = None) -> np.ndarray | None:
    """Re-solve and store one user's vector against the active version; returns it (None without a model).

    The returned vector is the stored one, (d + 3,) [u, 1, b, 0], ready for ANN and the scorer.
    A user with no usable feedback left falls back to their side features (or keeps no vector).
    """
    version = version or active_version()
    if version is None or not version.artifact_path:
        return None
    started = time.perf_counter()
    state = _state(version)
    targets = _feedback_targets(profile_id, float(version.config_snapshot.get("positive_threshold", 4.0)))
    if not targets:
        vector = user_vector_from_features(profile_id=profile_id, version=version)
        if vector is not None:
            vector = store.user_vector_store(version_id=version.pk, profile_id=profile_id, score_vector=vector)
        return vector
    solver = _solver(version, state, set(targets))
    known = [
        (state.row_of_item[item_id], confidence, preference)
        for item_id, (confidence, preference) in targets.items()
        if item_id in state.row_of_item
    ]
    rows = np.asarray([row for row, _, _ in known], dtype=np.int64)
    confidences = np.asarray([c for _, c, _ in known], dtype=np.float64)
    preferences = np.asarray([p for _, _, p in known], dtype=np.float64)
    vector = solver.user_vector_with_bias(rows, confidences, preferences)
    vector = store.user_vector_store(version_id=version.pk, profile_id=profile_id, score_vector=vector)
    logger.info(
        "realtime.fold_in profile=%s version=%s observations=%s ms=%.2f",
        profile_id,
        version.pk,
        len(known),
        1000 * (time.perf_counter() - started),
    )
    return vector


def _side_columns(names: list[str], n_identity: int) -> dict[str, int]:
    """{"type=value": side-feature number} from an artifact's feature names (identity columns skipped)."""
    return {name: index for index, name in enumerate(names[n_identity:])}


def user_vector_from_features(*, profile_id: int, version: ModelVersion) -> np.ndarray | None:
    """``[u, 1, b]`` from the user's side features, or None (no features known to the model)."""
    model = fitted_model(version)
    n_identity = len(model.user_ids) if model.user_identity else 0
    if model.user_embeddings.shape[0] <= n_identity:
        return None  # trained without user side features
    columns = _side_columns(model.user_feature_names, n_identity)
    links = UserFeature.objects.filter(profile_id=profile_id).values_list("feature__type", "feature__value", "weight")
    pairs = [(columns[f"{kind}={value}"], weight) for kind, value, weight in links if f"{kind}={value}" in columns]
    if not pairs:
        return None
    try:
        return model.user_vector_from_features([c for c, _ in pairs], [w for _, w in pairs])
    except FeatureShapeError as error:
        logger.warning("realtime.user_features_unusable profile=%s error=%s", profile_id, error)
        return None


def item_vector_cold_start(*, item_id: int, version: ModelVersion | None = None) -> bool:
    """Give an item a vector from its features in the active version (new item, or its features changed).

    A trained item keeps its identity column and only its features are re-read, which
    reproduces its trained vector when nothing changed. Returns whether a vector was stored.
    """
    version = version or active_version()
    if version is None or not version.artifact_path:
        return False
    model = fitted_model(version)
    n_identity = len(model.item_ids) if model.item_identity else 0
    columns = _side_columns(model.item_feature_names, n_identity)
    links = ItemFeature.objects.filter(item_id=item_id).values_list("feature__type", "feature__value", "weight")
    cols, weights = [], []
    for kind, value, weight in links:
        column = columns.get(f"{kind}={value}")
        if column is not None:
            cols.append(n_identity + column)
            weights.append(weight)
    row = model.item_ids.index_of([item_id], missing=-1)[0] if model.item_identity else -1
    if row >= 0:
        cols.append(int(row))
        weights.append(1.0)
    if not cols:
        logger.info("realtime.item_cold_start_skipped item=%s version=%s reason=no_known_features", item_id, version.pk)
        return False
    weights_array = np.asarray(weights, dtype=np.float64)
    weights_array /= weights_array.sum()  # L1 like build_feature_matrix, so many tags do not inflate the score
    index = np.asarray(cols, dtype=np.int64)
    embedding = (weights_array[:, None] * model.item_embeddings[index]).sum(axis=0).astype(np.float32)
    bias = np.float32((weights_array * model.item_biases[index]).sum())
    score_vector = np.concatenate([embedding, np.asarray([bias, 1.0], dtype=np.float32)])
    store.item_vector_store(version_id=version.pk, item_id=item_id, score_vector=score_vector, embedding=embedding)
    state = _state(version)
    with state.lock:
        if state.solver is not None and item_id in state.row_of_item and row < 0:
            # A cold-start item already folded into the solver changed: rebuild lazily next time.
            state.solver = None
    logger.info("realtime.item_cold_start item=%s version=%s features=%s", item_id, version.pk, len(cols))
    return True


@primary_reads  # the user's own newest feedback, and a write (config.db_router)
def user_vector_resolve(*, profile_id: int, version: ModelVersion) -> tuple[np.ndarray | None, str]:
    """The user's stored score vector (d + 3,) for serving and where it came from.

    Stored (trained or folded in) → fold-in from feedback the model has not seen → side features
    (stored, so the next request is a plain fetch) → ``(None, "unknown")``.
    """
    vector = store.user_vector_fetch(version_id=version.pk, profile_id=profile_id)
    if vector is not None:
        return vector, "stored"
    if Feedback.objects.filter(user_id=profile_id).exists():
        vector = user_vector_fold_in(profile_id=profile_id, version=version)
        if vector is not None:
            return vector, "folded_in"
    vector = user_vector_from_features(profile_id=profile_id, version=version)
    if vector is not None:
        return store.user_vector_store(version_id=version.pk, profile_id=profile_id, score_vector=vector), "features"
    return None, "unknown"
