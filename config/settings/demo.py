"""The demo stack behind `make run`: its admin account, its demo data and its port.

Read by `manage.py bootstrap_demo` and `manage.py run_stack`; a production deployment never needs them.
"""

from config.env import env_int, env_str

# The superuser bootstrap_demo creates. Without a password one is generated and printed once.
ADMIN_USERNAME = env_str("ADMIN_USERNAME", "admin")
ADMIN_PASSWORD = env_str("ADMIN_PASSWORD")

# A MovieLens folder (ml-100k, or the CSV family) for the demo catalogue; tests and benchmarks use it too.
MOVIELENS_DIR = env_str("MOVIELENS_DIR")

# The port run_stack serves on when --port is not given: `PORT=8001 make run`.
RUN_STACK_PORT = env_int("PORT", 8000)
