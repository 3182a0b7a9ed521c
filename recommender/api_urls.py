"""Recommender API routes under ``/api/v1/`` (catalog's routes are included first; none clash).

As in catalog/api_urls.py, the spec's paths have no trailing slash and the slashed spelling is
accepted too (same view, hidden from the schema).
"""

from django.urls import path

from recommender import apis

_ROUTES = [
    ("users/<str:external_id>/recommendations", apis.UserRecommendationsApi, "user-recommendations"),
    ("items/<str:external_id>/related", apis.ItemRelatedApi, "item-related"),
    ("rules", apis.RuleListApi, "rules"),
    ("rules/<int:rule_id>", apis.RuleDetailApi, "rule"),
    ("rule-sets", apis.RuleSetListApi, "rule-sets"),
    ("rule-sets/<int:rule_set_id>", apis.RuleSetDetailApi, "rule-set"),
    ("models", apis.ModelListApi, "models"),
    ("models/train", apis.ModelTrainApi, "models-train"),
    ("models/rollback", apis.ModelRollbackApi, "models-rollback"),
    ("models/<int:version_id>", apis.ModelDetailApi, "model"),
    ("models/<int:version_id>/activate", apis.ModelActivateApi, "model-activate"),
]

app_name = "recommender-api"
urlpatterns = []
for route, view, name in _ROUTES:
    urlpatterns += [
        path(route, view.as_view(), name=name),
        path(f"{route}/", apis._without_schema(view).as_view(), name=f"{name}-slash"),
    ]
