"""Several families, one learned scorer: fitted and chosen on validation data carved from training data.

:func:`scorer_fit` is the training run's automatic choice per catalogue (seed 002's "several
candidate generators merged, then one ranking model"):

1. carve a random ``validation_fraction`` of the (training) positives out;
2. fit every configured family on the rest, timing each;
3. for each validation user, pool the unseen top items of every family plus the most popular,
   and label the pooled items held out for her;
4. split the validation users: the ranker (`recommender.ml.ranker`) is fitted on most of them,
   and on the others ("lift users") it is compared with each family alone, each ranking the whole
   catalogue. The ranker serves when it beats the best family there; otherwise that family does,
   and the report says why;
5. the winning learner, as fitted on the ranker's share of the validation users, serves.

Nothing here ever sees a test split: callers hand in training data only (the training service
passes the protocol's training part, `manage.py evaluate` and `bench.quality_matrix` the same).
:func:`stack_top_k` ranks users the way the served scorer does, for offline evaluation.
No Django here.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from recommender.ml import evaluation
from recommender.ml.dataset import TrainingData
from recommender.ml.families import FAMILIES, ModelFamily, Progress
from recommender.ml.ranker import LearnedRanker, RankerFitError, feature_names, feature_overlap, pool_features
from recommender.ml.similarity import top_k

logger = logging.getLogger(__name__)

# Users scored at once keep users × items near this many cells (as evaluation does).
_BATCH_CELLS = 4_000_000


@dataclass(frozen=True)
class StackConfig:
    """What to fit and how to choose.

    Attributes
    ----------
    families : dict name -> params
        Families to fit, in feature order; names are keys of ``FAMILIES``.
    pool_sizes : dict name -> int
        Candidates each family nominates per user (its unseen top items); missing = 100.
    popular_size : int
        The unseen most popular items added to every pool.
    validation_fraction, seed : the validation split of the training positives.
    lift_fraction : float
        Share of the validation users kept out of the ranker's fit to measure its lift.
    min_validation_users : int
        Below this many validation users with a held-out positive the ranker is not fitted.
    search_seconds : float
        Time budget of the hyperparameter search: each family's ``param_grid`` is tried in order
        (best measured first) while the budget lasts; the first entry is always fitted.
    ranker_seconds : float
        Time budget of the LambdaRank fit (boosting stops at the tree that crosses it).
    evaluation_budget_cells : int
        Scores the validation may compute (validation users × items): above it a seeded sample of
        budget / items validation users is searched, pooled and learned on
        (`evaluation.users_within_budget`).
    """

    families: dict[str, dict]
    pool_sizes: dict[str, int] = field(default_factory=dict)
    popular_size: int = 50
    validation_fraction: float = 0.2
    seed: int = 1
    lift_fraction: float = 0.25
    min_validation_users: int = 50
    search_seconds: float = 60.0
    ranker_seconds: float = 20.0
    evaluation_budget_cells: int = 500_000_000
    k: int = 10
    ranker_params: dict = field(default_factory=dict)
    num_threads: int = 0

    def pool_size(self, family: str) -> int:
        return int(self.pool_sizes.get(family, 100))


@dataclass
class ItemContext:
    """Per-item signals the ranker reads besides the families, aligned with ``data.item_ids``.

    popularity : float64 (n_items,), log(1 + rated count); age_days : float64 (n_items,), NaN if
    unknown; features : csr (n_items, n_side_features) of side features only, or None.
    """

    popularity: np.ndarray
    age_days: np.ndarray
    features: sp.csr_matrix | None

    @classmethod
    def build(cls, data: TrainingData, age_days: np.ndarray | None = None) -> ItemContext:
        rated = rated_matrix(data)
        popularity = np.log1p(np.asarray((rated != 0).sum(axis=0), dtype=np.float64).ravel())
        n_items = rated.shape[1]
        ages = np.full(n_items, np.nan) if age_days is None else np.asarray(age_days, dtype=np.float64)
        features = None
        if data.item_features is not None:
            offset = n_items if data.item_identity else 0
            side = sp.csr_matrix(data.item_features)[:, offset:]
            features = side.tocsr() if side.shape[1] else None
        return cls(popularity=popularity, age_days=ages, features=features)


@dataclass
class ScorerFit:
    """What :func:`scorer_fit` chose: the ranker (None when a family serves alone) and why."""

    choice: str  # "ranker" or "family:<name>"
    ranker: LearnedRanker | None
    report: dict
    # The parameters each family won the search with; refits use these (`tuned`).
    params: dict[str, dict] = field(default_factory=dict)

    def tuned(self, config: StackConfig) -> StackConfig:
        """``config`` with every family's searched parameters."""
        return dataclasses.replace(
            config, families={name: self.params.get(name, p) for name, p in config.families.items()}
        )


