"""The raw psycopg connection the vector code talks to, with pgvector's types registered.

Django's cursor wrapper cannot bind or return binary pgvector values; the store and the
pgvector index use the underlying psycopg connection of Django's database instead, so they still
share its transaction (and its savepoints) with the ORM. Reads use the serving read connection
(a replica inside a routed serving call, `config.db_router`); writes pass ``write=True``.
"""

from __future__ import annotations

import numpy as np
import psycopg
from django.db import connection

from config.db_router import reading_connection


def raw_connection(*, write: bool = False) -> psycopg.Connection:
    """Django's psycopg connection (opened if needed), with pgvector's adapters registered once:
    the primary's for a write, else the one serving reads use now."""
    django_connection = connection if write else reading_connection()
    django_connection.ensure_connection()
    raw = django_connection.connection
    if not getattr(raw, "_pgvector_registered", False):
        from pgvector.psycopg import register_vector

        register_vector(raw)
        raw._pgvector_registered = True
    return raw


def binary_cursor(raw: psycopg.Connection) -> psycopg.Cursor:
    """A server-side-binding cursor: Django's client-side cursors cannot return binary results,
    and binary vectors load with one ``np.frombuffer`` instead of parsing text."""
    return psycopg.Cursor(raw)


def vectors_stack(values, width: int = 0) -> np.ndarray:
    """Binary pgvector values → one (n, width) float32 array (one copy per row, no text parsing)."""
    if not values:
        return np.zeros((0, width), dtype=np.float32)
    return np.stack([value.to_numpy() for value in values]).astype(np.float32, copy=False)
