"""The Celery app. Tasks live in each app's `tasks.py`; schedules live in `config/schedules.py`."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.development")

app = Celery("recsys")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Tasks in a subpackage are not found by the default discovery (it looks for <app>.tasks only).
app.autodiscover_tasks(["recommender.dashboard"])
