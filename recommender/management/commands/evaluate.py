"""Evaluate the whole serving path under the training protocol, on the held-out split.

The served model saw every interaction, so it cannot be judged on held-out data. Instead
(the steps are `recommender/services/offline_evaluation.py`):

1. re-create the active version's split (same configuration, same seed) from the catalogue;
2. train an evaluation model on the training part with the same hyperparameters;
3. publish it to scratch vector tables under a scratch ModelVersion row (status ``retired``,
   never activatable) and hide the held-out feedback, all inside ONE transaction that is
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

``--experiment NAME`` replays an experiment instead (`recommender/services/replay.py`): every
variant's home pipeline on one shared held-out split, side by side, in the same rolled-back
transaction; the last line is ``{"experiment": NAME, "variants": {key: metrics}, "control": key}``.
While it runs, held-out feedback rows are row-locked by the transaction, so a concurrent
re-rating of exactly those pairs waits for the command to finish.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from recommender.experiments.models import Experiment
from recommender.ml import evaluation
from recommender.ml.baselines import ease_exact_baseline
from recommender.ml.stack import families_fit
from recommender.selectors import active_version
from recommender.services.offline_evaluation import (
    evaluation_model_fit,
    exclude_rated_rule,
    held_out_build,
    held_out_feedback_hide,
    pipeline_summary,
    pipeline_top_k,
    scratch_version_publish,
    snapshot_for,
    training_part,
)
from recommender.services.replay import ReplayError, experiment_replay, replay_table

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
        parser.add_argument(
            "--experiment",
            default=None,
            help="Replay this experiment: every variant's home pipeline on one held-out split, side by side.",
        )

    def handle(
        self,
        *args,
        k: int,
        json: bool,
        max_users: int | None,
        no_blend: bool = False,
        ease_baseline: bool = False,
        experiment: str | None = None,
        **options,
    ):
        if k < 1:
            raise CommandError("--k must be at least 1.")
        if experiment is not None:
            if ease_baseline:
                raise CommandError("--ease-baseline does not apply to --experiment.")
            self._replay(name=experiment, k=k, quiet=json, max_users=max_users, blend=not no_blend)
            return
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

    def _replay(self, *, name: str, k: int, quiet: bool, max_users: int | None, blend: bool) -> None:
        found = Experiment.objects.filter(name=name).first()
        if found is None:
            known = ", ".join(repr(n) for n in Experiment.objects.order_by("name").values_list("name", flat=True))
            raise CommandError(f"No experiment is named {name!r}; known: {known or 'none'}.")
        started = time.perf_counter()
        try:
            with transaction.atomic():
                replay = experiment_replay(
                    experiment=found, k=k, max_users=max_users, blend=blend, say=lambda m: self._say(quiet, m)
                )
                raise _Rollback
        except ReplayError as error:
            raise CommandError(str(error)) from error
        except _Rollback:
            pass
        if not quiet:
            self.stdout.write(replay_table(replay))
            for note in replay.notes():
                self.stdout.write(note)
            self.stdout.write(f"replayed {len(replay.variants)} variants in {time.perf_counter() - started:.1f} s")
        self.stdout.write(replay.json_line())

    def _say(self, quiet: bool, message: str) -> None:
        if not quiet:
            self.stdout.write(message)

    def _evaluate(
        self, *, k: int, quiet: bool, max_users: int | None, blend: bool = True, ease_baseline: bool = False
    ) -> dict:
        started = time.perf_counter()

        def say(message: str) -> None:
            self._say(quiet, message)

        snapshot = snapshot_for(active_version())
        held_out = held_out_build(snapshot, max_users=max_users)
        train = training_part(held_out.data, held_out)
        fitted = evaluation_model_fit(snapshot=snapshot, train=train, blend=blend, say=say)
        hidden = held_out_feedback_hide(held_out)
        with tempfile.TemporaryDirectory() as directory:
            scratch = scratch_version_publish(
                fitted=fitted, directory=Path(directory), reason="Scratch version of manage.py evaluate."
            )
            say(f"scratch v{scratch.pk} published; {hidden} held-out feedback rows hidden")
            top = pipeline_top_k(
                version_id=scratch.pk, model=fitted.model, held_out=held_out, k=k, rules=[exclude_rated_rule()], say=say
            )
        results = {
            "pipeline": pipeline_summary(top, held_out, k),
            "model": held_out.exact(fitted.model.score_items, k),
            "popularity": held_out.exact(evaluation.popularity_scores(held_out.split.train_positives), k),
        }
        if fitted.stack is not None:
            families, seconds = families_fit(train, fitted.stack)
            for name, family in families.items():
                results[f"family:{name}"] = {**held_out.exact(family.score_items, k), "fit_seconds": seconds[name]}
        if ease_baseline:
            baseline = ease_exact_baseline(train, exclude=held_out.exclude, progress=say)
            results["ease_exact"] = {**held_out.exact(baseline.score_items, k), **baseline.report}
        scorer_choice = fitted.scorer_choice
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
            {"weights": fitted.blend.weights.as_dict(), "validation": fitted.blend.validation}
            if fitted.blend is not None
            else None
        )
        say(f"evaluated {len(held_out.users)} users in {time.perf_counter() - started:.1f} s")
        return results


def _json_dumps(results: dict) -> str:
    return json.dumps(results, sort_keys=True)
