"""Model families behind one interface (`base.ModelFamily`); ``FAMILIES`` maps each name to its class.

Modules register themselves here as they are added: one module per family.
"""

from __future__ import annotations

from .base import FamilyFitError, ModelFamily, Progress  # noqa: F401  (re-exported: the package is the interface)
from .ease import EaseFamily

FAMILIES: dict[str, type[ModelFamily]] = {}
FAMILIES[EaseFamily.name] = EaseFamily
