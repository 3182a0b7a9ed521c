"""The training run's families and learned scorer (`recommender.ml.stack`), evaluated and published.

Called by `recommender.services.training` between the LightFM phases:

* :func:`scorer_evaluate` (evaluating phase) chooses the scorer on a validation split carved out
  of the protocol's **training part** (`recommender.ml.stack.scorer_fit`), then fits every family
  on the whole training part and measures the chosen scorer, each family alone and popularity on
  the protocol's test part — the same split as the version's LightFM metrics. The EASE family
  fitted there is the quality gate's strong baseline (exact while its Gram matrix fits the
  memory budget, else its scalable variant; `recommender.ml.families.ease`).
* :func:`scorer_publish` (publishing phase) refits the families on all the data the served
  LightFM model saw and stores them with the frozen scorer beside the artifact
  (`recommender.stacking`); when that refit would not fit the run's time budget
  (`TRAINING_RUN_SECONDS`), the families fitted on the training part serve instead.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import scipy.sparse as sp
from django.conf import settings

from recommender.ml import evaluation
from recommender.ml.dataset import TrainingData
from recommender.ml.families import ModelFamily, Progress
from recommender.ml.families.lightfm import LightFmFamily
from recommender.ml.stack import (
    ItemContext,
    ScorerFit,
    StackConfig,
    families_fit,
    family_top_k,
    rated_matrix,
    scorer_fit,
    stack_top_k,
)
from recommender.ml.training import FittedModel
from recommender.services.vector_spaces import family_spaces_publish
from recommender.stacking import VECTOR_FAMILY, stack_store

logger = logging.getLogger(__name__)


def stack_config(snapshot: dict, lightfm_params: dict) -> StackConfig | None:
    """The run's StackConfig from a version's snapshot; None when only LightFM is configured."""
    names = [name.strip() for name in str(snapshot.get("families") or "").split(",") if name.strip()]
    if len(names) < 2:
        return None
    threads = settings.TRAINING_NUM_THREADS or 0
    families: dict[str, dict] = {}
    for name in names:
        if name == VECTOR_FAMILY:
            # Only the validation search fits LightFM here (the run's own model serves and is
            # reused for every other fit): within the family time budget, like EASE.
            families[name] = {**lightfm_params, "fit_seconds": float(settings.TRAINING_FAMILY_FIT_SECONDS)}
        elif name == "als":
            families[name] = {
                "num_threads": threads,
                "random_state": snapshot.get("seed", 0),
                "fit_seconds": float(settings.TRAINING_FAMILY_FIT_SECONDS),
            }
        elif name == "ease":
            # Every training interaction (low ratings included) as binary input: on ml-100k this
            # input took the stack from 1.04x to 1.07x exact EASE's precision@10 (docs/training.md).
            families[name] = {"input": "rated", "fit_seconds": float(settings.TRAINING_FAMILY_FIT_SECONDS)}
        elif name == "two_tower":
            # Its own one torch thread (measured faster than several, docs/ml.md "Two-tower family").
            families[name] = {
                "random_state": snapshot.get("seed", 0),
                "fit_seconds": float(settings.TRAINING_FAMILY_FIT_SECONDS),
            }
        else:
            families[name] = {}
    return StackConfig(
        families=families,
        k=int(snapshot.get("eval_k", 10)),
        seed=int(snapshot.get("seed", 0)) + 1,
        num_threads=threads,
        pool_sizes=dict(settings.RECOMMENDER_STACK_POOL_SIZES),
        search_seconds=float(settings.TRAINING_SEARCH_SECONDS),
        ranker_seconds=float(settings.TRAINING_RANKER_SECONDS),
        evaluation_budget_cells=int(settings.TRAINING_EVALUATION_BUDGET_CELLS),
    )


def _fit_with_lightfm(
    data: TrainingData, config: StackConfig, lightfm_model: FittedModel, progress: Progress | None = None
) -> tuple[dict[str, ModelFamily], dict[str, float]]:
    """Every family on ``data``, reusing the LightFM model the run already fitted on it."""
    others = dataclasses.replace(config, families={n: p for n, p in config.families.items() if n != VECTOR_FAMILY})
    fitted, seconds = families_fit(data, others, progress=progress)
    ordered = {
        name: (LightFmFamily(lightfm_model) if name == VECTOR_FAMILY else fitted[name]) for name in config.families
    }
    return ordered, seconds


def _test_rows(test_positives: sp.csr_matrix, rated: sp.csr_matrix) -> tuple[sp.csr_matrix, np.ndarray]:
    test = (test_positives != 0).astype(np.float32).tocsr()
    test = (test - test.multiply(rated)).tocsr()
    test.eliminate_zeros()
    return test, np.flatnonzero(np.diff(test.indptr) > 0)


def _summary(top: np.ndarray, relevant: sp.csr_matrix, n_items: int, k: int) -> dict[str, float]:
    metrics = evaluation.topk_metrics(top, relevant, k)
    return evaluation.topk_summary({**metrics, "top_k": top}, n_items=n_items, k=k)


def scorer_evaluate(
    *,
    train: TrainingData,
    test_positives: sp.csr_matrix,
    lightfm_model: FittedModel,
    config: StackConfig,
    progress: Progress | None = None,
) -> tuple[ScorerFit, dict, dict[str, ModelFamily]]:
    """Choose the scorer on validation data from ``train``; measure it on ``test_positives``.

    Returns the fit, ``{"scorer": {...}, "families": {name: metrics}, "popularity": metrics,
    "choice", "seconds"}`` (every metric on the same test users with training interactions
    excluded), and the families fitted on ``train``, which `scorer_publish` may serve when a refit
    on all the data would not fit the run's time budget.
    """
    started = time.perf_counter()
    chosen = scorer_fit(train, config, progress=progress)
    config = chosen.tuned(config)
    families, fit_seconds = _fit_with_lightfm(train, config, lightfm_model, progress)
    rated = rated_matrix(train)
    test, users = _test_rows(test_positives, rated)
    n_items, k = rated.shape[1], config.k
    relevant = test[users]
    results: dict = {
        "choice": chosen.choice,
        "scorer": _summary(stack_top_k(families, chosen, train, users, config), relevant, n_items, k),
        "families": {
            name: {
                **_summary(family_top_k(family, rated, users, k), relevant, n_items, k),
                "fit_seconds": fit_seconds.get(name),
            }
            for name, family in families.items()
        },
        "popularity": evaluation.topk_summary(
            evaluation.ranking_metrics(evaluation.popularity_scores(rated), rated, test, k), n_items=n_items, k=k
        ),
        "validation": chosen.report,
    }
    results["seconds"] = round(time.perf_counter() - started, 2)
    logger.info(
        "scorer.evaluated choice=%s scorer_precision=%.4f seconds=%.1f",
        chosen.choice,
        results["scorer"][f"precision_at_{k}"],
        results["seconds"],
    )
    return chosen, results, families


def scorer_publish(
    *,
    artifact_path: str,
    data: TrainingData,
    lightfm_model: FittedModel,
    scorer: ScorerFit,
    config: StackConfig,
    positive_threshold: float,
    progress: Progress | None = None,
    fitted: dict[str, ModelFamily] | None = None,
    version_id: int | None = None,
) -> dict[str, float]:
    """Refit the families on ``data`` (what the served LightFM model saw) and store the stack; returns fit seconds.

    ``fitted``: families already fitted (on the training part, same id maps) to serve instead of
    refitting them; LightFM is always the served ``lightfm_model``. Nothing is fitted then ({}).
    ``version_id``: the version being published; each vector family's items then go into its own
    pgvector space of that version (`family_spaces_publish`), where its candidate source finds them.
    """
    config = scorer.tuned(config)
    if fitted is None:
        families, seconds = _fit_with_lightfm(data, config, lightfm_model, progress)
    else:
        families = {
            name: (LightFmFamily(lightfm_model) if name == VECTOR_FAMILY else fitted[name]) for name in config.families
        }
        seconds = {}
    stack_store(
        artifact_path=artifact_path,
        families=families,
        scorer=scorer,
        items=ItemContext.build(data),
        config=config,
        item_ids=data.item_ids,
        positive_threshold=positive_threshold,
    )
    if version_id is not None:
        family_spaces_publish(version_id=version_id, families=families, progress=progress)
    return seconds