def rated_matrix(data: TrainingData) -> sp.csr_matrix:
    """Binary (n_users, n_items) csr of every training interaction: positives and vetoed pairs."""
    interactions = data.interactions
    return ((interactions.positives != 0) + (interactions.negatives != 0)).astype(np.float32).tocsr()


def with_positives(data: TrainingData, positives: sp.csr_matrix, weights: sp.csr_matrix) -> TrainingData:
    interactions = dataclasses.replace(data.interactions, positives=positives, weights=weights)
    return dataclasses.replace(data, interactions=interactions)


def families_fit(
    data: TrainingData, config: StackConfig, *, progress: Progress | None = None
) -> tuple[dict[str, ModelFamily], dict[str, float]]:
    """Fit every configured family on ``data``; returns the families and their fit seconds."""
    fitted: dict[str, ModelFamily] = {}
    seconds: dict[str, float] = {}
    for name, params in config.families.items():
        started = time.perf_counter()
        fitted[name] = FAMILIES[name].fit(data, dict(params), progress=progress)
        seconds[name] = round(time.perf_counter() - started, 3)
        logger.info("stack.family_fitted family=%s seconds=%.2f", name, seconds[name])
    return fitted, seconds


def candidate_pools(
    families: dict[str, ModelFamily],
    rated: sp.csr_matrix,
    items: ItemContext,
    users: np.ndarray,
    config: StackConfig,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Per user: (user, candidate item indices, features (c, f)); rated items are never candidates."""
    n_items = rated.shape[1]
    by_popularity = np.argsort(-items.popularity, kind="stable")
    batch_size = max(1, _BATCH_CELLS // max(n_items, 1))
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        seen_rows = rated[batch]
        seen = seen_rows.toarray() > 0
        scores = {name: _unrated_scores(family, batch, seen_rows) for name, family in families.items()}
        # Rated entries are -inf: they can only reach a top list when fewer unrated items remain,
        # and the candidates drop them below.
        tops = {name: top_k(matrix, config.pool_size(name)) for name, matrix in scores.items()}
        for row, user in enumerate(batch.tolist()):
            nominated = [tops[name][row] for name in families]
            popular = by_popularity[~seen[row][by_popularity]][: config.popular_size]
            candidates = np.unique(np.concatenate([*nominated, popular]).astype(np.int64))
            candidates = candidates[~seen[row][candidates]]
            history = rated.indices[rated.indptr[user] : rated.indptr[user + 1]]
            features = pool_features(
                {name: matrix[row, candidates] for name, matrix in scores.items()},
                popularity=items.popularity[candidates],
                item_age_days=items.age_days[candidates],
                user_activity=float(np.log1p(len(history))),
                overlap=feature_overlap(items.features, history, candidates),
            )
            yield user, candidates, features


def families_search(
    data: TrainingData,
    config: StackConfig,
    held_out: sp.csr_matrix,
    users: np.ndarray,
    *,
    progress: Progress | None = None,
) -> tuple[dict[str, ModelFamily], dict[str, float], dict[str, dict], dict[str, list], dict[str, np.ndarray]]:
    """Fit every family, trying its ``param_grid`` on the validation users within the time budget.

    Returns (the best fit per family, its fit seconds, its parameters, the search table per family:
    one ``{"params", "precision_at_k", "seconds"}`` row per try, and the best fit's top-k lists of
    ``users``, shape (u, k), so the caller never scores the catalogue for them again).
    """
    started_search = time.perf_counter()
    rated = rated_matrix(data)
    relevant = held_out[users]
    key = f"precision_at_{config.k}"
    fitted, seconds, chosen, table, tops = {}, {}, {}, {}, {}
    names = list(config.families)
    for position, name in enumerate(names):
        base = config.families[name]
        # Each family's fair share of the budget, what earlier families left unused carried over:
        # a slow first family cannot starve the grids of the others.
        deadline = started_search + config.search_seconds * (position + 1) / len(names)
        rows: list[dict] = []
        resolved: dict = {}
        for entry in [{}, *FAMILIES[name].param_grid]:
            # An entry the first fit already holds once the family filled in its defaults (the
            # grids start with the defaults) would spend the budget on a copy of that fit.
            if rows and all(option in resolved and resolved[option] == value for option, value in entry.items()):
                continue
            if rows and time.perf_counter() > deadline:
                break
            params = {**base, **entry}
            started = time.perf_counter()
            family = FAMILIES[name].fit(data, dict(params), progress=progress)
            elapsed = round(time.perf_counter() - started, 3)
            top = family_top_k(family, rated, users, config.k)
            score = _summary(top, relevant, config.k)[key] if len(users) else 0.0
            rows.append(
                {
                    "params": {k: v for k, v in params.items() if k not in base or base[k] != v} or "default",
                    key: score,
                    "seconds": elapsed,
                }
            )
            if name not in fitted or score > max(row[key] for row in rows[:-1]):
                fitted[name], seconds[name], chosen[name], tops[name] = family, elapsed, params, top
            if len(rows) == 1:
                resolved = dict(family.params)
        table[name] = rows
        logger.info("stack.searched family=%s tries=%s best=%s", name, len(rows), chosen[name])
    return fitted, seconds, chosen, table, tops


def _held_out(positives: sp.csr_matrix, rated: sp.csr_matrix) -> sp.csr_matrix:
    held = (positives != 0).astype(np.float32).tocsr()
    held = (held - held.multiply(rated)).tocsr()
    held.eliminate_zeros()
    return held


def _pool_top(candidates: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    row = np.full(k, -1, dtype=np.int64)
    chosen = candidates[top_k(scores, min(k, len(candidates)))] if len(candidates) else candidates
    row[: len(chosen)] = chosen
    return row


def _summary(top: np.ndarray, relevant: sp.csr_matrix, k: int) -> dict[str, float]:
    metrics = evaluation.topk_metrics(top, relevant, k)
    return {
        f"precision_at_{k}": round(float(metrics["precision"].mean()), 5),
        f"ndcg_at_{k}": round(float(metrics["ndcg"].mean()), 5),
    }


def family_top_k(family: ModelFamily, rated: sp.csr_matrix, users: np.ndarray, k: int) -> np.ndarray:
    """Each user's top ``k`` unrated items by one family over the whole catalogue, shape (u, k)."""
    n_items = rated.shape[1]
    batch_size = max(1, _BATCH_CELLS // max(n_items, 1))
    rows = []
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        rows.append(top_k(_unrated_scores(family, batch, rated[batch]), k))
    return np.vstack(rows) if rows else np.zeros((0, k), dtype=np.int64)


def _unrated_scores(family: ModelFamily, batch: np.ndarray, rated_rows: sp.csr_matrix) -> np.ndarray:
    """The family's scores of ``batch`` over every item (its own float dtype), rated items at -inf.

    The rated entries are set through the sparse rows' indices, not a dense mask: at a million
    items a dense mask per batch costs as much memory traffic as the scores.
    """
    scores = np.array(family.score_items(batch))
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)
    scores[np.repeat(np.arange(len(batch)), np.diff(rated_rows.indptr)), rated_rows.indices] = -np.inf
    return scores


def scorer_fit(
    data: TrainingData,
    config: StackConfig,
    *,
    item_age_days: np.ndarray | None = None,
    progress: Progress | None = None,
) -> ScorerFit:
    """Fit the families on a validation split of ``data`` (training data only) and choose the scorer."""
    started = time.perf_counter()
    k = config.k
    interactions = data.interactions
    split = evaluation.random_split(
        interactions.positives, interactions.weights, config.validation_fraction, config.seed
    )
    reduced = with_positives(data, split.train_positives, split.train_weights)
    rated = rated_matrix(reduced)
    held_out = evaluation.users_within_budget(
        _held_out(split.test_positives, rated), budget_cells=config.evaluation_budget_cells, seed=config.seed
    )
    users = np.flatnonzero(np.diff(held_out.indptr) > 0)
    families, fit_seconds, tuned, search, tops = families_search(reduced, config, held_out, users, progress=progress)
    report: dict = {
        "validation_users": len(users),
        "validation_fraction": config.validation_fraction,
        "family_fit_seconds": fit_seconds,
        "families": list(families),
        "search": search,
        "search_seconds_budget": config.search_seconds,
    }
    single = {name: _summary(tops[name], held_out[users], k) for name in families}
    best_family = max(single, key=lambda name: single[name][f"precision_at_{k}"])
    if len(users) < config.min_validation_users:
        report.update(
            validation=single,
            reason=f"only {len(users)} validation users (< {config.min_validation_users}): {best_family} serves alone",
        )
        return ScorerFit(choice=f"family:{best_family}", ranker=None, report=report, params=tuned)

    items = ItemContext.build(reduced, item_age_days)
    pools = [
        (
            user,
            candidates,
            features,
            np.isin(candidates, held_out.indices[held_out.indptr[user] : held_out.indptr[user + 1]]),
        )
        for user, candidates, features in candidate_pools(families, rated, items, users, config)
    ]
    names = feature_names(families)
    lift_mask = np.random.default_rng(config.seed).random(len(pools)) < config.lift_fraction
    fit_pools = [
        (features, labels) for (_, _, features, labels), lift in zip(pools, lift_mask, strict=True) if not lift
    ]
    learners = {
        "lambdarank": lambda chosen: LearnedRanker.fit(
            chosen,
            names,
            config.ranker_params,
            num_threads=config.num_threads,
            seed=config.seed,
            time_budget_seconds=config.ranker_seconds,
        ),
        "logistic": lambda chosen: LearnedRanker.fit_logistic(chosen, names),
    }
    probes: dict[str, LearnedRanker] = {}
    for kind, learner in learners.items():
        try:
            probes[kind] = learner(fit_pools)
        except RankerFitError as error:
            report.setdefault("learner_errors", {})[kind] = str(error)
    lift_pools = [pool for pool, lift in zip(pools, lift_mask, strict=True) if lift]
    lift_users = np.asarray([user for user, *_ in lift_pools], dtype=np.int64)
    if not probes or len(lift_users) == 0:
        report.update(validation=single, reason=f"no learned scorer could be fitted: {best_family} serves alone")
        return ScorerFit(choice=f"family:{best_family}", ranker=None, report=report, params=tuned)
    relevant = held_out[lift_users]
    on_lift: dict[str, dict[str, float]] = {}
    for kind, probe in probes.items():
        ranked = np.vstack(
            [_pool_top(candidates, probe.score(features), k) for _, candidates, features, _ in lift_pools]
        )
        on_lift[f"ranker:{kind}"] = _summary(ranked, relevant, k)
    lift_rows = np.searchsorted(users, lift_users)  # `users` is sorted (np.flatnonzero) and holds them all
    for name in families:
        on_lift[name] = _summary(tops[name][lift_rows], relevant, k)
    key = f"precision_at_{k}"
    best_learner = max(probes, key=lambda kind: on_lift[f"ranker:{kind}"][key])
    best_on_lift = max(families, key=lambda name: on_lift[name][key])
    learned = on_lift[f"ranker:{best_learner}"][key]
    lift = {name: round(learned / max(on_lift[name][key], 1e-12), 4) for name in families}
    report.update(validation=single, lift_users=len(lift_users), on_lift_users=on_lift, ranker_lift=lift)
    report["ranker_kind"] = best_learner
    if learned < on_lift[best_on_lift][key]:
        report["reason"] = (
            f"the best learned scorer ({best_learner}) has validation {key} {learned:.4f}, below "
            f"{best_on_lift}'s {on_lift[best_on_lift][key]:.4f}: {best_on_lift} serves alone"
        )
        report["seconds"] = round(time.perf_counter() - started, 2)
        return ScorerFit(choice=f"family:{best_on_lift}", ranker=None, report=report, params=tuned)
    # The probe itself serves: its lift above is then measured for exactly the served ranker, and
    # a second fit on every pool would double the learner's cost for a few hundred more users.
    ranker = probes[best_learner]
    report["importances"] = ranker.importances()
    report["reason"] = (
        f"the {best_learner} ranker beats every family on {len(lift_users)} held-out validation users (lift {lift})"
    )
    report["seconds"] = round(time.perf_counter() - started, 2)
    return ScorerFit(choice="ranker", ranker=ranker, report=report, params=tuned)


def stack_top_k(
    families: dict[str, ModelFamily],
    scorer: ScorerFit,
    data: TrainingData,
    users: np.ndarray,
    config: StackConfig,
    *,
    item_age_days: np.ndarray | None = None,
) -> np.ndarray:
    """Each user's top ``config.k`` unrated items as the chosen scorer ranks them, shape (u, k).

    ``families`` were fitted on ``data``; -1 marks an empty slot.
    """
    rated = rated_matrix(data)
    if scorer.ranker is None:
        return family_top_k(families[scorer.choice.removeprefix("family:")], rated, users, config.k)
    items = ItemContext.build(data, item_age_days)
    rows = [
        _pool_top(candidates, scorer.ranker.score(features), config.k)
        for _, candidates, features in candidate_pools(families, rated, items, users, config)
    ]
    return np.vstack(rows) if rows else np.zeros((0, config.k), dtype=np.int64)
