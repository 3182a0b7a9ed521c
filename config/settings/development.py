"""Development settings (the default, ``DJANGO_SETTINGS_MODULE=config.settings.development``): safe
for a laptop, everything embedded.

Each topic lives in its own module; `config.settings.production` layers the hardening on top.
"""

from .api import *  # noqa: F403
from .base import *  # noqa: F403
from .database import *  # noqa: F403
from .demo import *  # noqa: F403
from .recommender import *  # noqa: F403
from .security import *  # noqa: F403
from .tasks import *  # noqa: F403
