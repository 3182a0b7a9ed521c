"""The steps of an offline evaluation of the serving path on a held-out split.

`manage.py evaluate` runs them once for the active version; the experiment replay
(`replay.py`) runs them for every variant of an experiment on one shared split. The steps:

1. `held_out_build`: re-create a version's split (same configuration, same seed) from the catalogue;
2. `training_part` + `evaluation_model_fit`: train an evaluation model on the training part with a
   version's hyperparameters, and its stack scorer and blend on a validation split of that part;
3. `held_out_feedback_hide` and `scratch_version_publish`: hide the held-out feedback rows and
   publish the evaluation model under a scratch ModelVersion (status ``retired``, never
   activatable) with its own vector tables;
4. `pipeline_top_k`: for every evaluated user run candidates → scoring → re-ranking.

Steps 3 and 4 write: they must run inside ONE transaction that the caller rolls back, so other
sessions never see the scratch versions or the hidden rows and nothing is left behind even if the
process is killed. While it runs, the held-out feedback rows are row-locked by that transaction.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from django.utils import timezone

from catalog.array_selectors import CatalogArrays, catalog_arrays_fetch, feedback_newest_time, user_seen_item_ids
from catalog.services import feedback_pairs_delete
from recommender.blend import blend_store, blend_train
from recommender.candidates.base import Context
from recommender.ml import evaluation
from recommender.ml.blend import BlendModel
from recommender.ml.dataset import TrainingData
from recommender.ml.stack import ScorerFit, StackConfig, scorer_fit
from recommender.ml.training import FittedModel, HyperParameters, fit
from recommender.models import ModelVersion, VersionStatus
from recommender.rerank.engine import rules_apply
from recommender.rerank.models import Rule
from recommender.selectors import default_training_config
from recommender.services.scorer import scorer_publish, stack_config
from recommender.services.training import hyperparameters_from_config, training_data_build
from recommender.serving.surfaces import ranked_candidates
from recommender.stacking import VECTOR_FAMILY
from recommender.vectors import store
from recommender.vectors.base import AnnFilters

Say = Callable[[str], None]


def snapshot_for(version: ModelVersion | None) -> dict:
    """The hyperparameters ``version`` was trained with (None: today's default configuration).

    A version trained before families existed is evaluated with today's default families.
    """
    default = default_training_config()
    snapshot = version.config_snapshot if version is not None else default.hyperparameters()
    return {"families": default.families, **snapshot}


@dataclass(frozen=True)
class HeldOut:
    """One held-out split and the users evaluated on it.

    ``exclude`` (rated in training: training positives and vetoed pairs) and ``test`` (held-out
    positives not rated in training) are binary float64 csr of shape (n_users, n_items);
    ``users`` are the row indices evaluated (sorted int64), ``evaluated`` is ``test`` restricted
    to those rows.
    """

    data: TrainingData
    split: evaluation.Split
    exclude: sp.csr_matrix
    test: sp.csr_matrix
    users: np.ndarray
    evaluated: sp.csr_matrix

    @property
    def n_items(self) -> int:
        return self.test.shape[1]

    def exact(self, scorer, k: int) -> dict:
        """A scorer's exact top-k on the evaluated users: the same metrics as training's evaluation,
        excluding everything rated, not only positives."""
        return evaluation.topk_summary(
            evaluation.ranking_metrics(scorer, self.exclude, self.evaluated, k), n_items=self.n_items, k=k
        )


def held_out_build(snapshot: dict, *, max_users: int | None, arrays: CatalogArrays | None = None) -> HeldOut:
    """The split ``snapshot`` defines, over the catalogue's ``arrays`` (default: read them now)."""
    data, _ = training_data_build(arrays if arrays is not None else catalog_arrays_fetch(), snapshot)
    positives, weights = data.interactions.positives, data.interactions.weights
    if snapshot["split"] == "time" and data.interactions.timestamps is not None:
        split = evaluation.time_split(positives, weights, data.interactions.timestamps, snapshot["test_fraction"])
    else:
        split = evaluation.random_split(positives, weights, snapshot["test_fraction"], snapshot["seed"])
    exclude = ((split.train_positives != 0) + (data.interactions.negatives != 0)).astype(np.float64).tocsr()
    test = (split.test_positives != 0).astype(np.float64).tocsr()
    test = (test - test.multiply(exclude)).tocsr()
    test.eliminate_zeros()
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    evaluated = test
    if max_users is not None and len(users) > max_users:
        users = np.sort(np.random.default_rng(0).choice(users, max_users, replace=False))
        # ranking_metrics evaluates every row with a held-out positive: keep the chosen users' rows only
        # (all held-out rows are still hidden from the pipeline's database).
        chosen = np.zeros(test.shape[0])
        chosen[users] = 1.0
        evaluated = (sp.diags(chosen) @ test).tocsr()
        evaluated.eliminate_zeros()
    return HeldOut(data=data, split=split, exclude=exclude, test=test, users=users, evaluated=evaluated)


def _without_pairs(matrix: sp.csr_matrix, pairs: sp.csr_matrix) -> sp.csr_matrix:
    """``matrix`` without the entries where ``pairs`` is non-zero (order of the rest kept)."""
    matrix = sp.csr_matrix(matrix)
    matrix.sort_indices()
    coo = matrix.tocoo()
    keep = np.asarray(pairs[coo.row, coo.col]).ravel() == 0
    return sp.csr_matrix(
        (coo.data[keep], (coo.row[keep], coo.col[keep])), shape=matrix.shape, dtype=matrix.dtype
    ).tocsr()


def training_part(data: TrainingData, held_out: HeldOut) -> TrainingData:
    """``data`` (built from the same catalogue arrays as ``held_out``, with any snapshot) without the
    held-out pairs: for the split's own snapshot exactly its training part."""
    same_ids = np.array_equal(data.user_ids.ids, held_out.data.user_ids.ids) and np.array_equal(
        data.item_ids.ids, held_out.data.item_ids.ids
    )
    if not same_ids:
        raise ValueError("training_part needs data built from the same catalogue arrays as the split.")
    held = held_out.split.test_positives
    interactions = dataclasses.replace(
        data.interactions,
        positives=_without_pairs(data.interactions.positives, held),
        weights=_without_pairs(data.interactions.weights, held),
    )
    return dataclasses.replace(data, interactions=interactions)


@dataclass(frozen=True)
class EvaluationModel:
    """A model trained on the training part, with the stack scorer and blend it serves with."""

    snapshot: dict
    params: HyperParameters
    train: TrainingData
    model: FittedModel
    stack: StackConfig | None  # tuned by the scorer choice; None: the model's score (or the blend)
    scorer_choice: ScorerFit | None
    blend: BlendModel | None


def evaluation_model_fit(*, snapshot: dict, train: TrainingData, blend: bool, say: Say) -> EvaluationModel:
    """Train on ``train`` with ``snapshot``'s hyperparameters, then its stack scorer and blend.

    The stack's scorer and searched parameters, and the blend's weights, come from a validation
    split of the training part only, exactly as training fits them: the held-out split never
    influences them. ``blend=False``: serve by the model's score alone (no stack, no blend).
    """
    started = time.perf_counter()
    params = dataclasses.replace(hyperparameters_from_config(snapshot), early_stopping_patience=None)
    model = fit(train, params)
    say(
        f"evaluation model trained on {train.interactions.positives.nnz} positives "
        f"({time.perf_counter() - started:.1f} s)"
    )
    stack = stack_config(snapshot, dataclasses.asdict(params)) if blend else None
    scorer_choice = scorer_fit(train, stack) if stack is not None else None
    if scorer_choice is not None and stack is not None:
        stack = scorer_choice.tuned(stack)
        say(
            f"scorer: {scorer_choice.choice} ({scorer_choice.report.get('reason')}, "
            f"{time.perf_counter() - started:.1f} s)"
        )
    use_blend = blend and (scorer_choice is None or scorer_choice.choice == f"family:{VECTOR_FAMILY}")
    fitted_blend = blend_train(data=train, params=params) if use_blend else None
    if fitted_blend is not None:
        say(
            f"blend weights {fitted_blend.weights.as_dict()} (validation "
            f"{fitted_blend.validation}, {time.perf_counter() - started:.1f} s)"
        )
    return EvaluationModel(
        snapshot=snapshot,
        params=params,
        train=train,
        model=model,
        stack=stack,
        scorer_choice=scorer_choice,
        blend=fitted_blend,
    )


def held_out_feedback_hide(held_out: HeldOut) -> int:
    """Delete the held-out feedback rows (inside the caller's rolled-back transaction)."""
    coo = held_out.test.tocoo()
    users = np.asarray(held_out.data.user_ids.ids)[coo.row].astype(np.int64).tolist()
    items = np.asarray(held_out.data.item_ids.ids)[coo.col].astype(np.int64).tolist()
    return feedback_pairs_delete(user_ids=users, item_ids=items)


def scratch_version_publish(*, fitted: EvaluationModel, directory: Path, reason: str) -> ModelVersion:
    """A scratch version serving ``fitted``: artifacts in ``directory``, vectors in its own tables.

    ``directory`` must outlive the pipeline runs (the scorer reads the artifacts).
    """
    scratch = ModelVersion.objects.create(status=VersionStatus.RETIRED, config_snapshot={}, gate_reason=reason)
    model = fitted.model
    scratch.artifact_path = str(model.save(directory / f"evaluation-{scratch.pk}.npz"))
    scratch.save(update_fields=["artifact_path"])
    if fitted.blend is not None:
        blend_store(fitted=fitted.blend, data=fitted.train, artifact_path=scratch.artifact_path)
    if fitted.scorer_choice is not None and fitted.stack is not None:
        scorer_publish(
            artifact_path=scratch.artifact_path,
            data=fitted.train,
            lightfm_model=model,
            scorer=fitted.scorer_choice,
            config=fitted.stack,
            positive_threshold=float(fitted.snapshot["positive_threshold"]),
            version_id=scratch.pk,
        )
    _, item_embeddings = model.item_representations()
    store.vectors_publish(
        version_id=scratch.pk,
        item_ids=np.asarray(model.item_ids.ids, dtype=np.int64),
        item_score_vectors=model.item_vectors_with_bias(),
        item_embeddings=item_embeddings,
        user_ids=np.asarray(model.user_ids.ids, dtype=np.int64),
        user_score_vectors=model.user_vectors_with_bias(),
    )
    return scratch


def exclude_rated_rule() -> Rule:
    """The "exclude rated" rule every offline run applies: rated = the training interactions,
    which is what the database holds once the held-out rows are hidden."""
    rule = Rule(name="exclude rated", kind="filter_seen", params={"include_views": True})
    rule.full_clean()
    return rule


def pipeline_top_k(
    *,
    version_id: int,
    model: FittedModel,
    held_out: HeldOut,
    k: int,
    rules: Sequence[Rule],
    sizes: dict[str, int] | None = None,
    scorer: str = "model",
    say: Say,
    label: str = "pipeline",
) -> np.ndarray:
    """The home pipeline's top k for every evaluated user, as item indices (int64, (n_users, k), -1: empty).

    Candidates (``sizes``: per source, None: the configured sizes) → ``scorer`` (`ranking.SCORERS`;
    "model" is the scorer of ``version_id``) → ``rules`` in the order given.
    """
    now = feedback_newest_time() or timezone.now()
    data = held_out.data
    user_vectors = model.user_vectors_with_bias()
    top = np.full((len(held_out.users), k), -1, dtype=np.int64)  # -1: a slot the pipeline left empty
    started = time.perf_counter()
    for count, user in enumerate(held_out.users.tolist()):
        profile_id = int(data.user_ids.ids[user])
        context = Context(
            surface="home",
            now=now,
            version_id=version_id,
            profile_id=profile_id,
            user_vector=store.user_search_vector(version_id=version_id, score_vector=user_vectors[user]),
            filters=AnnFilters(active_only=True),
            seen_item_ids=user_seen_item_ids(profile_id=profile_id),
        )
        result = rules_apply(context=context, ranked=ranked_candidates(context, sizes, scorer), k=k, rules=list(rules))
        listed = model.item_ids.index_of([entry.item_id for entry in result.items], missing=-1)[:k]
        top[count, : len(listed)] = listed
        if (count + 1) % 200 == 0:
            say(
                f"  {label}: {count + 1}/{len(held_out.users)} users, "
                f"{1000 * (time.perf_counter() - started) / (count + 1):.1f} ms/user"
            )
    return top


def pipeline_summary(top: np.ndarray, held_out: HeldOut, k: int) -> dict:
    """precision, recall, NDCG at k and coverage of the lists ``pipeline_top_k`` returned."""
    metrics = evaluation.topk_metrics(top, held_out.test[held_out.users], k)
    return evaluation.topk_summary({**metrics, "top_k": top}, n_items=held_out.n_items, k=k)
