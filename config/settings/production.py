"""Production settings: everything in development, hardened, and read from the environment."""

from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_list, env_str

# Checked before the development settings load: without DATABASE_URL they would start the
# embedded PostgreSQL, a laptop convenience a production process must never fall back to.
if env_str("DATABASE_URL") is None:
    raise ImproperlyConfigured(
        "DATABASE_URL is required in production (config.settings.production): set it to a PostgreSQL "
        "with pgvector, e.g. postgresql://user:password@host:5432/name. The embedded PostgreSQL is for "
        "development only."
    )

from .development import *  # after the DATABASE_URL check above, on purpose

SECRET_KEY = env_str("SECRET_KEY", required=True)
DEBUG = False
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS")
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
# Probes from the orchestrator speak plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [r"^health/"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
