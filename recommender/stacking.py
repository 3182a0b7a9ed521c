"""A version's model families and learned scorer: stored beside its artifact at training, served from memory.

Layout: ``…/model_v7.npz`` (the LightFM artifact whose vectors are in pgvector) gets a sibling
directory ``model_v7.stack/`` with one ``<family>.npz`` per non-LightFM family, ``ranker.npz``
when the ranker serves, ``items.npz`` (the ranker's per-item signals) and ``stack.json`` (the
choice, the family order, the pool sizes and the validation report). A version without that
directory is served as before (LightFM, optionally with its blend, `recommender/blend.py`).

Artifacts never change after training, so a loaded stack is kept per process by (database,
version) in a small LRU; nothing here depends on the cache generation.

At serving, each family scores the user's **live** history (`ModelFamily.score_history`, its
fold-in), so a rating moves every family's scores at the next request; the LightFM column is the
pool's model score from the served user vector (trained or folded in), exactly what the ranker
was trained on.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from django.conf import settings
from django.db import connection

from recommender.candidates.base import Context
from recommender.memo import VersionModels
from recommender.ml.dataset import IdMap
from recommender.ml.families import FAMILIES, ModelFamily, VectorFamily
from recommender.ml.ranker import LearnedRanker, feature_overlap, pool_features
from recommender.ml.stack import ItemContext, ScorerFit, StackConfig

logger = logging.getLogger(__name__)

# The LightFM family is served from pgvector; the stack stores only the others.
VECTOR_FAMILY = "lightfm"


def stack_dir(artifact_path: str | Path) -> Path:
    """``…/model_v7.npz`` → ``…/model_v7.stack``."""
    path = Path(artifact_path)
    return path.with_name(f"{path.stem}.stack")


@dataclass(frozen=True)
class History:
    """A user's in-force feedback as stack indices: confidences and preferences (1 positive, 0 vetoed)."""

    items: np.ndarray
    confidences: np.ndarray
    preferences: np.ndarray


@dataclass
class ServedStack:
    """What serving needs to score a pool the way the chosen scorer does."""

    choice: str
    families: dict[str, ModelFamily | None]  # in feature order; None = the vector family (pgvector scores)
    ranker: LearnedRanker | None
    item_ids: IdMap
    items: ItemContext
    config: dict
    report: dict

    def pool_scores(
        self,
        *,
        model_scores: np.ndarray,
        candidate_ids: np.ndarray,
        history: History,
        memo: dict,
    ) -> np.ndarray:
        """Scores of one pool (external ids ``candidate_ids``), float64 (c,).

        Items the stack's fit never saw (added after training, with a cold-start vector) sit below
        every scored item, ordered among themselves by the model score.
        """
        candidates = self.item_ids.index_of(candidate_ids, missing=-1)
        known = candidates >= 0
        if not known.all():
            scores = np.full(len(candidates), -np.inf)
            if known.any():
                inner = self.pool_scores(
                    model_scores=np.asarray(model_scores)[known],
                    candidate_ids=candidate_ids[known],
                    history=history,
                    memo=memo,
                )
                scores[known] = inner
            floor = (scores[known].min() if known.any() else 0.0) - 1.0
            unknown_model = np.asarray(model_scores, np.float64)[~known]
            spread = np.ptp(unknown_model) or 1.0
            scores[~known] = floor - 1.0 + (unknown_model - unknown_model.min()) / spread
            return scores
        if self.ranker is None:
            name = self.choice.removeprefix("family:")
            if self.families.get(name) is None:
                return np.asarray(model_scores, np.float64)
            return np.asarray(self.family_scores(name, history, memo)[candidates], np.float64)
        family_scores = {
            name: (
                np.asarray(model_scores, np.float64)
                if family is None
                else self.family_scores(name, history, memo)[candidates]
            )
            for name, family in self.families.items()
        }
        features = pool_features(
            family_scores,
            popularity=self.items.popularity[candidates],
            item_age_days=self.items.age_days[candidates],
            user_activity=float(np.log1p(len(history.items))),
            overlap=feature_overlap(self.items.features, history.items, candidates),
        )
        return self.ranker.score(features)

    def catalogue_rows(self, catalogue_item_ids: np.ndarray) -> np.ndarray:
        """Row of each stack item in a catalogue copy's ascending ``item_ids`` (-1: not in it), int64 (n,).

        Kept for the last copy asked about: a copy lives for a cache generation, so this runs once per
        generation, not per request.
        """
        cached = self.__dict__.get("_catalogue_rows")
        if cached is not None and cached[0] is catalogue_item_ids:
            return cached[1]
        ids = np.asarray(self.item_ids.ids, dtype=np.int64)
        positions = np.searchsorted(catalogue_item_ids, ids)
        inside = positions < len(catalogue_item_ids)
        found = np.zeros(len(ids), dtype=bool)
        found[inside] = catalogue_item_ids[positions[inside]] == ids[inside]
        rows = np.where(found, positions, -1).astype(np.int64)
        self.__dict__["_catalogue_rows"] = (catalogue_item_ids, rows)
        return rows

    def family_scores(self, name: str, history: History, memo: dict) -> np.ndarray:
        """One family's fold-in scores of the request's history over every item, computed once per request."""
        key = ("family_scores", name)
        if key not in memo:
            family = self.families[name]
            if family is None:
                raise LookupError(f"{name} is served from the vector index, not from the stack.")
            query = memo.get(("family_query", name))
            if query is not None and isinstance(family, VectorFamily):
                # Its candidate source already ran the query tower for this request (with the
                # user's side features): the same query scores every item, one forward pass saved.
                memo[key] = family.item_space()[0] @ query
            else:
                memo[key] = family.score_history(history.items, history.confidences, history.preferences)
        return memo[key]


