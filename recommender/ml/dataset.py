"""From plain arrays to the matrices LightFM trains on.

Nothing here knows about Django: callers (the catalogue selectors) hand over numpy arrays of
ids, indices, weights and timestamps, and get back scipy.sparse matrices plus the maps needed to
go from a matrix row back to an external id. See docs/ml.md for the weighting rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

SECONDS_PER_DAY = 86_400.0

# How an implicit event's value (a count: plays, purchases) scales its kind weight; the names are
# the catalogue's FeedbackKind.value_transform choices. Codes index this tuple.
VALUE_TRANSFORMS = ("none", "log", "confidence")
# The confidence transform of Hu, Koren & Volinsky (2008), c = 1 + α·log(1 + r/ε), scaled by the
# kind weight. α = ε = 1 keep LightFM's sample weights within ~1..15 for counts up to 10⁶ (a
# weight of 40x, their ALS value, makes WARP's per-sample steps too large); with these values
# "confidence" is "log" plus a floor of one kind weight for having interacted at all.
CONFIDENCE_ALPHA = 1.0
CONFIDENCE_EPSILON = 1.0


class UnknownIdError(KeyError):
    """An id passed to :meth:`IdMap.index_of` is not in the map."""


class FeatureShapeError(ValueError):
    """Feature or interaction arrays disagree in length or exceed the declared shape."""


class ValueTransformError(ValueError):
    """A value transform is unknown, or the values it transforms are not non-negative counts."""


def value_transform_codes(names) -> np.ndarray:
    """Codes (indices into :data:`VALUE_TRANSFORMS`) of transform names.

    Parameters
    ----------
    names : sequence of str, shape (t,)

    Returns
    -------
    np.ndarray of int8, shape (t,)
    """
    unknown = [name for name in names if name not in VALUE_TRANSFORMS]
    if unknown:
        raise ValueTransformError(f"unknown value transform(s) {unknown}; known: {', '.join(VALUE_TRANSFORMS)}.")
    return np.asarray([VALUE_TRANSFORMS.index(name) for name in names], dtype=np.int8)


def implicit_event_weights(
    kind_weight,
    value,
    value_transform,
    *,
    value_transform_names=VALUE_TRANSFORMS,
    confidence_alpha: float = CONFIDENCE_ALPHA,
    confidence_epsilon: float = CONFIDENCE_EPSILON,
) -> np.ndarray:
    """Per-event training weight of implicit events: the kind weight scaled by the transformed value.

    Parameters
    ----------
    kind_weight, value : array_like of float, shape (m,)
    value_transform : array_like of int, shape (m,)
        Per event, an index into ``value_transform_names``.
    value_transform_names : sequence of str
        Names from :data:`VALUE_TRANSFORMS`, in the caller's code order (the catalogue's choices).
    confidence_alpha, confidence_epsilon : float
        α and ε of the ``confidence`` transform; both positive.

    Returns
    -------
    np.ndarray of float64, shape (m,)
        ``none``: ``kind_weight``; ``log``: ``kind_weight * log1p(value)``; ``confidence``:
        ``kind_weight * (1 + alpha * log1p(value / epsilon))``.

    Raises
    ------
    ValueTransformError
        For an unknown name or code, or a transformed value that is negative or not finite.
    """
    kind_weight = np.asarray(kind_weight, dtype=np.float64)
    value = np.asarray(value, dtype=np.float64)
    codes = np.asarray(value_transform, dtype=np.int64)
    names = list(value_transform_names)
    if len(codes) and (codes.min() < 0 or codes.max() >= len(names)):
        raise ValueTransformError(f"value transform codes must lie in [0, {len(names)}) (one per name).")
    parameters = np.asarray([confidence_alpha, confidence_epsilon], dtype=np.float64)
    if not (np.isfinite(parameters).all() and (parameters > 0).all()):
        raise ValueTransformError("confidence_alpha and confidence_epsilon must be positive and finite.")
    canonical = value_transform_codes(names)[codes] if len(names) else codes
    is_log = canonical == VALUE_TRANSFORMS.index("log")
    is_confidence = canonical == VALUE_TRANSFORMS.index("confidence")
    counted = is_log | is_confidence
    bad = counted & ~(np.isfinite(value) & (value >= 0))
    if bad.any():
        examples = value[bad][:3].tolist()
        raise ValueTransformError(
            f"{int(bad.sum())} transformed value(s) are not non-negative counts, e.g. {examples}: "
            "a kind with a value transform needs min_value >= 0 (see FeedbackKind.clean)."
        )
    scale = np.ones(len(value), dtype=np.float64)
    scale[is_log] = np.log1p(value[is_log])
    scale[is_confidence] = 1.0 + confidence_alpha * np.log1p(value[is_confidence] / confidence_epsilon)
    return kind_weight * scale


class IdMap:
    """A bijection between external ids and contiguous indices ``0 .. n-1``.

    Parameters
    ----------
    ids : array_like, shape (n,)
        Distinct external ids, in index order. Integers or strings; strings are stored as a
        fixed-width unicode array so the map can be saved without pickles.
    """

    def __init__(self, ids) -> None:
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise FeatureShapeError(f"ids must be one-dimensional, got shape {ids.shape}.")
        if ids.dtype == object:
            ids = ids.astype(str)
        if len(np.unique(ids)) != len(ids):
            raise ValueError("ids contain duplicates; build the map with IdMap.from_ids(ids) to deduplicate.")
        self._ids = ids
        # A sorted copy lets index_of use searchsorted: vectorised, and works for str and int ids.
        self._order = np.argsort(ids, kind="stable")
        self._sorted = ids[self._order]

    @classmethod
    def from_ids(cls, ids) -> IdMap:
        """Build a map from ids that may repeat; indices follow first appearance."""
        ids = np.asarray(ids)
        if ids.dtype == object:
            ids = ids.astype(str)
        _, first = np.unique(ids, return_index=True)
        return cls(ids[np.sort(first)])

    @property
    def ids(self) -> np.ndarray:
        """External ids in index order, shape (n,)."""
        return self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, external_id) -> bool:
        return bool(self.index_of([external_id], missing=-1)[0] >= 0)

    def index_of(self, ids, *, missing: int | None = None) -> np.ndarray:
        """Indices of ``ids``.

        Parameters
        ----------
        ids : array_like, shape (m,)
        missing : int or None
            When None (default) an unknown id raises :class:`UnknownIdError`; otherwise unknown
            ids get this value (typically -1) so callers can filter them.

        Returns
        -------
        np.ndarray of int64, shape (m,)
        """
        query = np.asarray(ids)
        if query.dtype == object:
            query = query.astype(str)
        if len(self._ids) == 0:
            found = np.zeros(query.shape, dtype=bool)
            position = np.zeros(query.shape, dtype=np.int64)
        else:
            position = np.searchsorted(self._sorted, query)
            position = np.minimum(position, len(self._sorted) - 1)
            found = self._sorted[position] == query
        result = np.where(found, self._order[position] if len(self._ids) else 0, -1).astype(np.int64)
        if not found.all():
            if missing is None:
                unknown = query[~found][:5].tolist()
                raise UnknownIdError(
                    f"{int((~found).sum())} unknown id(s), e.g. {unknown}; "
                    "pass missing=-1 to flag them instead of raising."
                )
            result[~found] = missing
        return result

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """Plain arrays for ``np.savez``; inverse of :meth:`from_arrays`."""
        return {f"{prefix}_ids": self._ids}

    @classmethod
    def from_arrays(cls, arrays, prefix: str) -> IdMap:
        return cls(arrays[f"{prefix}_ids"])


def build_feature_matrix(
    n_entities: int,
    entity_index,
    feature_index,
    weights,
    n_features: int,
    *,
    identity: bool = True,
    normalize: bool = True,
) -> sp.csr_matrix:
    """Entity-by-feature matrix in the layout LightFM expects.

    Parameters
    ----------
    n_entities : int
    entity_index, feature_index : array_like of int, shape (m,)
        One row per (entity, side feature) link; repeated links sum.
    weights : array_like of float, shape (m,) or None
        Link weights; None means 1.
    n_features : int
        Number of side-feature columns.
    identity : bool
        Prepend one indicator column per entity, so each entity also learns its own embedding
        (columns ``0 .. n_entities-1``); side feature ``f`` is then column ``n_entities + f``.
    normalize : bool
        Scale each row to sum to 1 (L1). LightFM sums feature embeddings, so without this an item
        with many tags gets a larger norm, hence larger scores, just for being well described.

    Returns
    -------
    scipy.sparse.csr_matrix of float32, shape (n_entities, n_entities * identity + n_features)
    """
    entity_index = np.asarray(entity_index, dtype=np.int64)
    feature_index = np.asarray(feature_index, dtype=np.int64)
    weights = np.ones(len(entity_index), np.float32) if weights is None else np.asarray(weights, np.float32)
    if not (len(entity_index) == len(feature_index) == len(weights)):
        raise FeatureShapeError(
            f"entity_index ({len(entity_index)}), feature_index ({len(feature_index)}) and weights "
            f"({len(weights)}) must have the same length: one entry per link."
        )
    if len(entity_index) and (entity_index.min() < 0 or entity_index.max() >= n_entities):
        raise FeatureShapeError(f"entity_index must lie in [0, {n_entities}); map ids with IdMap.index_of first.")
    if len(feature_index) and (feature_index.min() < 0 or feature_index.max() >= n_features):
        raise FeatureShapeError(f"feature_index must lie in [0, {n_features}).")
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise FeatureShapeError("feature weights must be finite and non-negative.")
    offset = n_entities if identity else 0
    side = sp.coo_matrix(
        (weights, (entity_index, feature_index + offset)), shape=(n_entities, offset + n_features), dtype=np.float32
    ).tocsr()
    if identity:
        side = side + sp.eye(n_entities, offset + n_features, dtype=np.float32, format="csr")
    matrix = sp.csr_matrix(side, dtype=np.float32)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    if normalize:
        row_sums = np.asarray(matrix.sum(axis=1)).ravel()
        scale = np.divide(1.0, row_sums, out=np.zeros_like(row_sums), where=row_sums > 0)
        matrix = sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ matrix, dtype=np.float32)
    matrix.sort_indices()
    return matrix


@dataclass
class Interactions:
    """Training targets and their sample weights.

    Attributes
    ----------
    positives : csr_matrix of float32, shape (n_users, n_items)
        1.0 where the user showed positive interest, the targets for LightFM.
    weights : csr_matrix of float32, shape (n_users, n_items)
        Sample weights, exactly the sparsity pattern (and order) of ``positives``.
    negatives : csr_matrix of float32, shape (n_users, n_items)
        1.0 where a negative signal (dislike, low rating) vetoed the pair. Not used by LightFM;
        kept for fold-in targets and to filter recommendations.
    timestamps : csr_matrix of float64 or None
        Latest event time (seconds) per positive pair, same pattern as ``positives``.
    """

    positives: sp.csr_matrix
    weights: sp.csr_matrix
    negatives: sp.csr_matrix
    timestamps: sp.csr_matrix | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.positives.shape


def _as_seconds(values) -> np.ndarray:
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.datetime64):
        return values.astype("datetime64[us]").astype(np.int64) / 1e6
    return values.astype(np.float64)


def build_interactions(
    user_index,
    item_index,
    kind_weight,
    value,
    is_explicit,
    n_users: int,
    n_items: int,
    *,
    positive_threshold: float = 4.0,
    timestamps=None,
    now=None,
    half_life_days: float | None = None,
    value_transform=None,
    value_transform_names=VALUE_TRANSFORMS,
    confidence_alpha: float = CONFIDENCE_ALPHA,
    confidence_epsilon: float = CONFIDENCE_EPSILON,
) -> Interactions:
    """Turn a feedback event log into positives and sample weights.

    Parameters
    ----------
    user_index, item_index : array_like of int, shape (m,)
        One entry per feedback event.
    kind_weight : array_like of float, shape (m,)
        The event kind's training weight; negative for negative kinds (dislike).
    value : array_like of float, shape (m,)
        The event value: the rating for explicit kinds; for implicit ones a count, read only
        through ``value_transform``.
    is_explicit : array_like of bool, shape (m,)
    n_users, n_items : int
    positive_threshold : float
        An explicit rating is positive when ``value >= positive_threshold``.
    timestamps : array_like, shape (m,), optional
        Event times as unix seconds or ``datetime64``.
    now : float or datetime64, optional
        Reference time for decay; defaults to the newest timestamp.
    half_life_days : float, optional
        When given (with ``timestamps``), each event weight is multiplied by
        ``0.5 ** (age_days / half_life_days)``.
    value_transform : array_like of int, shape (m,), optional
        Per event, an index into ``value_transform_names`` saying how an implicit event's value
        scales its kind weight (:func:`implicit_event_weights`). None: ``none`` for every event.
    value_transform_names : sequence of str
        The transform names in the caller's code order; defaults to :data:`VALUE_TRANSFORMS`.
    confidence_alpha, confidence_epsilon : float
        α and ε of the ``confidence`` transform.

    Returns
    -------
    Interactions

    Notes
    -----
    Per event (see docs/ml.md):

    * explicit with ``value >= positive_threshold``: positive, weight
      ``kind_weight * value / max_rating`` where ``max_rating`` is the largest explicit value in
      the batch, so a 5/5 counts fully and a 4/5 counts 0.8;
    * explicit below the threshold: a *veto* (a rating is a statement about the item, so a low
      one outranks any views of the same item);
    * implicit with ``kind_weight > 0``: positive, weight ``kind_weight`` scaled by its value
      transform (``none``: unscaled; ``log``: ``× log1p(value)``, so a count of 0 adds nothing;
      ``confidence``: ``× (1 + alpha·log1p(value / epsilon))``);
    * implicit with ``kind_weight < 0`` (dislike): a veto; implicit with weight 0: ignored.

    Events on the same pair sum their weights. A vetoed pair is removed from ``positives``
    whatever its other events are: ranking losses (WARP, BPR) cannot use weights below zero, and
    recommending something a person said they dislike is worse than losing a view.
    """
    user_index = np.asarray(user_index, dtype=np.int64)
    item_index = np.asarray(item_index, dtype=np.int64)
    kind_weight = np.asarray(kind_weight, dtype=np.float64)
    value = np.asarray(value, dtype=np.float64)
    is_explicit = np.asarray(is_explicit, dtype=bool)
    arrays = [user_index, item_index, kind_weight, value, is_explicit]
    if value_transform is not None:
        value_transform = np.asarray(value_transform, dtype=np.int64)
        arrays.append(value_transform)
    if timestamps is not None:
        arrays.append(np.asarray(timestamps))
    if len({len(a) for a in arrays}) != 1:
        raise FeatureShapeError(f"event arrays differ in length: {[len(a) for a in arrays]}; pass one entry per event.")
    if len(user_index) and (
        user_index.min() < 0 or user_index.max() >= n_users or item_index.min() < 0 or item_index.max() >= n_items
    ):
        raise FeatureShapeError(f"indices out of range for shape ({n_users}, {n_items}).")
    if not (np.isfinite(kind_weight).all() and np.isfinite(value[is_explicit]).all()):
        raise ValueError("kind_weight and explicit values must be finite.")

    max_rating = value[is_explicit].max() if is_explicit.any() else 1.0
    max_rating = max_rating if max_rating > 0 else 1.0
    explicit_positive = is_explicit & (value >= positive_threshold) & (kind_weight > 0)
    implicit_positive = ~is_explicit & (kind_weight > 0)
    veto = (is_explicit & (value < positive_threshold)) | (~is_explicit & (kind_weight < 0))

    implicit_weight = kind_weight
    if value_transform is not None:
        # Only positive implicit events are scaled: a dislike vetoes whatever its value, and an
        # explicit rating is weighted by itself.
        implicit_weight = kind_weight.copy()
        implicit_weight[implicit_positive] = implicit_event_weights(
            kind_weight[implicit_positive],
            value[implicit_positive],
            value_transform[implicit_positive],
            value_transform_names=value_transform_names,
            confidence_alpha=confidence_alpha,
            confidence_epsilon=confidence_epsilon,
        )
    event_weight = np.where(explicit_positive, kind_weight * value / max_rating, implicit_weight)
    seconds = None
    if timestamps is not None:
        seconds = _as_seconds(timestamps)
        if half_life_days is not None:
            if half_life_days <= 0:
                raise ValueError("half_life_days must be positive; pass None to disable decay.")
            reference = _as_seconds(now) if now is not None else (seconds.max() if len(seconds) else 0.0)
            age_days = np.maximum(reference - seconds, 0.0) / SECONDS_PER_DAY
            event_weight = event_weight * 0.5 ** (age_days / half_life_days)
    elif half_life_days is not None:
        raise ValueError("half_life_days needs timestamps.")

    shape = (n_users, n_items)
    positive = explicit_positive | implicit_positive
    weights = sp.csr_matrix(
        (event_weight[positive], (user_index[positive], item_index[positive])), shape=shape, dtype=np.float64
    )  # the constructor sums duplicates
    negatives = sp.csr_matrix((np.ones(int(veto.sum())), (user_index[veto], item_index[veto])), shape=shape)
    negatives.sum_duplicates()
    negatives.data[:] = 1.0
    # Remove vetoed pairs: keep only entries whose pair is absent from `negatives`.
    weights = weights - weights.multiply(negatives)
    weights.eliminate_zeros()
    weights.sort_indices()
    weights = sp.csr_matrix(weights, dtype=np.float32)
    positives = weights.copy()
    positives.data[:] = 1.0

    last_seen = None
    if seconds is not None and positives.nnz == 0:
        last_seen = sp.csr_matrix(shape, dtype=np.float64)
    elif seconds is not None:
        # Latest event time per kept pair: sort events by (pair, time), the last of each run wins.
        flat = user_index[positive] * n_items + item_index[positive]
        order = np.lexsort((seconds[positive], flat))
        flat_sorted = flat[order]
        is_last = np.r_[flat_sorted[1:] != flat_sorted[:-1], True]
        pair_keys, pair_latest = flat_sorted[is_last], seconds[positive][order][is_last]
        kept_rows = np.repeat(np.arange(n_users), np.diff(positives.indptr))
        kept_keys = kept_rows * n_items + positives.indices
        latest = pair_latest[np.searchsorted(pair_keys, kept_keys)]
        last_seen = sp.csr_matrix((latest, positives.indices.copy(), positives.indptr.copy()), shape=shape)
    return Interactions(
        positives=positives, weights=weights, negatives=sp.csr_matrix(negatives, dtype=np.float32), timestamps=last_seen
    )


@dataclass
class TrainingData:
    """Everything :func:`recommender.ml.training.fit` needs, with the maps to read results back.

    Attributes
    ----------
    user_ids, item_ids : IdMap
    interactions : Interactions, shape (n_users, n_items)
    user_features : csr_matrix, shape (n_users, n_user_columns) or None
        None means identity only (pure collaborative filtering for users).
    item_features : csr_matrix, shape (n_items, n_item_columns) or None
    user_feature_names, item_feature_names : list of str
        One name per column of the matching feature matrix (identity columns included, e.g.
        ``"item:42"``), for explanations and the embedding map.
    user_identity, item_identity : bool
        Whether the feature matrix starts with one identity column per entity, as
        ``build_feature_matrix(..., identity=True)`` lays it out. Cold-start vectors need this to
        know where side features begin.
    """

    user_ids: IdMap
    item_ids: IdMap
    interactions: Interactions
    user_features: sp.csr_matrix | None = None
    item_features: sp.csr_matrix | None = None
    user_feature_names: list[str] = field(default_factory=list)
    item_feature_names: list[str] = field(default_factory=list)
    user_identity: bool = True
    item_identity: bool = True

    def __post_init__(self) -> None:
        n_users, n_items = self.interactions.shape
        if (len(self.user_ids), len(self.item_ids)) != (n_users, n_items):
            raise FeatureShapeError(
                f"interactions are {n_users}x{n_items} but the id maps hold "
                f"{len(self.user_ids)} users and {len(self.item_ids)} items."
            )
        for name, matrix, rows, names in (
            ("user_features", self.user_features, n_users, self.user_feature_names),
            ("item_features", self.item_features, n_items, self.item_feature_names),
        ):
            if matrix is None:
                continue
            if matrix.shape[0] != rows:
                raise FeatureShapeError(f"{name} has {matrix.shape[0]} rows, expected {rows} (one per entity).")
            identity = self.user_identity if name == "user_features" else self.item_identity
            if identity and matrix.shape[1] < rows:
                raise FeatureShapeError(
                    f"{name} has fewer columns than entities, so it has no identity block; "
                    f"set {name.split('_')[0]}_identity=False."
                )
            if names and len(names) != matrix.shape[1]:
                raise FeatureShapeError(f"{name} has {matrix.shape[1]} columns but {len(names)} names.")
