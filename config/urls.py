from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/v1/", include("catalog.api_urls")),
    path("api/v1/", include("recommender.api_urls")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("recommender.urls_serving")),
    path("", include("recommender.urls_dashboard")),
    path("", include("catalog.urls")),
]
