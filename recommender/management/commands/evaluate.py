"""Evaluate the whole serving path under the training protocol, on the held-out split.

The served model saw every interaction, so it cannot be judged on held-out data. Instead:

1. re-create the active version's split (same configuration, same seed) from the catalogue;
2. train an evaluation model on the training part with the same hyperparameters;
3. publish it to scratch vector tables under a scratch ModelVersion row (status ``retired``,
   never activatable) and hide the held-out feedback rows, all inside ONE transaction that is
   rolled back at the end: other sessions never see the scratch version or the hidden rows,
   and nothing is left behind even if the command is killed;
4. for every user with a held-out positive run candidates → scoring → re-ranking with only the
   "exclude rated" rule (rated = the training interactions, which is what the database holds
   inside the transaction), and compare with the raw model's exact top-k and the popularity
   baseline, all three excluding the same training interactions.

The last line printed is JSON: ``{"pipeline": {...}, "model": {...}, "popularity": {...}}``;
``pipeline.blend`` holds the blend weights the scorer used and their validation numbers (fitted on
a validation split of the training part, `recommender/blend.py`), or null (``--no-blend``, or no
blend fitted).
While it runs, held-out feedback rows are row-locked by the transaction, so a concurrent
re-rating of exactly those pairs waits for the command to finish.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from catalog.array_selectors import catalog_arrays_fetch, feedback_newest_time, user_seen_item_ids
from catalog.services import feedback_pairs_delete
from recommender.blend import blend_store, blend_train
from recommender.candidates.base import Context
from recommender.ml import evaluation
from recommender.ml.baselines import ease_exact_baseline
from recommender.ml.stack import families_fit, scorer_fit
from recommender.ml.training import fit
from recommender.models import ModelVersion, VersionStatus
from recommender.rerank.engine import rules_apply
from recommender.rerank.models import Rule
from recommender.selectors import active_version, default_training_config
from recommender.services.scorer import scorer_publish, stack_config
from recommender.services.training import hyperparameters_from_config, training_data_build
from recommender.serving.surfaces import ranked_candidates
from recommender.stacking import VECTOR_FAMILY
from recommender.vectors import store
from recommender.vectors.base import AnnFilters

logger = logging.getLogger(__name__)


class _Rollback(Exception):
    """Raised to leave the evaluation transaction after a successful run (everything is undone)."""


class Command(BaseCommand):
    help = "Evaluate candidates → scoring → re-ranking against the raw model and popularity on the held-out split."

    def add_arguments(self, parser):
        parser.add_argument("--k", type=int, default=10)
        parser.add_argument("--json", action="store_true", help="Print only the JSON line.")
        parser.add_argument("--max-users", type=int, default=None, help="Evaluate a random subset (quick runs).")
        parser.add_argument(
            "--no-blend",
            action="store_true",
            help="Serve the evaluation version by the model's score alone (no stack, no blend fitted).",
        )
        parser.add_argument(
            "--ease-baseline",
            action="store_true",
            help="Also measure plain exact EASE (no pruning, λ the best of 50..1000 on a validation split of "
            "the training part) on the same split: the strong external baseline of bench.quality_matrix.",
        )

    def handle(
        self,
        *args,
        k: int,
        json: bool,
        max_users: int | None,
        no_blend: bool = False,
        ease_baseline: bool = False,
        **options,
    ):
        if k < 1:
            raise CommandError("--k must be at least 1.")
        results: dict = {}
        try:
            with transaction.atomic():
                results = self._evaluate(
                    k=k, quiet=json, max_users=max_users, blend=not no_blend, ease_baseline=ease_baseline
                )
                raise _Rollback
        except _Rollback:
            pass
        if not json:
            for name, metrics in results.items():
                self.stdout.write(
                    f"{name:>10}: "
                    + "  ".join(
                        f"{key}={value:.4f}" if isinstance(value, float) else f"{key}={value}"
                        for key, value in metrics.items()
                    )
                )
        self.stdout.write(_json_dumps(results))

    def _say(self, quiet: bool, message: str) -> None:
        if not quiet:
            self.stdout.write(message)

    def _evaluate(
        self, *, k: int, quiet: bool, max_users: int | None, blend: bool = True, ease_baseline: bool = False
    ) -> dict:
        started = time.perf_counter()
        version = active_version()
        snapshot = version.config_snapshot if version else default_training_config().hyperparameters()
        # A version trained before families existed is evaluated with today's default families.
        snapshot = {"families": default_training_config().families, **snapshot}
        params = dataclasses.replace(hyperparameters_from_config(snapshot), early_stopping_patience=None)
        data, _ = training_data_build(catalog_arrays_fetch(), snapshot)
        positives, weights = data.interactions.positives, data.interactions.weights
        if snapshot["split"] == "time" and data.interactions.timestamps is not None:
            split = evaluation.time_split(positives, weights, data.interactions.timestamps, snapshot["test_fraction"])
        else:
            split = evaluation.random_split(positives, weights, snapshot["test_fraction"], snapshot["seed"])
        train = dataclasses.replace(
            data,
            interactions=dataclasses.replace(
                data.interactions, positives=split.train_positives, weights=split.train_weights
            ),
        )
        model = fit(train, params)
        self._say(
            quiet,
            f"evaluation model trained on {split.train_positives.nnz} positives "
            f"({time.perf_counter() - started:.1f} s)",
        )
        # The stack's scorer and searched parameters, and the blend's weights, come from a validation
        # split of the training part only, exactly as training fits them: the held-out split below
        # never influences them.
        stack = stack_config(snapshot, dataclasses.asdict(params)) if blend else None
        scorer_choice = scorer_fit(train, stack) if stack is not None else None
        if scorer_choice is not None and stack is not None:
            stack = scorer_choice.tuned(stack)
            self._say(
                quiet,
                f"scorer: {scorer_choice.choice} ({scorer_choice.report.get('reason')}, "
                f"{time.perf_counter() - started:.1f} s)",
            )
        use_blend = blend and (scorer_choice is None or scorer_choice.choice == f"family:{VECTOR_FAMILY}")
        fitted_blend = blend_train(data=train, params=params) if use_blend else None
        if fitted_blend is not None:
            self._say(
                quiet,
                f"blend weights {fitted_blend.weights.as_dict()} (validation "
                f"{fitted_blend.validation}, {time.perf_counter() - started:.1f} s)",
            )

        # Rated = training interactions: training positives and vetoed pairs (low ratings, dislikes).
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
        n_items = positives.shape[1]

        def exact(scorer) -> dict:
            # The same metrics as training's evaluation, excluding everything rated, not only positives.
            return evaluation.topk_summary(
                evaluation.ranking_metrics(scorer, exclude, evaluated, k), n_items=n_items, k=k
            )

        served = None
        if scorer_choice is not None and stack is not None:
            served = (scorer_choice, stack, float(snapshot["positive_threshold"]))
        results = {
            "pipeline": self._pipeline(
                model=model,
                data=data,
                test=test,
                users=users,
                k=k,
                quiet=quiet,
                blend=fitted_blend,
                train=train,
                stack=served,
            ),
            "model": exact(model.score_items),
            "popularity": exact(evaluation.popularity_scores(split.train_positives)),
        }
        if stack is not None:
            families, seconds = families_fit(train, stack)
            for name, family in families.items():
                results[f"family:{name}"] = {**exact(family.score_items), "fit_seconds": seconds[name]}
        if ease_baseline:
            baseline = ease_exact_baseline(train, exclude=exclude, progress=lambda m: self._say(quiet, m))
            results["ease_exact"] = {**exact(baseline.score_items), **baseline.report}
        if scorer_choice is not None:
            results["pipeline"]["scorer"] = {
                "choice": scorer_choice.choice,
                "reason": scorer_choice.report.get("reason"),
                "ranker_lift": scorer_choice.report.get("ranker_lift"),
                "importances": scorer_choice.report.get("importances"),
                "params": scorer_choice.params,
            }
        # What the pipeline's scorer used, next to its metrics (None: the model's score alone).
        results["pipeline"]["blend"] = (
            {"weights": fitted_blend.weights.as_dict(), "validation": fitted_blend.validation}
            if fitted_blend is not None
            else None
        )
        self._say(quiet, f"evaluated {len(users)} users in {time.perf_counter() - started:.1f} s")
        return results

    def _hide_held_out_feedback(self, data, test: sp.csr_matrix) -> int:
        coo = test.tocoo()
        users = np.asarray(data.user_ids.ids)[coo.row].astype(np.int64).tolist()
        items = np.asarray(data.item_ids.ids)[coo.col].astype(np.int64).tolist()
        return feedback_pairs_delete(user_ids=users, item_ids=items)

    def _pipeline(self, *, model, data, test, users, k, quiet, blend=None, train=None, stack=None) -> dict:
        hidden = self._hide_held_out_feedback(data, test)
        scratch = ModelVersion.objects.create(
            status=VersionStatus.RETIRED, config_snapshot={}, gate_reason="Scratch version of manage.py evaluate."
        )
        with tempfile.TemporaryDirectory() as directory:
            scratch.artifact_path = str(model.save(Path(directory) / "evaluation.npz"))
            scratch.save(update_fields=["artifact_path"])
            if blend is not None:
                blend_store(fitted=blend, data=train, artifact_path=scratch.artifact_path)
            if stack is not None:
                chosen, config, threshold = stack
                scorer_publish(
                    artifact_path=scratch.artifact_path,
                    data=train,
                    lightfm_model=model,
                    scorer=chosen,
                    config=config,
                    positive_threshold=threshold,
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
            self._say(quiet, f"scratch v{scratch.pk} published; {hidden} held-out feedback rows hidden")
            now = feedback_newest_time() or timezone.now()
            rule = Rule(name="exclude rated", kind="filter_seen", params={"include_views": True})
            rule.full_clean()
            user_vectors = model.user_vectors_with_bias()
            top = np.full((len(users), k), -1, dtype=np.int64)  # -1: a slot the pipeline left empty
            started = time.perf_counter()
            for count, user in enumerate(users.tolist()):
                profile_id = int(data.user_ids.ids[user])
                seen = user_seen_item_ids(profile_id=profile_id)
                context = Context(
                    surface="home",
                    now=now,
                    version_id=scratch.pk,
                    profile_id=profile_id,
                    user_vector=store.user_search_vector(version_id=scratch.pk, score_vector=user_vectors[user]),
                    filters=AnnFilters(active_only=True),
                    seen_item_ids=seen,
                )
                result = rules_apply(context=context, ranked=ranked_candidates(context), k=k, rules=[rule])
                listed = model.item_ids.index_of([entry.item_id for entry in result.items], missing=-1)[:k]
                top[count, : len(listed)] = listed
                if not quiet and (count + 1) % 200 == 0:
                    self.stdout.write(
                        f"  pipeline: {count + 1}/{len(users)} users, "
                        f"{1000 * (time.perf_counter() - started) / (count + 1):.1f} ms/user"
                    )
        metrics = evaluation.topk_metrics(top, test[users], k)
        return evaluation.topk_summary({**metrics, "top_k": top}, n_items=test.shape[1], k=k)


def _json_dumps(results: dict) -> str:
    return json.dumps(results, sort_keys=True)