def stack_store(
    *,
    artifact_path: str | Path,
    families: dict[str, ModelFamily],
    scorer: ScorerFit,
    items: ItemContext,
    config: StackConfig,
    item_ids: IdMap,
    positive_threshold: float,
) -> Path:
    """Write the served stack of a version next to its artifact; returns the directory."""
    directory = stack_dir(artifact_path)
    directory.mkdir(parents=True, exist_ok=True)
    for name, family in families.items():
        if name != VECTOR_FAMILY:
            family.save(directory / f"{name}.npz")
    if scorer.ranker is not None:
        scorer.ranker.save(directory / "ranker.npz")
    features = items.features if items.features is not None else sp.csr_matrix((len(item_ids), 0), dtype=np.float32)
    with (directory / "items.npz").open("wb") as handle:
        np.savez(
            handle,
            allow_pickle=False,
            popularity=items.popularity,
            age_days=items.age_days,
            features_data=features.data,
            features_indices=features.indices,
            features_indptr=features.indptr,
            features_shape=np.asarray(features.shape, dtype=np.int64),
            **item_ids.to_arrays("item"),
        )
    manifest = {
        "choice": scorer.choice,
        "families": list(config.families),
        "pool_sizes": {name: config.pool_size(name) for name in config.families},
        "report": scorer.report,
        "positive_threshold": positive_threshold,
    }
    (directory / "stack.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    _cache_clear()
    return directory


def stack_load(directory: Path) -> ServedStack:
    manifest = json.loads((directory / "stack.json").read_text())
    with np.load(directory / "items.npz", allow_pickle=False) as arrays:
        shape = tuple(int(n) for n in arrays["features_shape"])
        features = sp.csr_matrix(
            (arrays["features_data"], arrays["features_indices"], arrays["features_indptr"]), shape=shape
        )
        items = ItemContext(
            popularity=np.asarray(arrays["popularity"]),
            age_days=np.asarray(arrays["age_days"]),
            features=features if shape[1] else None,
        )
        item_ids = IdMap.from_arrays(arrays, "item")
    families: dict[str, ModelFamily | None] = {
        name: None if name == VECTOR_FAMILY else FAMILIES[name].load(directory / f"{name}.npz")
        for name in manifest["families"]
    }
    ranker_path = directory / "ranker.npz"
    ranker = LearnedRanker.load(ranker_path) if manifest["choice"] == "ranker" and ranker_path.exists() else None
    return ServedStack(
        choice=manifest["choice"],
        families=families,
        ranker=ranker,
        item_ids=item_ids,
        items=items,
        config={"pool_sizes": manifest["pool_sizes"], "positive_threshold": manifest["positive_threshold"]},
        report=manifest["report"],
    )


def _stack_bytes(stack: ServedStack | None) -> int:
    if stack is None:
        return 0
    return sum(family.memory_bytes() for family in stack.families.values() if family is not None)


# Per process, by the families' own byte counts (settings.SERVING_MODELS_BUDGET_BYTES, shared with
# the blends' memo by halves): at ml-100k every recent version fits, at a million items one or two.
_cache: VersionModels[tuple, ServedStack | None] = VersionModels(
    "stacks", budget_bytes=lambda: settings.SERVING_MODELS_BUDGET_BYTES // 2, size_of=_stack_bytes
)


def _cache_clear() -> None:
    _cache.clear()


def stack_discard(artifact_path: str | Path) -> None:
    """Remove a stack left at this artifact's place (a version id reused by another database of the
    same name, e.g. a recreated test database) and forget loaded stacks, before a new artifact is written."""
    shutil.rmtree(stack_dir(artifact_path), ignore_errors=True)
    _cache_clear()


def version_stack(version_id: int) -> ServedStack | None:
    """The version's served stack, loaded once per process (kept within a byte budget); None when it has none."""
    key = (connection.settings_dict["NAME"], version_id)
    found, cached = _cache.lookup(key)
    if found:
        return cached
    with connection.cursor() as cursor:
        cursor.execute("SELECT artifact_path FROM recommender_modelversion WHERE id = %s", [version_id])
        row = cursor.fetchone()
    stack = None
    if row and row[0] and (stack_dir(row[0]) / "stack.json").exists():
        started = time.perf_counter()
        stack = stack_load(stack_dir(row[0]))
        logger.info(
            "stack.loaded version=%s choice=%s ms=%.1f",
            version_id,
            stack.choice,
            1000 * (time.perf_counter() - started),
        )
    _cache.store(key, stack)
    return stack


def user_history(*, context: Context, stack: ServedStack) -> History:
    """The user's rated items (positives and vetoed pairs) as the stack's indices, read once per request."""
    key = ("stack_history", id(stack))
    if key not in context.memo:
        from recommender.services.realtime import feedback_targets

        threshold = float(stack.config["positive_threshold"])
        targets = (
            {}
            if context.profile_id is None
            else feedback_targets(profile_id=context.profile_id, positive_threshold=threshold)
        )
        ids = np.fromiter(targets.keys(), dtype=np.int64, count=len(targets))
        indices = stack.item_ids.index_of(ids, missing=-1) if len(ids) else np.empty(0, dtype=np.int64)
        confidences = np.asarray([confidence for confidence, _ in targets.values()], dtype=np.float64)
        preferences = np.asarray([preference for _, preference in targets.values()], dtype=np.float64)
        keep = indices >= 0
        context.memo[key] = History(indices[keep], confidences[keep], preferences[keep])
    return context.memo[key]


def pool_stack_scores(*, context: Context, item_ids: list[int], model_scores: np.ndarray) -> np.ndarray | None:
    """The chosen scorer's scores of the pooled items for the context's user; None without a stack."""
    if context.version_id is None:
        return None
    stack = version_stack(context.version_id)
    if stack is None or stack.choice == f"family:{VECTOR_FAMILY}":
        return None  # LightFM alone: the model score (or the version's blend) orders the pool
    history = user_history(context=context, stack=stack)
    if not (history.preferences > 0).any():
        # No positive history: every family but LightFM folds in nothing, and the scorer was fitted on
        # users with histories only. LightFM's vector (from side features, or the trained one) orders.
        return None
    return stack.pool_scores(
        model_scores=model_scores,
        candidate_ids=np.asarray(item_ids, dtype=np.int64),
        history=history,
        memo=context.memo,
    )
