"""Experiment API routes under ``/api/v1/`` (included from config/urls.py after the recommender's).

As in recommender/api_urls.py, the spec's paths have no trailing slash and the slashed spelling
is accepted too (same view, hidden from the schema).
"""

from django.urls import path

from recommender.apis import _without_schema

from . import apis

_ROUTES = [
    ("experiments", apis.ExperimentListApi, "experiments"),
    ("experiments/<int:experiment_id>", apis.ExperimentDetailApi, "experiment"),
    ("experiments/<int:experiment_id>/results", apis.ExperimentResultsApi, "experiment-results"),
    ("experiments/<int:experiment_id>/start", apis.ExperimentStartApi, "experiment-start"),
    ("experiments/<int:experiment_id>/stop", apis.ExperimentStopApi, "experiment-stop"),
    ("experiments/<int:experiment_id>/promote", apis.ExperimentPromoteApi, "experiment-promote"),
]

app_name = "experiments-api"
urlpatterns = []
for route, view, name in _ROUTES:
    urlpatterns += [
        path(route, view.as_view(), name=name),
        path(f"{route}/", _without_schema(view).as_view(), name=f"{name}-slash"),
    ]
