"""Which experiment and variant serves a request, and the interleaved list of two variants.

`assignment_for` reads the running experiments from a per-process memo (`experiments.selectors`,
keyed by the ``global`` generation the request read), so assigning costs a hash and no query. A
staff member may force a variant of an experiment for themselves (the "view as" switcher keeps
it in their session). The assignment's ``tag`` goes into the result cache keys, so each variant
keeps its own cached lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from recommender.experiments.assignment import team_draft, unit_bucket, variant_index
from recommender.experiments.selectors import Arm, Plan, live_plan, servable_versions
from recommender.memo import GenerationMemo
from recommender.models import ModelVersion

# The session key of the variants a staff member forced: {experiment id (str): variant key}.
FORCED_VARIANTS_SESSION_KEY = "experiment_forced_variants"


@dataclass(frozen=True)
class Assignment:
    plan: Plan
    arm: Arm | None  # None: the interleaved list of the plan's two arms
    forced: bool = False

    @property
    def tag(self) -> str:
        """What the result cache keys embed: the experiment and the variant (or "il", interleaved)."""
        return f"x{self.plan.experiment_id}.{self.arm.key if self.arm else 'il'}"

    @property
    def variant_key(self) -> str:
        return self.arm.key if self.arm else "interleaved"

    def label(self) -> dict:
        """What a response says about the experiment that served it."""
        return {
            "id": self.plan.experiment_id,
            "name": self.plan.name,
            "variant": self.variant_key,
            "mode": self.plan.mode,
        }


def unit_for(*, profile_id: int | None, visitor: str | None = None) -> str | None:
    """The unit assignment hashes: the user, else an anonymous visitor's cookie id, else none."""
    if profile_id is not None:
        return f"user:{int(profile_id)}"
    if visitor:
        return f"visitor:{visitor}"
    return None


def assignment_for(
    *,
    surface: str,
    unit: str | None,
    generation: int | None,
    now: datetime,
    forced: dict[str, str] | None = None,
) -> Assignment | None:
    """The running experiment's variant for ``unit`` on ``surface``, or None (no experiment, no unit)."""
    if unit is None:
        return None
    plan = live_plan(surface=surface, generation=generation, now=now)
    if plan is None:
        return None
    forced_key = (forced or {}).get(str(plan.experiment_id))
    if forced_key is not None:
        for arm in plan.arms:
            if arm.key == forced_key:
                return Assignment(plan=plan, arm=arm, forced=True)
    if plan.interleaved:
        return Assignment(plan=plan, arm=None)
    return Assignment(plan=plan, arm=plan.arms[variant_index(plan.shares, unit_bucket(plan.salt, unit))])


def _version_read(version_id: int) -> ModelVersion | None:
    return servable_versions().filter(pk=version_id).first()


# A variant's named version, per process for the generation (activations and retirements bump it).
ARM_VERSIONS: GenerationMemo[int, ModelVersion | None] = GenerationMemo("arm_versions", _version_read, max_entries=16)


def arm_version(arm: Arm | None, *, generation: int | None) -> ModelVersion | None:
    """The version a variant names, when it still serves; None: the active version serves it."""
    if arm is None or arm.version_id is None:
        return None
    return ARM_VERSIONS.get(arm.version_id, generation=generation)


def interleaved_payload(first: dict, second: dict, *, arms: tuple[Arm, Arm], k: int, seed: str) -> dict:
    """One payload of two arms' payloads by team-draft interleaving; each item carries its team's variant."""
    entries = {}
    for payload in (second, first):  # the first arm's entry wins for an item both nominate
        for entry in payload["items"]:
            entries[entry["item_id"]] = entry
    merged = team_draft(
        [entry["item_id"] for entry in first["items"]], [entry["item_id"] for entry in second["items"]], k=k, seed=seed
    )
    return {
        "version_id": first["version_id"],
        "rules_applied": first["rules_applied"],
        "items": [
            {**entries[item_id], "variant_id": arms[team].variant_id, "variant": arms[team].key}
            for item_id, team in merged
        ],
    }
