"""Model families behind one interface (`base.ModelFamily`); ``FAMILIES`` maps each name to its class.

Modules register themselves here as they are added: one module per family.
"""

from __future__ import annotations

from .als import AlsFamily
from .base import FamilyFitError, ModelFamily, Progress  # noqa: F401  (re-exported: the package is the interface)
from .lightfm import LightFmFamily

FAMILIES: dict[str, type[ModelFamily]] = {
    AlsFamily.name: AlsFamily,
    LightFmFamily.name: LightFmFamily,
}
