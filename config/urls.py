from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.lockout import LockoutLoginView
from config.metrics_scrape import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    # Prometheus' default metrics path; staff or METRICS_TOKEN only (config/metrics_scrape.py).
    path("metrics", metrics_view, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/v1/", include("catalog.api_urls")),
    path("api/v1/", include("recommender.api_urls")),
    path("api/v1/", include("recommender.experiments.api_urls")),
    # Before django.contrib.auth.urls: the same "login" name, with the sign-in lockout.
    path("accounts/login/", LockoutLoginView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("recommender.urls_serving")),
    path("", include("recommender.urls_dashboard")),
    path("", include("catalog.urls")),
]

# JSON under /api/, the usual pages elsewhere.
handler400 = "config.exception_handlers.bad_request"
handler403 = "config.exception_handlers.permission_denied"
handler404 = "config.exception_handlers.page_not_found"
handler500 = "config.exception_handlers.server_error"
