"""`manage.py bootstrap_demo`: the admin account and demo catalogue behind `make run`."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from catalog.demo_data import SyntheticSize, admin_ensure, default_download_dir, demo_catalog_load


class Command(BaseCommand):
    help = (
        "Create the admin superuser (ADMIN_USERNAME / ADMIN_PASSWORD) and, when the catalogue is "
        "empty, load demo data: MOVIELENS_DIR, else ml-latest-small, else a synthetic catalogue."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--movielens-dir", default=None, help="MovieLens 100k folder (default: the MOVIELENS_DIR setting)."
        )
        parser.add_argument("--download-dir", default=None, help="Where ml-latest-small goes (default var/demo).")
        parser.add_argument("--offline", action="store_true", help="Do not try to download ml-latest-small.")
        parser.add_argument("--synthetic-users", type=int, default=SyntheticSize.users)
        parser.add_argument("--synthetic-items", type=int, default=SyntheticSize.items)
        parser.add_argument("--synthetic-interactions", type=int, default=SyntheticSize.interactions)

    def handle(self, *args, **options):
        admin = admin_ensure(username=settings.ADMIN_USERNAME, password=settings.ADMIN_PASSWORD)
        if not admin.created:
            self.stdout.write(f"Admin user {admin.username!r} already exists: left unchanged.")
        elif admin.generated_password:
            self.stdout.write(
                self.style.WARNING(
                    f"Created admin user {admin.username!r} with generated password: {admin.generated_password}\n"
                    "  It is shown only this once. Set ADMIN_PASSWORD to choose your own."
                )
            )
        else:
            self.stdout.write(f"Created admin user {admin.username!r} with the password from ADMIN_PASSWORD.")

        movielens_dir = options["movielens_dir"]
        if movielens_dir is None:
            movielens_dir = settings.MOVIELENS_DIR
        source = demo_catalog_load(
            movielens_dir=movielens_dir,
            download_dir=Path(options["download_dir"]) if options["download_dir"] else default_download_dir(),
            synthetic_size=SyntheticSize(
                users=options["synthetic_users"],
                items=options["synthetic_items"],
                interactions=options["synthetic_interactions"],
            ),
            allow_download=not options["offline"],
            out=self.stdout,
        )
        self.stdout.write(self.style.SUCCESS(f"bootstrap_demo done (catalogue source: {source})."))
