"""Recommendation pages, mounted at ``/`` before catalog's URLs: ``home`` here replaces catalog's."""
from django.urls import path

from recommender import views

urlpatterns = [
    path("", views.home, name="home"),
    path("items/<str:external_id>/related/", views.item_related_panel, name="item-related-panel"),
]
