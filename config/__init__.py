"""Project configuration: settings, URLs, the Celery app and the embedded PostgreSQL bootstrap."""

from .celery import app as celery_app

__all__ = ["celery_app"]
