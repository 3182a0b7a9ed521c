"""The learned scorer (seed 002's ranking layer): LightGBM LambdaRank over every family's signals.

One row per (user, candidate) of a pool. Columns, in :func:`feature_names` order:

``<family>_score``, ``<family>_rank``, ``<family>_z``
    Each family's score of the candidate for this user, its rank within the pool (0 = that
    family's favourite) and its z-score within the pool. Ranks and z-scores make the signal
    comparable between a validation fit (less data, other score scales) and the served fit.
``popularity``
    log(1 + training interactions of the item).
``item_age_days``
    Days from the item's publication to "now" (NaN when unknown; trees route missing values).
``user_activity``
    log(1 + the user's history length).
``feature_overlap``
    Cosine between the item's side features and the sum of the user's history items' side
    features (0 without side features).

Two learners share this surface (``kind``): ``lambdarank`` (LightGBM, trees over every column)
and ``logistic`` (L2 logistic regression on the families' pool z-scores plus popularity and
overlap, z-scored within the pool — the old blend's learner over every family). The training
run fits both and serves whichever wins on held-out validation users (`recommender.ml.stack`).

Models are saved as LightGBM's own text format inside an ``np.savez`` archive (no pickles).
No Django here.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

CONTEXT_FEATURES = ("popularity", "item_age_days", "user_activity", "feature_overlap")

# Small trees on purpose: validation pools hold a few thousand positives, and on ml-100k 7 leaves
# with 200 samples per leaf beat 15 or 31 leaves on held-out validation users (and fit 2-10x faster).
DEFAULT_RANKER_PARAMS = {
    "n_estimators": 100,
    "learning_rate": 0.05,
    "num_leaves": 7,
    "min_child_samples": 200,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.9,
    "lambdarank_truncation_level": 20,
}


class RankerFitError(ValueError):
    """The ranker cannot be fitted (no labelled pool, a single label class, bad shapes)."""


def feature_names(families) -> list[str]:
    """Column names for the families, in the order :func:`pool_features` stacks them."""
    names = [f"{family}_{kind}" for family in families for kind in ("score", "rank", "z")]
    return [*names, *CONTEXT_FEATURES]


def _pool_rank(scores: np.ndarray) -> np.ndarray:
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(len(scores))
    return ranks


def _z(scores: np.ndarray) -> np.ndarray:
    spread = scores.std()
    return (scores - scores.mean()) / spread if spread > 1e-12 else np.zeros_like(scores)


def feature_overlap(item_features: sp.csr_matrix | None, history: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Cosine of each candidate's side-feature row with the summed rows of the history, shape (c,)."""
    if item_features is None or item_features.shape[1] == 0 or len(history) == 0:
        return np.zeros(len(candidates))
    profile = np.asarray(item_features[history].sum(axis=0), dtype=np.float64).ravel()
    norm = np.linalg.norm(profile)
    if norm == 0:
        return np.zeros(len(candidates))
    rows = item_features[candidates]
    dots = np.asarray(rows @ profile, dtype=np.float64).ravel()
    row_norms = np.sqrt(np.asarray(rows.multiply(rows).sum(axis=1), dtype=np.float64).ravel())
    return np.divide(dots, row_norms * norm, out=np.zeros_like(dots), where=row_norms > 0)


def pool_features(
    family_scores: dict[str, np.ndarray],
    *,
    popularity: np.ndarray,
    item_age_days: np.ndarray,
    user_activity: float,
    overlap: np.ndarray,
) -> np.ndarray:
    """The feature matrix of one pool, float64 shape (c, len(feature_names(family_scores))).

    Parameters
    ----------
    family_scores : dict name -> ndarray of float, shape (c,)
        Each family's score of every pooled candidate, in the families' order.
    popularity, item_age_days, overlap : ndarray of float, shape (c,)
    user_activity : float
    """
    n = len(popularity)
    if n == 0:
        # No candidate: the pool statistics (std, mean) of empty columns would only warn.
        return np.empty((0, 3 * len(family_scores) + len(CONTEXT_FEATURES)))
    columns = []
    for scores in family_scores.values():
        scores = np.asarray(scores, dtype=np.float64)
        columns += [scores, _pool_rank(scores), _z(scores)]
    columns += [
        np.asarray(popularity, np.float64),
        np.asarray(item_age_days, np.float64),
        np.full(n, float(user_activity)),
        np.asarray(overlap, np.float64),
    ]
    return np.column_stack(columns)


KINDS = ("lambdarank", "logistic")


def _linear_columns(names: list[str]) -> list[int]:
    return [i for i, name in enumerate(names) if name.endswith("_z") or name in ("popularity", "feature_overlap")]


def _standardize(features: np.ndarray) -> np.ndarray:
    spread = features.std(axis=0)
    centred = features - features.mean(axis=0)
    return np.divide(centred, spread, out=np.zeros_like(centred), where=spread > 1e-12)


