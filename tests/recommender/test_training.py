"""Training in-process on a planted catalogue: phases, metrics, exact vectors, gate, activation."""

import json
import logging
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command

from recommender.ml.dataset import FeatureShapeError
from recommender.ml.training import FittedModel
from recommender.models import ModelVersion, TrainingConfig, VersionStatus
from recommender.selectors import active_version
from recommender.services.activation import (
    ActivationRefused,
    model_version_activate,
    model_version_rollback,
)
from recommender.services.training import (
    TrainingAlreadyRunning,
    model_training_request,
    model_version_claim,
    model_version_run,
    model_version_train,
)
from recommender.tasks import model_train_task
from recommender.vectors import store
from recommender.vectors.base import AnnFilters
from recommender.vectors.pgvector import PgvectorIndex


def train_inline(config=None) -> ModelVersion:
    """Request a version and train it in this process through the one training sequence."""
    version = model_version_train(version_id=model_training_request(config=config, enqueue=False).pk)
    assert version is not None  # nothing else can claim a version requested without a queue
    return version


def top_items(version: ModelVersion, profile_id: int, k: int) -> list[int]:
    query = store.user_vector_fetch(version_id=version.pk, profile_id=profile_id)
    nearest = PgvectorIndex(version.pk).user_neighbours(query, k=k, filters=AnnFilters(active_only=False))
    return [item_id for item_id, _ in nearest]


@pytest.mark.django_db
def test_training_activates_a_model_that_learns_the_planted_clusters(planted_catalog):
    version = train_inline()

    assert version.status == VersionStatus.ACTIVE
    assert version.metrics["precision_at_10"] > version.baseline_metrics["precision_at_10"]
    assert set(version.phase_seconds) == {"building_dataset", "training", "evaluating", "publishing"}
    for cluster, profiles in planted_catalog.profiles_by_cluster.items():
        own = {item.pk for item in planted_catalog.items_by_cluster[cluster]}
        for profile in profiles:
            assert set(top_items(version, profile.pk, 10)) <= own


@pytest.mark.django_db
def test_published_inner_products_equal_lightfm_predict(planted_catalog):
    version = train_inline()
    model = FittedModel.load(version.artifact_path)
    rng = np.random.default_rng(1)
    users = rng.integers(0, len(model.user_ids), 100)
    items = rng.integers(0, len(model.item_ids), 100)
    item_ids, item_vectors = store.item_vectors_fetch(version_id=version.pk)
    row_of_item = {item_id: row for row, item_id in enumerate(item_ids.tolist())}

    from lightfm import LightFM

    lightfm = LightFM(no_components=model.n_components)
    lightfm._initialize(model.n_components, model.item_features.shape[1], model.user_features.shape[1])
    lightfm.user_embeddings, lightfm.user_biases = model.user_embeddings, model.user_biases
    lightfm.item_embeddings, lightfm.item_biases = model.item_embeddings, model.item_biases
    expected = lightfm.predict(
        users.astype(np.int32),
        items.astype(np.int32),
        user_features=model.user_features,
        item_features=model.item_features,
    )
    for user, item, score in zip(users, items, expected, strict=True):
        user_vector = store.user_vector_fetch(version_id=version.pk, profile_id=int(model.user_ids.ids[user]))
        item_vector = item_vectors[row_of_item[int(model.item_ids.ids[item])]]
        assert abs(float(user_vector @ item_vector) - float(score)) < 1e-4


@pytest.mark.django_db
def test_second_request_is_refused_while_one_is_queued(planted_catalog):
    first = model_training_request(enqueue=False)
    with pytest.raises(TrainingAlreadyRunning, match=f"v{first.pk} is already queued"):
        model_training_request(enqueue=False)


@pytest.mark.django_db
def test_version_worse_than_active_stays_ready_with_reason_and_rollback_works(planted_catalog):
    good = train_inline()
    # LightFM alone: with the other families the run would serve ALS or EASE and be as good as the first.
    weak = TrainingConfig.objects.create(
        name="weak", epochs=1, no_components=2, learning_rate=0.0001, quality_margin=0.0, families="lightfm"
    )
    candidate = train_inline(config=weak)

    assert candidate.status == VersionStatus.READY
    assert candidate.gate_reason  # why it was not activated is shown
    assert active_version().pk == good.pk

    model_version_activate(version=candidate)
    assert active_version().pk == candidate.pk
    assert ModelVersion.objects.get(pk=good.pk).status == VersionStatus.READY
    model_version_rollback()
    assert active_version().pk == good.pk


@pytest.mark.django_db
def test_failed_run_never_touches_the_served_version(planted_catalog):
    good = train_inline()
    broken = TrainingConfig.objects.create(name="no positives", positive_threshold=99.0)
    version = model_training_request(config=broken, enqueue=False)
    version = model_version_claim(version_id=version.pk)
    with pytest.raises(FeatureShapeError, match="no positive interactions"):
        model_version_run(version=version)

    version.refresh_from_db()
    assert version.status == VersionStatus.FAILED
    assert "positive" in version.error
    assert not store.version_tables_exist(version.pk)
    assert active_version().pk == good.pk
    assert len(top_items(good, planted_catalog.profiles_by_cluster[0][0].pk, 5)) == 5


