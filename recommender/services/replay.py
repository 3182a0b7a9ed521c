"""Offline replay of an experiment before launch (`manage.py evaluate --experiment NAME`).

Every variant runs the home pipeline on ONE held-out split (the active version's, or the first
variant's version's when none is active), for the same users, with what it would serve: its
version's hyperparameters (one evaluation model per distinct snapshot, shared by the variants
that name it), its rule set's rules plus "exclude rated" (always, first, so held-out items are
judged fairly), and its candidate sizes. Steps come from `offline_evaluation.py`; like there,
the caller runs this inside one transaction and rolls it back.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from catalog.array_selectors import catalog_arrays_fetch
from recommender.experiments.models import Experiment, ExperimentStatus, Variant
from recommender.experiments.selectors import experiment_variants
from recommender.models import ModelVersion
from recommender.rerank.selectors import rules_for_surface
from recommender.selectors import active_version
from recommender.services.training import training_data_build

from .offline_evaluation import (
    EvaluationModel,
    Say,
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

DEFAULT_QUALITY_MARGIN = 0.02
COMPARED = ("precision", "recall", "ndcg")


class ReplayError(Exception):
    """The experiment cannot be replayed as it is (the message says why)."""


@dataclass(frozen=True)
class VariantReplay:
    key: str
    is_control: bool
    version_id: int
    version_is_active: bool
    rule_set: str | None
    candidate_sizes: dict | None
    scorer: str
    quality_margin: float
    metrics: dict
    vs_control: dict = field(default_factory=dict)
    worse_than: str | None = None  # the variant it is clearly worse than: the control, or for the control the best

    @property
    def clearly_worse(self) -> bool:
        return self.worse_than is not None


@dataclass(frozen=True)
class Replay:
    experiment: str
    status: str
    surface: str
    k: int
    variants: list[VariantReplay]
    control: str

    def notes(self) -> list[str]:
        notes = []
        if self.status != ExperimentStatus.DRAFT:
            notes.append(f"Experiment {self.experiment!r} is {self.status}, not a draft: its users may see it already.")
        if self.surface == "related":
            notes.append("The replay measures the homepage pipeline; this experiment runs on related items only.")
        key = f"precision_at_{self.k}"
        by_key = {variant.key: variant for variant in self.variants}
        for variant in self.variants:
            if variant.worse_than is not None:
                other = by_key[variant.worse_than]
                role = "control " if other.is_control else ""
                notes.append(
                    f"Variant {variant.key} is clearly worse: its {key} {variant.metrics[key]:.4f} is more than "
                    f"{variant.quality_margin:.4f} below {role}{other.key}'s {other.metrics[key]:.4f}."
                )
        return notes

    def json_line(self) -> str:
        variants = {
            v.key: {
                **v.metrics,
                "vs_control": v.vs_control,
                "clearly_worse": v.clearly_worse,
                "worse_than": v.worse_than,
                "version_id": v.version_id,
                "rule_set": v.rule_set,
                "candidate_sizes": v.candidate_sizes,
                "scorer": v.scorer,
                "is_control": v.is_control,
            }
            for v in self.variants
        }
        return json.dumps(
            {"experiment": self.experiment, "variants": variants, "control": self.control}, sort_keys=True
        )


def _version_of(variant: Variant, active: ModelVersion | None) -> ModelVersion:
    version = variant.version or active
    if version is None:
        raise ReplayError(f"Variant {variant.key} serves the active version, and no version is active.")
    return version


def _snapshot_key(snapshot: dict) -> str:
    return json.dumps(snapshot, sort_keys=True, default=str)


def experiment_replay(*, experiment: Experiment, k: int, max_users: int | None, blend: bool, say: Say) -> Replay:
    """Each variant's offline metrics on one shared held-out split, and which are clearly worse."""
    variants = experiment_variants(experiment)
    if not variants:
        raise ReplayError(f"Experiment {experiment.name!r} has no variants.")
    active = active_version()
    versions = {variant.key: _version_of(variant, active) for variant in variants}
    reference = active if active is not None else versions[variants[0].key]
    arrays = catalog_arrays_fetch()
    reference_snapshot = snapshot_for(reference)
    held_out = held_out_build(reference_snapshot, max_users=max_users, arrays=arrays)
    say(f"split of v{reference.pk}: {len(held_out.users)} users evaluated")

    fitted: dict[str, EvaluationModel] = {}  # snapshot key -> its evaluation model, trained once
    for variant in variants:
        snapshot = snapshot_for(versions[variant.key])
        key = _snapshot_key(snapshot)
        if key in fitted:
            continue
        data = held_out.data if key == _snapshot_key(reference_snapshot) else training_data_build(arrays, snapshot)[0]
        say(f"variant {variant.key}: training on the hyperparameters of v{versions[variant.key].pk}")
        fitted[key] = evaluation_model_fit(snapshot=snapshot, train=training_part(data, held_out), blend=blend, say=say)

    hidden = held_out_feedback_hide(held_out)
    say(f"{hidden} held-out feedback rows hidden; {len(fitted)} evaluation model(s)")
    results: list[tuple[Variant, dict, float]] = []
    with tempfile.TemporaryDirectory() as directory:
        scratch = {
            key: scratch_version_publish(
                fitted=model, directory=Path(directory), reason="Scratch version of manage.py evaluate --experiment."
            )
            for key, model in fitted.items()
        }
        for variant in variants:
            snapshot = snapshot_for(versions[variant.key])
            key = _snapshot_key(snapshot)
            rules = [
                exclude_rated_rule(),
                *rules_for_surface(surface="home", rule_set_id=variant.rule_set_id),
            ]
            top = pipeline_top_k(
                version_id=scratch[key].pk,
                model=fitted[key].model,
                held_out=held_out,
                k=k,
                rules=rules,
                sizes=dict(variant.candidate_sizes) if variant.candidate_sizes else None,
                scorer=variant.scorer,
                say=say,
                label=f"variant {variant.key}",
            )
            margin = float(snapshot.get("quality_margin", DEFAULT_QUALITY_MARGIN))
            results.append((variant, pipeline_summary(top, held_out, k), margin))
    return _compared(experiment, results, versions=versions, k=k)


