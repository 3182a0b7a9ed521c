"""Model families behind one interface (`base.ModelFamily`); ``FAMILIES`` maps each name to its class.

One module per family: a new family is one new module and one line here.
"""

from __future__ import annotations

from .als import AlsFamily
from .base import FamilyFitError, ModelFamily, Progress, VectorFamily  # noqa: F401  (re-exported: the package is the interface)
from .ease import EaseFamily
from .lightfm import LightFmFamily
from .two_tower import TwoTowerFamily

FAMILIES: dict[str, type[ModelFamily]] = {
    family.name: family for family in (LightFmFamily, AlsFamily, EaseFamily, TwoTowerFamily)
}
