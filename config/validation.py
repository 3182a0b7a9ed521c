"""Validation conventions shared by services (which raise) and the API (which answers).

Services raise Django's ``ValidationError``. Most messages mean "this input is malformed" (400);
some mean "this input clashes with data already stored": a taken external id or username
(Django's ``unique`` checks) or an idempotency key bound to another event (``code=CONFLICT``).
The API answers those with 409 Conflict, so a client can tell "fix the request" from "it
exists already" without parsing messages.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError

CONFLICT = "conflict"
CONFLICT_CODES = frozenset({"unique", "unique_together", CONFLICT})


def is_conflict(error: ValidationError) -> bool:
    """True when every message of ``error`` is a clash with stored data (see CONFLICT_CODES)."""
    if hasattr(error, "error_dict"):
        parts = [part for messages in error.error_dict.values() for part in messages]
    else:
        parts = error.error_list
    return bool(parts) and all(part.code in CONFLICT_CODES for part in parts)
