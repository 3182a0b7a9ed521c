#!/usr/bin/env python
"""Django's command-line utility. Starts the embedded PostgreSQL on first use (see config/embedded_postgres.py)."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.development")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
