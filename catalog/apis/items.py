"""Items: ``/api/v1/items`` (anyone reads active items; staff write)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import AllowAny, IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog import selectors
from catalog.models import Item
from catalog.services import item_create, item_update
from config.strict_json import StrictSerializer

from .common import (
    PAGE_PARAMETERS,
    CatalogPagination,
    FeatureSerializer,
    MetadataField,
    conflict_response,
    features_in,
    features_out,
    is_staff,
    item_get,
    paginated,
    validated,
    without_schema,
)

ITEM_ID_TAKEN = conflict_response("Another item has this external id")


class ItemOutputSerializer(serializers.Serializer):
    external_id = serializers.CharField()
    title = serializers.CharField()
    description = serializers.CharField()
    published_at = serializers.DateTimeField(allow_null=True)
    provider = serializers.CharField()
    is_active = serializers.BooleanField()
    metadata = serializers.JSONField()
    features = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    @extend_schema_field(FeatureSerializer(many=True))
    def get_features(self, item: Item) -> list[dict[str, Any]]:
        return features_out(item.feature_links.all())


class ItemInputSerializer(StrictSerializer):
    external_id = serializers.CharField(max_length=128)
    title = serializers.CharField(max_length=500)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    published_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    provider = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
    is_active = serializers.BooleanField(required=False, default=True)
    metadata = MetadataField(required=False, default=dict)
    features = FeatureSerializer(many=True, required=False, max_length=1000)


class ItemUpdateInputSerializer(ItemInputSerializer):
    """PUT and PATCH: a field left out is left unchanged; ``features`` replaces the set."""

    external_id = serializers.CharField(max_length=128, required=False)
    title = serializers.CharField(max_length=500, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    published_at = serializers.DateTimeField(required=False, allow_null=True)
    provider = serializers.CharField(required=False, allow_blank=True, max_length=200)
    is_active = serializers.BooleanField(required=False)
    metadata = MetadataField(required=False)


class ItemListApi(APIView):
    """``GET`` anyone: active items (staff: add ``?include_inactive=true``). ``POST`` staff: create."""

    pagination_class = CatalogPagination  # read by drf-spectacular: the list answers are paginated

    def get_permissions(self):
        return [AllowAny()] if self.request.method == "GET" else [IsAdminUser()]

    @extend_schema(
        operation_id="items_list",
        parameters=[
            OpenApiParameter("search", str, description="Words that must all appear in the title."),
            OpenApiParameter("sort", str, enum=list(selectors.ITEM_SORTS), description="Default: title."),
            OpenApiParameter("include_inactive", bool, description="Staff only."),
            *PAGE_PARAMETERS,
        ],
        responses=ItemOutputSerializer(many=True),
    )
    def get(self, request):
        sort = request.query_params.get("sort", "title")
        if sort not in selectors.ITEM_SORTS:
            raise exceptions.ValidationError({"sort": [f"Use one of {', '.join(selectors.ITEM_SORTS)}."]})
        include_inactive = request.query_params.get("include_inactive", "false")
        if include_inactive not in {"1", "0", "true", "false"}:
            raise exceptions.ValidationError({"include_inactive": ["Use true or false."]})
        include_inactive = is_staff(request) and include_inactive in {"1", "true"}
        items = selectors.item_list(
            search=request.query_params.get("search", ""),
            sort=sort,
            active_only=not include_inactive,
        ).prefetch_related("feature_links__feature")
        return paginated(self, items, ItemOutputSerializer)

    @extend_schema(
        operation_id="items_create",
        request=ItemInputSerializer,
        responses={201: ItemOutputSerializer, 409: ITEM_ID_TAKEN},
    )
    def post(self, request):
        data = validated(ItemInputSerializer, request.data)
        features = data.pop("features", None)
        item = item_create(**data, features=features_in(features) if features is not None else None)
        item = item_get(external_id=item.external_id, request=request)
        return Response(ItemOutputSerializer(item).data, status=status.HTTP_201_CREATED)


class ItemDetailApi(APIView):
    """``GET`` anyone; ``PUT``/``PATCH`` staff (fields left out stay); ``DELETE`` staff: deactivates.

    Deleting is soft (``is_active=False``): the item's feedback stays as training history and
    the item disappears from lists and recommendations. A PATCH with ``is_active: true`` restores it.
    """

    def get_permissions(self):
        return [AllowAny()] if self.request.method == "GET" else [IsAdminUser()]

    def get_item(self, external_id: str) -> Item:
        return item_get(external_id=external_id, request=self.request)

    @extend_schema(operation_id="items_retrieve", responses=ItemOutputSerializer)
    def get(self, request, external_id: str):
        return Response(ItemOutputSerializer(self.get_item(external_id)).data)

    @extend_schema(
        operation_id="items_update",
        request=ItemUpdateInputSerializer,
        responses={200: ItemOutputSerializer, 409: ITEM_ID_TAKEN},
    )
    def put(self, request, external_id: str):
        return self._update(request, external_id)

    @extend_schema(
        operation_id="items_partial_update",
        request=ItemUpdateInputSerializer,
        responses={200: ItemOutputSerializer, 409: ITEM_ID_TAKEN},
    )
    def patch(self, request, external_id: str):
        return self._update(request, external_id)

    def _update(self, request, external_id: str):
        item = self.get_item(external_id)
        data = validated(ItemUpdateInputSerializer, request.data)
        if "features" in data:
            data["features"] = features_in(data["features"])
        item = item_update(item=item, **data)
        return Response(ItemOutputSerializer(self.get_item(item.external_id)).data)

    @extend_schema(operation_id="items_destroy", responses={204: OpenApiResponse(description="Deactivated.")})
    def delete(self, request, external_id: str):
        item_update(item=self.get_item(external_id), is_active=False)
        return Response(status=status.HTTP_204_NO_CONTENT)


ItemListSlashApi = without_schema(ItemListApi)
ItemDetailSlashApi = without_schema(ItemDetailApi)