@dataclass
class LearnedRanker:
    """A fitted ranker over :func:`feature_names` columns; ``model_text`` is LightGBM's model or the
    logistic weights as JSON, by ``kind``."""

    names: list[str]
    model_text: str
    params: dict = field(default_factory=dict)
    kind: str = "lambdarank"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise RankerFitError(f"unknown ranker kind {self.kind!r}; known: {KINDS}.")
        if self.kind == "lambdarank":
            import lightgbm

            self._booster = lightgbm.Booster(model_str=self.model_text)
        else:
            linear = json.loads(self.model_text)
            self._columns = np.asarray(linear["columns"], dtype=np.int64)
            self._weights = np.asarray(linear["weights"], dtype=np.float64)

    @classmethod
    def fit_logistic(
        cls, pools: list[tuple[np.ndarray, np.ndarray]], names: list[str], *, l2: float = 1.0
    ) -> LearnedRanker:
        """Logistic regression on pool-standardised signals (see the module docstring)."""
        from recommender.ml.blend import BlendFitError, logistic_fit

        pools = [(features, labels) for features, labels in pools if len(labels)]
        if not pools:
            raise RankerFitError("no labelled pool to fit the logistic ranker on.")
        columns = _linear_columns(names)
        stacked = np.vstack([_standardize(np.asarray(features, np.float64)[:, columns]) for features, _ in pools])
        labels = np.concatenate([np.asarray(labels, np.float64) for _, labels in pools])
        try:
            weights, _ = logistic_fit(stacked, labels, l2=l2)
        except BlendFitError as error:
            raise RankerFitError(str(error)) from error
        text = json.dumps({"columns": columns, "weights": [float(w) for w in weights]})
        return cls(names=list(names), model_text=text, params={"l2": l2}, kind="logistic")

    @classmethod
    def fit(
        cls,
        pools: list[tuple[np.ndarray, np.ndarray]],
        names: list[str],
        params: dict | None = None,
        *,
        num_threads: int = 0,
        seed: int = 0,
        time_budget_seconds: float | None = None,
    ) -> LearnedRanker:
        """Fit on labelled pools, a list of (features (c_i, f), labels (c_i,)) with one pool per user.

        Pools with no positive label carry no ranking information for LambdaRank and are dropped.
        With ``time_budget_seconds``, boosting stops after the tree that crosses the budget (the
        trees so far are kept), so a large validation set costs time, never a failed run.
        """
        import lightgbm

        deadline = None if time_budget_seconds is None else time.perf_counter() + time_budget_seconds

        def stop_at_deadline(env) -> None:
            if deadline is not None and time.perf_counter() > deadline:
                raise lightgbm.callback.EarlyStopException(env.iteration, env.evaluation_result_list or [])

        pools = [(features, labels) for features, labels in pools if len(labels) and np.any(labels > 0)]
        if not pools:
            raise RankerFitError("no pool holds a held-out positive; the validation split is too small.")
        features = np.vstack([features for features, _ in pools])
        if features.shape[1] != len(names):
            raise RankerFitError(f"features have {features.shape[1]} columns for {len(names)} names.")
        labels = np.concatenate([labels for _, labels in pools]).astype(np.int32)
        params = {**DEFAULT_RANKER_PARAMS, **(params or {})}
        model = lightgbm.LGBMRanker(
            objective="lambdarank", random_state=seed, n_jobs=num_threads or None, verbose=-1, **params
        )
        model.fit(
            features,
            labels,
            group=[len(pool_labels) for _, pool_labels in pools],
            feature_name=names,
            callbacks=[stop_at_deadline],
        )
        return cls(names=list(names), model_text=model.booster_.model_to_string(), params=params, kind="lambdarank")

    def score(self, features: np.ndarray) -> np.ndarray:
        """Scores of one pool's rows, float64 shape (c,)."""
        features = np.asarray(features, dtype=np.float64)
        if features.shape[0] == 0:
            return np.empty(0)
        if self.kind == "logistic":
            return _standardize(features[:, self._columns]) @ self._weights
        return np.asarray(self._booster.predict(features, num_threads=1), dtype=np.float64)

    def importances(self) -> dict[str, float]:
        """Share of the total split gain (LambdaRank) or of |weight| (logistic) per feature, largest first."""
        if self.kind == "logistic":
            gains = np.zeros(len(self.names))
            gains[self._columns] = np.abs(self._weights)
        else:
            gains = np.asarray(self._booster.feature_importance(importance_type="gain"), dtype=np.float64)
        total = gains.sum() or 1.0
        pairs = sorted(zip(self.names, gains / total, strict=True), key=lambda pair: -pair[1])
        return {name: round(float(share), 4) for name, share in pairs}

    def save(self, path: Path) -> Path:
        path = Path(path)
        with path.open("wb") as handle:
            np.savez(
                handle,
                allow_pickle=False,
                names=np.asarray(self.names, dtype=str),
                model_text=np.asarray(self.model_text),
                params_json=np.asarray(json.dumps(self.params)),
                kind=np.asarray(self.kind),
            )
        return path

    @classmethod
    def load(cls, path: Path) -> LearnedRanker:
        with np.load(Path(path), allow_pickle=False) as arrays:
            return cls(
                names=arrays["names"].tolist(),
                model_text=str(arrays["model_text"]),
                params=json.loads(str(arrays["params_json"])),
                kind=str(arrays["kind"]),
            )
