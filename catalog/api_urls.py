"""Catalogue API routes under ``/api/v1/``.

The spec's paths have no trailing slash; the slashed spelling is accepted too (same view,
hidden from the schema) so clients never meet a redirect that drops a POST body.
"""

from django.urls import path

from catalog import apis

_ROUTES = [
    ("items", apis.ItemListApi, apis.ItemListSlashApi, "items"),
    ("items/<str:external_id>", apis.ItemDetailApi, apis.ItemDetailSlashApi, "item"),
    ("users", apis.UserListApi, apis.UserListSlashApi, "users"),
    ("users/<str:external_id>", apis.UserDetailApi, apis.UserDetailSlashApi, "user"),
    ("users/<str:external_id>/feedback", apis.UserFeedbackListApi, apis.UserFeedbackListSlashApi, "user-feedback"),
    ("feedback", apis.FeedbackRecordApi, apis.FeedbackRecordSlashApi, "feedback"),
]

app_name = "catalog-api"
urlpatterns = []
for route, view, slash_view, name in _ROUTES:
    urlpatterns += [
        path(route, view.as_view(), name=name),
        path(f"{route}/", slash_view.as_view(), name=f"{name}-slash"),
    ]
