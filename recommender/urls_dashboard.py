"""Dashboard pages (models, rules, experiments, embedding map, data, health, view as), mounted at the site root."""

from django.urls import path

from recommender.dashboard.views import data, embedding, experiments, health, model_versions, rules, view_as

urlpatterns = [
    path("models/", model_versions.models_page, name="models"),
    path("models/progress", model_versions.training_progress, name="models-progress"),
    path("models/train", model_versions.model_train, name="models-train"),
    path("models/rollback", model_versions.model_rollback, name="models-rollback"),
    path("models/<int:version_id>/activate", model_versions.model_activate, name="models-activate"),
    path("models/map/", embedding.embedding_map, name="embedding-map"),
    path("models/map.json", embedding.embedding_map_json, name="embedding-map-json"),
    path("rules/", rules.rules_page, name="rules"),
    path("rules/preview", rules.rules_preview, name="rules-preview"),
    path("rules/<int:rule_id>/toggle", rules.rule_toggle, name="rules-toggle"),
    path("experiments/", experiments.experiments_page, name="experiments"),
    path("experiments/new", experiments.experiment_new, name="experiments-new"),
    path("experiments/<int:experiment_id>/", experiments.experiment_detail, name="experiments-detail"),
    path("experiments/<int:experiment_id>/start", experiments.experiment_start_view, name="experiments-start"),
    path("experiments/<int:experiment_id>/stop", experiments.experiment_stop_view, name="experiments-stop"),
    path("experiments/<int:experiment_id>/promote", experiments.experiment_promote_view, name="experiments-promote"),
    path("experiments/<int:experiment_id>/view-as", experiments.experiment_view_as, name="experiments-view-as"),
    path("data/", data.data_page, name="data"),
    path("data/import", data.data_import, name="data-import"),
    path("data/import-interactions", data.data_import_interactions, name="data-import-interactions"),
    path("data/import/<str:task_id>/progress", data.import_progress, name="data-import-progress"),
    path("health/live", health.health_live, name="health-live"),
    path("health/ready", health.health_ready, name="health-ready"),
    path("health/", health.health_page, name="health"),
    path("health.json", health.health_json, name="health-json"),
    path("view-as/", view_as.view_as, name="view-as"),
    path("view-as/suggestions", view_as.view_as_suggestions, name="view-as-suggestions"),
]
