"""The served stack: trained with every family on a planted catalogue, stored beside the artifact,
read by the homepage, and moved by a rating at the next request whichever scorer serves."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time

import pytest
from django.core.exceptions import ValidationError

from catalog.array_selectors import catalog_arrays_fetch
from catalog.services import feedback_record
from recommender import serving
from recommender.blend import blend_path
from recommender.ml.stack import ScorerFit
from recommender.ml.training import FittedModel
from recommender.models import ModelVersion, TrainingConfig, VersionStatus
from recommender.services.scorer import scorer_publish, stack_config
from recommender.services.training import (
    artifact_path,
    hyperparameters_from_config,
    model_training_request,
    model_version_train,
    training_data_build,
)
from recommender.stacking import stack_dir, version_stack
from tests.recommender.conftest import PlantedCatalog, build_planted_catalog
from tests.recommender.test_training import train_inline

pytestmark = pytest.mark.django_db

FAMILY_SOURCES = {"ease", "als"}


@pytest.fixture
def reproducible(settings):
    # One LightFM thread: Hogwild runs differ run to run, and so would the scorer the run chooses.
    settings.TRAINING_NUM_THREADS = 1


@pytest.fixture
def catalog(db) -> PlantedCatalog:
    # Enough users that the validation split holds more than min_validation_users (50) of them.
    return build_planted_catalog(users_per_cluster=40, items_per_cluster=30, ratings_per_user=12)


def _stack_config(name: str, **fields) -> TrainingConfig:
    return TrainingConfig.objects.create(name=name, **fields)


def _home(profile, k: int = 10):
    return serving.recommend_for_user(profile=profile, k=k)


def _in_cluster(catalog: PlantedCatalog, cluster: int, item_ids) -> int:
    own = {item.pk for item in catalog.items_by_cluster[cluster]}
    return sum(item_id in own for item_id in item_ids)


def test_a_run_with_every_family_stores_its_stack_and_reports_the_choice(catalog, reproducible):
    version = train_inline(config=_stack_config("stack", families="lightfm,als,ease"))

    assert version.status == VersionStatus.ACTIVE
    directory = stack_dir(version.artifact_path)
    manifest = json.loads((directory / "stack.json").read_text())
    assert manifest["families"] == ["lightfm", "als", "ease"]
    files = {path.name for path in directory.iterdir()}
    # LightFM is served from pgvector: the stack stores only the other families.
    assert {"als.npz", "ease.npz", "items.npz", "stack.json"} <= files
    assert "lightfm.npz" not in files
    assert ("ranker.npz" in files) == (manifest["choice"] == "ranker")

    stack = version.metrics["stack"]
    assert stack["choice"] == manifest["choice"]
    assert set(stack["families"]) == {"lightfm", "als", "ease"}
    for metrics in (stack["scorer"], stack["popularity"], *stack["families"].values()):
        assert 0.0 <= metrics["precision_at_10"] <= 1.0
        assert metrics["n_users"] == stack["scorer"]["n_users"] > 0  # every row on the same test users
    validation = stack["validation"]
    assert set(validation["search"]) == {"lightfm", "als", "ease"}
    assert validation["reason"]
    assert validation["validation_users"] >= 50
    # The planted clusters are easy: the chosen scorer beats popularity on the held-out part.
    assert stack["scorer"]["precision_at_10"] > stack["popularity"]["precision_at_10"]


def test_the_homepage_is_served_by_the_stack_and_favours_the_users_cluster(catalog, reproducible):
    version = train_inline(config=_stack_config("stack", families="lightfm,als,ease"))
    stack = version_stack(version.pk)
    assert stack is not None
    assert list(stack.families) == ["lightfm", "als", "ease"]
    for cluster, profiles in catalog.profiles_by_cluster.items():
        for profile in profiles[:5]:
            result = _home(profile)
            assert not result.fallback
            assert result.version_id == version.pk
            item_ids = [entry.item.pk for entry in result.items]
            assert _in_cluster(catalog, cluster, item_ids) == 10
            # The family sources nominated the pool the scorer ordered.
            assert all(FAMILY_SOURCES & set(entry.sources) for entry in result.items)


def _publish_choice(version: ModelVersion, choice: str) -> None:
    """Store the version's stack as if its run had chosen the family ``choice``, through the publishing service."""
    snapshot = version.config_snapshot
    params = dataclasses.replace(hyperparameters_from_config(snapshot), early_stopping_patience=None)
    config = stack_config(snapshot, dataclasses.asdict(params))
    assert config is not None
    data, _ = training_data_build(catalog_arrays_fetch(), snapshot)
    scorer = ScorerFit(choice=choice, ranker=None, report={"reason": "chosen by the test"})
    scorer_publish(
        artifact_path=version.artifact_path,
        data=data,
        lightfm_model=FittedModel.load(version.artifact_path),
        scorer=scorer,
        config=config,
        positive_threshold=float(snapshot["positive_threshold"]),
    )
    stack = version_stack(version.pk)
    assert stack is not None and stack.choice == choice
    assert stack.ranker is None


