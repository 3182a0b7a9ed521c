"""Recommendation pages, mounted at ``/``: the home page, and the related-items panel of the item page."""

from django.urls import path

from recommender import views

urlpatterns = [
    path("", views.home, name="home"),
    path("items/<str:external_id>/related/", views.item_related_panel, name="item-related-panel"),
]