@pytest.mark.django_db
def test_activation_refuses_a_version_whose_index_is_invalid(planted_catalog):
    good = train_inline()
    candidate = train_inline()  # equal quality: gate passes, so make it ready again by activating good
    model_version_activate(version=good)
    from django.db import connection

    with connection.cursor() as cursor:  # what an interrupted CREATE INDEX CONCURRENTLY leaves behind
        cursor.execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass",
            [store.VersionTables(candidate.pk).item_ip_index],
        )
    with pytest.raises(ActivationRefused, match="HNSW"):
        model_version_activate(version=candidate)
    assert active_version().pk == good.pk


@pytest.mark.django_db
def test_the_task_runs_the_training_sequence_once_and_a_second_delivery_does_nothing(planted_catalog):
    version = model_training_request(enqueue=False)

    first = model_train_task.apply(args=[version.pk], task_id="delivery-1", throw=True).get()
    again = model_train_task.apply(args=[version.pk], task_id="delivery-2", throw=True).get()

    assert first == {"version": version.pk, "status": VersionStatus.ACTIVE}
    assert again == {"version": version.pk, "skipped": True}
    version.refresh_from_db()
    assert (version.task_id, version.attempts, version.status) == ("delivery-1", 1, VersionStatus.ACTIVE)
    assert version.gate_reason.startswith("precision_at_10")
    assert model_version_train(version_id=version.pk) is None  # the command's and the tests' path agree


@pytest.mark.django_db
def test_a_failed_task_marks_the_version_failed_logs_it_re_raises_and_skips_the_gate(planted_catalog, caplog):
    good = train_inline()
    broken = TrainingConfig.objects.create(name="no positives", positive_threshold=99.0)
    version = model_training_request(config=broken, enqueue=False)

    with pytest.raises(FeatureShapeError, match="no positive interactions"):
        model_train_task.apply(args=[version.pk], task_id="delivery-1", throw=True)

    version.refresh_from_db()
    assert (version.status, version.task_id, version.gate_reason) == (VersionStatus.FAILED, "delivery-1", "")
    assert "positive" in version.error
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == [
        f"training.failed version={version.pk} phase=training"
    ]
    assert active_version().pk == good.pk


@pytest.mark.django_db
def test_train_inline_command_runs_the_same_sequence(planted_catalog):
    out = StringIO()
    call_command("train", "--inline", "--json", stdout=out, stderr=StringIO())

    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    version = ModelVersion.objects.get(pk=summary["version"])
    assert (summary["status"], version.attempts, version.task_id) == (VersionStatus.ACTIVE, 1, "")
    assert active_version().pk == version.pk
    assert summary["gate_reason"] == version.gate_reason != ""


@pytest.mark.django_db
def test_evaluation_scores_a_bounded_sample_of_users_for_every_scorer(planted_catalog, settings):
    # 60 items: a budget of 12 users' worth of cells evaluates 12 users, for the model, popularity and the stack.
    settings.TRAINING_EVALUATION_BUDGET_CELLS = 12 * 60 + 59
    version = train_inline()

    assert version.metrics["n_users"] == 12
    assert version.baseline_metrics["n_users"] == 12
    assert version.metrics["stack"]["scorer"]["n_users"] == 12
    assert {metrics["n_users"] for metrics in version.metrics["stack"]["families"].values()} == {12}


@pytest.mark.django_db
def test_the_served_models_time_budget_cuts_its_epochs_and_the_refit_follows_the_epochs_run(
    planted_catalog, settings, monkeypatch
):
    # A budget no epoch fits in: one epoch runs (there is always one), and the refit on all the data
    # continues for its share of the epochs that ran (1 × 0.2 / 0.8, rounded up), not of the 30 asked for.
    from recommender.services import training

    settings.TRAINING_LIGHTFM_FIT_SECONDS = 1e-9
    config = TrainingConfig.objects.create(name="budgeted", epochs=30, families="lightfm")
    epochs: list[tuple[int, bool]] = []
    original = training.fit

    def counting_fit(data, params, **kwargs):
        epochs.append((params.epochs, kwargs.get("time_budget_seconds") is not None))
        return original(data, params, **kwargs)

    monkeypatch.setattr(training, "fit", counting_fit)
    version = train_inline(config)

    assert epochs == [(30, True), (1, True)]
    assert version.status == VersionStatus.ACTIVE
    assert version.epoch == version.epochs_total


@pytest.mark.django_db
def test_families_are_refitted_on_all_the_data_unless_the_refit_would_pass_the_run_budget(planted_catalog, settings):
    config = TrainingConfig.objects.create(name="stacked", families="lightfm,als")
    refitted = train_inline(config)
    assert refitted.metrics["stack"]["serving_families"].startswith("refitted on all the data")

    settings.TRAINING_RUN_SECONDS = 0.0  # any refit is predicted past it
    reused = train_inline(config)
    assert reused.metrics["stack"]["serving_families"].startswith("fitted on the training part")
    # The version still serves its stack, with the families it was evaluated with.
    assert reused.status in {VersionStatus.READY, VersionStatus.ACTIVE}
    from recommender.stacking import version_stack

    stack = version_stack(reused.pk)
    assert stack is not None and set(stack.families) == {"lightfm", "als"}


@pytest.mark.django_db
def test_every_phase_records_its_own_peak_memory_and_the_detail_is_cleared_at_the_end(planted_catalog):
    version = train_inline()

    assert set(version.phase_peak_rss_mib) == set(version.phase_seconds)
    # A Python process running numpy and LightFM is never below a few tens of MiB resident.
    assert all(peak >= 30 for peak in version.phase_peak_rss_mib.values()), version.phase_peak_rss_mib
    assert version.phase_detail == ""