def test_a_rating_moves_the_homepage_within_a_second_for_every_scorer_that_serves(
    catalog, reproducible, django_capture_on_commit_callbacks
):
    version = train_inline(config=_stack_config("stack", families="lightfm,als,ease"))
    # With one LightFM thread this seeded catalogue's run chooses the learned ranker: the first
    # round serves it as trained; the others store the stack as if the run had chosen each family.
    assert version.metrics["stack"]["choice"] == "ranker"
    profiles = iter(catalog.profiles_by_cluster[0])
    other_cluster = catalog.items_by_cluster[1]
    for choice in ("ranker", "family:lightfm", "family:als", "family:ease"):
        if choice != "ranker":
            _publish_choice(version, choice)
        profile = next(profiles)  # a user no earlier round's ratings touched
        before = [entry.item.pk for entry in _home(profile).items]
        assert _in_cluster(catalog, 0, before) == 10, choice

        started = time.perf_counter()
        with django_capture_on_commit_callbacks(execute=True):
            for item in other_cluster[:6]:
                feedback_record(profile=profile, item=item, kind="rating", value=5)
        result = _home(profile)
        elapsed = time.perf_counter() - started

        after = [entry.item.pk for entry in result.items]
        assert not result.cached and not result.fallback, choice
        assert elapsed < 1.0, (choice, elapsed)
        assert after != before, choice
        # Six of her 18 ratings are the other cluster's now: its items reach her top ten.
        assert _in_cluster(catalog, 1, after) >= 2, (choice, after)
        assert not {item.pk for item in other_cluster[:6]} & set(after), choice


def test_a_lightfm_only_run_has_no_stack_and_serves_as_before(catalog, reproducible):
    version = train_inline(config=_stack_config("lightfm only", families="lightfm"))

    assert version.status == VersionStatus.ACTIVE
    assert not stack_dir(version.artifact_path).exists()
    assert "stack" not in version.metrics
    assert version_stack(version.pk) is None
    profile = catalog.profiles_by_cluster[1][0]
    result = _home(profile)
    assert not result.fallback
    item_ids = [entry.item.pk for entry in result.items]
    assert _in_cluster(catalog, 1, item_ids) == 10
    assert not any(FAMILY_SOURCES & set(entry.sources) for entry in result.items)


def test_a_version_never_inherits_the_stack_or_blend_a_former_version_of_its_id_left(catalog, reproducible):
    # Version ids come back when the database is recreated under the same name (the test database
    # every session), and artifacts are kept per database name: v<id>'s leftovers are on disk.
    stacked = train_inline(config=_stack_config("stack", families="lightfm,als,ease"))
    version = model_training_request(config=_stack_config("lightfm only", families="lightfm"), enqueue=False)
    target = artifact_path(version.pk)
    shutil.copytree(stack_dir(stacked.artifact_path), stack_dir(target), dirs_exist_ok=True)
    leftover = b"a former version's blend"
    blend_path(target).write_bytes(leftover)

    version = model_version_train(version_id=version.pk)

    assert version is not None and version.status == VersionStatus.ACTIVE
    assert not stack_dir(version.artifact_path).exists()
    blend = blend_path(version.artifact_path)
    assert not blend.exists() or blend.read_bytes() != leftover  # none, or the one this run fitted
    assert version_stack(version.pk) is None
    result = _home(catalog.profiles_by_cluster[0][0])
    assert not any(FAMILY_SOURCES & set(entry.sources) for entry in result.items)


@pytest.mark.parametrize(
    ("families", "message"),
    [
        ("lightfm,als,knn", "Unknown model families ['knn']"),
        ("als,ease", "must include lightfm"),
    ],
)
def test_a_config_with_an_unknown_family_or_without_lightfm_fails_validation(families, message):
    config = TrainingConfig(name="bad families", families=families)
    with pytest.raises(ValidationError) as raised:
        config.full_clean()
    assert set(raised.value.message_dict) == {"families"}
    assert message in raised.value.message_dict["families"][0]


@pytest.mark.parametrize("families", ["lightfm,knn", "ease"])
def test_a_training_request_refuses_a_stored_config_with_bad_families(families):
    # Saved without full_clean (a data migration, the shell): the request must refuse it before
    # queueing, not fail minutes later inside the run.
    config = _stack_config("bad families", families=families)
    with pytest.raises(ValidationError, match="famil"):
        model_training_request(config=config, enqueue=False)
    assert not ModelVersion.objects.filter(config=config).exists()


def test_a_run_with_the_two_tower_family_stores_it_and_it_can_serve_the_homepage(catalog, reproducible):
    version = train_inline(config=_stack_config("two tower", families="lightfm,two_tower"))

    assert version.status == VersionStatus.ACTIVE
    assert "two_tower.npz" in {path.name for path in stack_dir(version.artifact_path).iterdir()}
    assert set(version.metrics["stack"]["families"]) == {"lightfm", "two_tower"}
    _publish_choice(version, "family:two_tower")
    for cluster, profiles in catalog.profiles_by_cluster.items():
        for profile in profiles[:3]:
            result = _home(profile)
            assert not result.fallback
            assert _in_cluster(catalog, cluster, [entry.item.pk for entry in result.items]) == 10
