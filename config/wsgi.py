import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.development")
application = get_wsgi_application()

# Only processes that serve HTTP through this module (gunicorn, runserver) bound their statements
# and lock waits; workers, imports, index builds and the test process keep long statements.
from django.db.backends.signals import connection_created  # noqa: E402

from config.db_unavailable import web_timeouts_apply  # noqa: E402

connection_created.connect(web_timeouts_apply, dispatch_uid="config.db_unavailable.web_timeouts")
