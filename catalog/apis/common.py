"""What the catalogue API modules share: paging, strict JSON fields, features, lookups.

Thin views: an input serializer checks the shape of a request, a service writes, a selector
reads, an output serializer answers. Domain errors become JSON 4xx in
``config.exception_handlers``; nothing a client sends should end in a 500.
"""

from __future__ import annotations

import json
from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog import selectors
from catalog.models import Item, UserProfile
from catalog.services import FEATURE_WEIGHT_MAX
from config.strict_json import StrictSerializer

MAX_PAGE_SIZE = 200


class CatalogPagination(PageNumberPagination):
    """A huge ``page_size`` is capped at MAX_PAGE_SIZE; one that is not a positive integer is a 400
    (DRF would silently fall back to the default, hiding the client's mistake)."""

    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE

    def get_page_number(self, request, paginator):
        # DRF would read "?page=" as page 1 and "?page=last" as the last page; the schema says a
        # positive integer, so anything else is the 404 of a page that does not exist.
        raw = request.query_params.get(self.page_query_param)
        if raw is not None and not (raw.isascii() and raw.isdigit() and int(raw) > 0):
            raise exceptions.NotFound(f"Invalid page {raw!r}: pages are numbered from 1.")
        return super().get_page_number(request, paginator)

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is not None and not (raw.isascii() and raw.isdigit() and int(raw) > 0):
            raise exceptions.ValidationError({"page_size": ["Must be a positive integer."]})
        return super().get_page_size(request)


class StrictFloatField(serializers.FloatField):
    """A JSON number only: DRF's FloatField would also take ``true`` (as 1.0) and numeric strings."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            self.fail("invalid")
        return super().to_internal_value(data)


# The paging query parameters as the API checks them: positive integers, page_size capped (not refused).
PAGE_PARAMETERS = [
    OpenApiParameter("page", {"type": "integer", "minimum": 1}, description="1-based; past the end: 404."),
    OpenApiParameter(
        "page_size",
        {"type": "integer", "minimum": 1},
        description=f"Default {CatalogPagination.page_size}; larger than {MAX_PAGE_SIZE} is capped.",
    ),
]


def conflict_response(what: str) -> OpenApiResponse:
    return OpenApiResponse(description=f"{what} (field errors as for 400); nothing written.")


def paginated(view: APIView, queryset, serializer_class) -> Response:
    paginator = CatalogPagination()
    page = paginator.paginate_queryset(queryset, view.request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)


class FeatureSerializer(StrictSerializer):
    type = serializers.SlugField(max_length=50, trim_whitespace=False)  # exactly the schema's pattern
    value = serializers.CharField(max_length=200)
    weight = StrictFloatField(default=1.0, min_value=0, max_value=FEATURE_WEIGHT_MAX)


def features_out(links) -> list[dict[str, Any]]:
    ordered = sorted(links, key=lambda link: (link.feature.type, link.feature.value))
    return [{"type": link.feature.type, "value": link.feature.value, "weight": link.weight} for link in ordered]


def features_in(features: list[dict[str, Any]]) -> list[tuple[str, str, float]]:
    return [(f["type"], f["value"], f["weight"]) for f in features]


class MetadataField(serializers.JSONField):
    """A JSON object; PostgreSQL's jsonb cannot store the NUL character, so it is refused here."""

    def to_internal_value(self, data):
        data = super().to_internal_value(data)
        if not isinstance(data, dict):
            raise serializers.ValidationError("Metadata must be a JSON object.")
        if "\\u0000" in json.dumps(data):
            raise serializers.ValidationError("Metadata may not contain the NUL character.")
        return data


def is_staff(request) -> bool:
    return bool(request.user and request.user.is_authenticated and request.user.is_staff)


def item_get(*, external_id: str, request) -> Item:
    """The item, with weighted features; inactive items are visible to staff only."""
    try:
        item = selectors.item_detail(external_id=external_id)
    except Item.DoesNotExist:
        raise exceptions.NotFound(f"No item with external id {external_id!r}.") from None
    if not item.is_active and not is_staff(request):
        raise exceptions.NotFound(f"No item with external id {external_id!r}.")
    return item


def profile_get(*, external_id: str, request) -> UserProfile:
    """The profile if the caller is staff or its owner; 404 when missing, 403 for someone else's."""
    # Why not a selector: catalog.selectors has no profile-by-external-id read yet.
    profile = get_object_or_404(UserProfile.objects.select_related("user"), external_id=external_id)
    if not (is_staff(request) or profile.user_id == request.user.pk):
        raise exceptions.PermissionDenied("You may only see or change your own profile.")
    return profile


def validated(serializer_class, data, **kwargs) -> dict[str, Any]:
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def without_schema(view_class: type[APIView]) -> type[APIView]:
    """The same view under its trailing-slash URL, left out of the OpenAPI schema (the spec has no slashes)."""
    return extend_schema(exclude=True)(type(f"{view_class.__name__}Slash", (view_class,), {}))
