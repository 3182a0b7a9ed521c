"""Embedding map: a 2D PCA projection of the active model's item vectors, drawn by static/js/embedding_map.js."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from recommender.selectors import active_version

from ..selectors import embedding_map_points, map_color_choices

DEFAULT_COLOR = "genre"


def _color(request: HttpRequest, choices: list[str]) -> str | None:
    color = request.GET.get("color") or (DEFAULT_COLOR if DEFAULT_COLOR in choices else (choices or [None])[0])
    return color if color in choices else None


@login_required
def embedding_map(request: HttpRequest) -> HttpResponse:
    choices = map_color_choices()
    return render(
        request,
        "dashboard/embedding_map.html",
        {
            "version": active_version(),
            "choices": choices,
            "color": _color(request, choices) or DEFAULT_COLOR,
        },
    )


@login_required
def embedding_map_json(request: HttpRequest) -> JsonResponse:
    choices = map_color_choices()
    color = _color(request, choices)
    if color is None:
        return JsonResponse(
            {"error": f"Unknown colour {request.GET.get('color')!r}; choose one of: {', '.join(choices)}."}, status=400
        )
    version = active_version()
    if version is None:
        return JsonResponse({"error": "No active model: train one on the Models page.", "points": []}, status=404)
    return JsonResponse(embedding_map_points(version=version, color=color))
