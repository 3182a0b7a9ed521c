"""Catalogue pages, mounted at the site root by config/urls.py (the home page is the recommender's)."""

from django.urls import path

from catalog import views

urlpatterns = [
    path("catalogue/", views.catalogue, name="catalogue"),
    path("items/<str:external_id>/", views.item_detail, name="item-detail"),
    path("items/<str:external_id>/rate", views.item_rate, name="item-rate"),
    path("activity/", views.my_activity, name="my-activity"),
    path("activity/<int:feedback_id>/delete", views.feedback_delete, name="feedback-delete"),
    path("accounts/signup/", views.signup, name="signup"),
]
