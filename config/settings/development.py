"""Development settings (the default, ``DJANGO_SETTINGS_MODULE=config.settings.development``): safe
for a laptop, everything embedded.

Each topic lives in its own module; `config.settings.production` layers the hardening on top.
"""

# The order is the layering (a later module's names win, and each module runs in this order: the
# embedded PostgreSQL starts in `database`), so isort must not sort these.
# isort: off
from .base import *
from .database import *
from .tasks import *
from .security import *
from .api import *
from .recommender import *
from .demo import *
# isort: on
