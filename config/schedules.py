"""Every periodic schedule of the project, in one place.

They are written into django-celery-beat's tables after `migrate` (see recommender/apps.py) only
when missing, so edits made in the admin (interval, enabled) are kept.
"""

PERIODIC_TASKS = [
    # name, task, every (seconds), enabled by default
    ("Retrain the default model", "recommender.tasks.model_train_scheduled_task", 24 * 3600, True),
    ("Fail lost training runs and retire old versions", "recommender.tasks.model_versions_maintain_task", 300, True),
]


def periodic_tasks_sync() -> int:
    """Create the missing schedules; returns how many were created."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    created = 0
    for name, task, seconds, enabled in PERIODIC_TASKS:
        if PeriodicTask.objects.filter(name=name).exists():
            continue
        interval, _ = IntervalSchedule.objects.get_or_create(every=seconds, period=IntervalSchedule.SECONDS)
        PeriodicTask.objects.create(name=name, task=task, interval=interval, enabled=enabled)
        created += 1
    return created