def _compared(
    experiment: Experiment,
    results: list[tuple[Variant, dict, float]],
    *,
    versions: dict[str, ModelVersion],
    k: int,
) -> Replay:
    control = next((variant for variant, _, _ in results if variant.is_control), results[0][0])
    control_metrics = next(metrics for variant, metrics, _ in results if variant.pk == control.pk)
    names = [f"{name}_at_{k}" for name in COMPARED] + ["coverage"]
    precision = f"precision_at_{k}"
    others = [(variant, metrics) for variant, metrics, _ in results if variant.pk != control.pk]
    best_other = max(others, key=lambda pair: pair[1][precision], default=None)
    replayed = []
    for variant, metrics, margin in results:
        # A variant is judged against the control; the control against the best other variant.
        rival = best_other if variant.pk == control.pk else (control, control_metrics)
        worse = rival is not None and metrics[precision] < rival[1][precision] - margin
        replayed.append(
            VariantReplay(
                key=variant.key,
                is_control=variant.pk == control.pk,
                version_id=versions[variant.key].pk,
                version_is_active=variant.version_id is None,
                rule_set=variant.rule_set.name if variant.rule_set is not None else None,
                candidate_sizes=variant.candidate_sizes,
                scorer=variant.scorer,
                quality_margin=margin,
                metrics=metrics,
                vs_control={name: metrics[name] - control_metrics[name] for name in names},
                worse_than=rival[0].key if worse and rival is not None else None,
            )
        )
    return Replay(
        experiment=experiment.name,
        status=experiment.status,
        surface=experiment.surface,
        k=k,
        variants=replayed,
        control=control.key,
    )


def replay_table(replay: Replay) -> str:
    """One row per variant: what it serves, its metrics, and their difference to the control."""
    k = replay.k
    names = [f"{name}_at_{k}" for name in COMPARED] + ["coverage"]
    heads = ["P", "R", "NDCG"]
    header = (
        f"{'variant':<10} {'control':<7} {'version':<12} {'rule set':<16} {'pool':<18} "
        + " ".join(f"{h + '@' + str(k):>8}" for h in heads)
        + f" {'coverage':>8} "
        + " ".join(f"{'Δ' + h:>8}" for h in heads)
        + f" {'Δcov':>8}  worse"
    )
    lines = [header]
    for v in replay.variants:
        version = f"v{v.version_id}" + (" (active)" if v.version_is_active else "")
        pool = ",".join(f"{s}:{n}" for s, n in sorted((v.candidate_sizes or {}).items())) or "configured"
        pool += "" if v.scorer == "model" else f" by {v.scorer}"
        lines.append(
            f"{v.key:<10} {'yes' if v.is_control else '':<7} {version:<12} {(v.rule_set or 'in force'):<16} "
            f"{pool:<18} "
            + " ".join(f"{v.metrics[name]:>8.4f}" for name in names)
            + " "
            + " ".join(f"{v.vs_control[name]:>+8.4f}" for name in names)
            + f"  {'CLEARLY WORSE than ' + v.worse_than if v.worse_than else ''}"
        )
    return "\n".join(lines)
