"""Celery: broker, results, queues and time limits.

The default broker is the project's own PostgreSQL through kombu's SQLAlchemy transport, so no
extra service is needed; `CELERY_BROKER_URL=redis://…` switches to Redis (docker-compose does).
"""

from config.env import env_bool, env_str

from .database import DATABASE_URL


def _sqlalchemy_url(database_url: str) -> str:
    _scheme, rest = database_url.split("://", 1)
    return f"sqla+postgresql+psycopg://{rest}"


CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or _sqlalchemy_url(DATABASE_URL)
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_CACHE_BACKEND = "django-cache"
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# kombu's SQLAlchemy transport hands its transport options to create_engine, so none are set here.
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {}
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"recommender.tasks.model_train_task": {"queue": "training"}}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Tests and one-off scripts may run tasks inline; the real worker test turns this off.
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
