"""Security settings shared by every environment: request limits, caches, login lockout, proxies.

`production.py` layers the transport hardening (HTTPS, HSTS, secure cookies) on top; the API's
throttle rates live with the rest of DRF's settings in `api.py`. docs/security.md lists each
protection with its setting and its test.
"""

from urllib.parse import urlsplit

from config.env import env_int, env_str

# Request bodies above this many bytes (uploaded files excepted) are refused: the API answers a
# JSON 413 before reading them (config.middleware). 2.5 MB holds a full feedback batch many times.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2_621_440)
DATA_UPLOAD_MAX_NUMBER_FIELDS = env_int("DATA_UPLOAD_MAX_NUMBER_FIELDS", 1000)

# Sign-in lockout (config.lockout): this many failures for one username from one address lock
# that pair out for LOGIN_LOCKOUT_SECONDS.
LOGIN_MAX_FAILURES = env_int("LOGIN_MAX_FAILURES", 5)
LOGIN_LOCKOUT_SECONDS = env_int("LOGIN_LOCKOUT_SECONDS", 300)

# How many reverse proxies in front of the app append to X-Forwarded-For. 0 (the default) trusts
# only REMOTE_ADDR, so a client cannot dodge the lockout or the throttles with a forged header.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)

# The lockout counters, the API throttles and the homepage cache live in the default cache. The
# local-memory cache is per process: with several gunicorn workers each counts on its own, so
# production should point CACHE_URL (or REDIS_URL) at a shared Redis.
CACHE_URL = env_str("CACHE_URL") or env_str("REDIS_URL")
if CACHE_URL:
    if urlsplit(CACHE_URL).scheme not in {"redis", "rediss", "unix"}:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"CACHE_URL must be a redis:// URL, not {CACHE_URL!r}.")
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_URL,
            "KEY_PREFIX": "recsys",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "recsys"}}

# The lockout backend first; the plain ModelBackend stays listed so sessions that name it (the
# sign-up page logs new users in with it) remain valid. The lockout backend ends the chain on a
# failure, so a password is never checked twice.
AUTHENTICATION_BACKENDS = [
    "config.lockout.LockoutModelBackend",
    "django.contrib.auth.backends.ModelBackend",
]

# Pages may not be framed anywhere; browsers must not guess content types.
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True

# /metrics answers staff sessions, and this bearer token when set (the Prometheus scraper's
# ``authorization`` option): config/metrics_scrape.py, docs/operations.md ("Metrics").
METRICS_TOKEN = env_str("METRICS_TOKEN")
