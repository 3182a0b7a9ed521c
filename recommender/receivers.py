"""Signal receivers that keep serving fresh without retraining; connected in `RecommenderConfig.ready`.

Every catalogue signal is sent after commit, so these run once the write is durable:

- feedback recorded or deleted → fold the user's vector in (synchronously, milliseconds) and
  bump that user's cache generation, so the next homepage request reflects it, and queue the
  refresh of their precomputed homepage pool;
- item created or changed → a cold-start vector from its features, and a global cache bump;
- model activated → global cache bump and the related-items and homepage precomputation tasks;
- re-ranking rule, rule set, experiment or variant saved or deleted → global cache bump.

A failed fold-in must not turn a stored rating into an error page: it is logged with its
context and the cache is still invalidated (serving then uses the previous vector).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connection, transaction

from recommender import generations

logger = logging.getLogger(__name__)


def on_feedback_changed(sender, *, profile_id: int, item_id: int, **kwargs) -> None:
    from recommender.services.realtime import user_vector_fold_in

    try:
        user_vector_fold_in(profile_id=profile_id)
    except Exception:
        logger.exception("realtime.fold_in_failed profile=%s item=%s", profile_id, item_id)
    generations.user_generation_bump(profile_id=profile_id)
    _home_refresh_enqueue(profile_id)


def _home_refresh_enqueue(profile_id: int) -> None:
    """Queue the refresh of the user's stored homepage pool, where the active version has them.

    The bump above already made the old row stale (served live until the refresh lands). Many
    events in a burst queue many refreshes; each recomputes at the generation it reads, and the
    upsert keeps the newest, so the burst converges on one fresh row.
    """
    from recommender.selectors import active_version, home_table
    from recommender.services.precompute_tables import table_exists

    try:
        version = active_version()
        if version is None or not table_exists(home_table(version.pk)) or not _broker_serves_this_database():
            return
        from recommender.tasks import home_list_refresh_task

        home_list_refresh_task.apply_async(args=[profile_id])
    except Exception:
        # The row stays stale, so the user is served live: slower, never wrong.
        logger.exception("precompute.home_refresh_enqueue_failed profile=%s", profile_id)


def on_item_changed(sender, *, item_id: int, created: bool = False, **kwargs) -> None:
    from recommender.selectors import active_version
    from recommender.services.precompute import related_precomputed_invalidate_near
    from recommender.services.realtime import item_vector_cold_start
    from recommender.services.vector_spaces import item_spaces_cold_start

    try:
        version = active_version()
        if version is not None and item_vector_cold_start(item_id=item_id, version=version):
            related_precomputed_invalidate_near(version_id=version.pk, item_id=item_id)
    except Exception:
        logger.exception("realtime.item_cold_start_failed item=%s created=%s", item_id, created)
    try:
        version = active_version()
        # Each vector family's space (two-tower's item tower): its own try, so one failing leaves the other.
        for space in [] if version is None else item_spaces_cold_start(item_id=item_id, version=version):
            related_precomputed_invalidate_near(version_id=version.pk, item_id=item_id, space=space)
    except Exception:
        logger.exception("realtime.item_space_cold_start_failed item=%s created=%s", item_id, created)
    generations.global_generation_bump()


def _broker_serves_this_database() -> bool:
    """Whether a queued task would run against this database.

    The default broker lives in the project database named by DATABASE_URL; a process bound to
    another database (a test database) must not send version ids to that broker's workers.
    """
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return True
    from config.celery import app

    url = app.conf.broker_url or ""
    if not url.startswith("sqla+"):
        return True  # Redis or another broker shared by design
    return urlsplit(url).path.lstrip("/") == connection.settings_dict["NAME"]


def on_model_activated(sender, *, version_id: int, **kwargs) -> None:
    generations.global_generation_bump()
    if not _broker_serves_this_database():
        logger.info("precompute.enqueue_skipped version=%s reason=broker_on_another_database", version_id)
        return
    from recommender.tasks import home_lists_precompute_task, related_items_precompute_task

    def enqueue() -> None:
        for task in (related_items_precompute_task, home_lists_precompute_task):
            try:
                task.apply_async(args=[version_id])
            except Exception:
                # The lists are then computed live; the next activation or a manual run retries.
                logger.exception("precompute.enqueue_failed version=%s task=%s", version_id, task.name)

    transaction.on_commit(enqueue)


def on_training_requested(sender, *, version_id: int, **kwargs) -> None:
    """Queue the run of a requested version (after its request committed)."""
    from recommender.services.training import model_version_enqueue_failed, model_version_enqueued
    from recommender.tasks import model_train_task

    try:
        result = model_train_task.apply_async(args=[version_id])
    except Exception as error:
        model_version_enqueue_failed(version_id=version_id, error=error)
        raise
    model_version_enqueued(version_id=version_id, task_id=result.id or "")


def on_rule_changed(sender, **kwargs) -> None:
    # Inside the rule's own transaction: the new generation becomes visible exactly when the rule does.
    generations.global_generation_bump()


def receivers_connect() -> None:
    from django.db.models.signals import post_delete, post_save

    from catalog import signals as catalog_signals
    from recommender.services.activation import model_activated
    from recommender.services.training import training_requested

    catalog_signals.feedback_recorded.connect(on_feedback_changed, dispatch_uid="recommender.fold_in.recorded")
    catalog_signals.feedback_deleted.connect(on_feedback_changed, dispatch_uid="recommender.fold_in.deleted")
    catalog_signals.item_changed.connect(on_item_changed, dispatch_uid="recommender.item_cold_start")
    model_activated.connect(on_model_activated, dispatch_uid="recommender.model_activated")
    training_requested.connect(on_training_requested, dispatch_uid="recommender.training_requested")
    try:
        from recommender.rerank.models import Rule
    except ImportError:
        logger.debug("receivers.rules_absent")
        return
    post_save.connect(on_rule_changed, sender=Rule, dispatch_uid="recommender.rule_saved")
    post_delete.connect(on_rule_changed, sender=Rule, dispatch_uid="recommender.rule_deleted")
    # Rule sets and experiments change what serving applies and how it splits traffic.
    from recommender.experiments.models import Experiment, Variant
    from recommender.rerank.models import RuleSet

    for model in (RuleSet, Experiment, Variant):
        name = model.__name__.lower()
        post_save.connect(on_rule_changed, sender=model, dispatch_uid=f"recommender.{name}_saved")
        post_delete.connect(on_rule_changed, sender=model, dispatch_uid=f"recommender.{name}_deleted")
