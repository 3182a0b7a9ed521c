"""Django REST Framework and the OpenAPI schema."""

from config.env import env_int, env_str
from config.throttling import throttle_rate

from .security import TRUSTED_PROXY_COUNT

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "config.authentication.FastTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    # A JSON API: form bodies are refused with 415, so the schema (and the fuzzer) see one encoding.
    "DEFAULT_PARSER_CLASSES": ["config.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "config.schema.ApiAutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": env_int("API_PAGE_SIZE", 50),
    "EXCEPTION_HANDLER": "config.exception_handlers.api_exception_handler",
    # 429 with Retry-After beyond these rates (per address for anonymous clients, per user for
    # signed-in ones); "off" disables one. Counted in the default cache: see CACHE_URL.
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": throttle_rate(env_str("API_THROTTLE_ANON", "600/minute")),
        "user": throttle_rate(env_str("API_THROTTLE_USER", "6000/minute")),
    },
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Recommendation platform API",
    "DESCRIPTION": "Catalogue, feedback, recommendations and models.",
    "VERSION": "1.0.0",
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Request and response components apart: requests carry the stricter input rules of config.schema.
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # A rule's scope and an experiment's surface are the same choices (home, related, both): one
    # component, under the name it had before experiments had an API.
    "ENUM_NAME_OVERRIDES": {"ScopeEnum": "recommender.rerank.models.RuleScope"},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.schema.error_responses_add",
    ],
}
