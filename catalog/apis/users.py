"""User profiles: ``/api/v1/users`` (staff list and create; owners and staff read and update)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.validators import UnicodeUsernameValidator
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog import selectors
from catalog.models import UserProfile
from catalog.services import user_profile_create, user_profile_update
from config.strict_json import StrictSerializer

from .common import (
    PAGE_PARAMETERS,
    CatalogPagination,
    FeatureSerializer,
    conflict_response,
    features_in,
    features_out,
    is_staff,
    paginated,
    profile_get,
    validated,
    without_schema,
)
from .feedback import FeedbackOutputSerializer

PROFILE_ID_TAKEN = conflict_response("Another user has this external id (or username)")


class UserOutputSerializer(serializers.Serializer):
    external_id = serializers.CharField()
    username = serializers.CharField(source="user.username")
    features = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    @extend_schema_field(FeatureSerializer(many=True))
    def get_features(self, profile: UserProfile) -> list[dict[str, Any]]:
        return features_out(profile.feature_links.all())


class UserCreateInputSerializer(StrictSerializer):
    external_id = serializers.CharField(max_length=128)
    username = serializers.CharField(max_length=150, required=False, validators=[UnicodeUsernameValidator()])
    features = FeatureSerializer(many=True, required=False, max_length=1000)


class UserUpdateInputSerializer(StrictSerializer):
    external_id = serializers.CharField(max_length=128, required=False, help_text="Staff only.")
    features = FeatureSerializer(many=True, required=False, max_length=1000)


class UserListApi(APIView):
    """Staff only: list and create user profiles (the auth user gets an unusable password)."""

    pagination_class = CatalogPagination  # read by drf-spectacular: the list answers are paginated

    permission_classes = [IsAdminUser]

    @extend_schema(operation_id="users_list", parameters=PAGE_PARAMETERS, responses=UserOutputSerializer(many=True))
    def get(self, request):
        # Why not a selector: catalog.selectors has no profile list yet.
        profiles = UserProfile.objects.select_related("user").prefetch_related("feature_links__feature")
        return paginated(self, profiles.order_by("id"), UserOutputSerializer)

    @extend_schema(
        operation_id="users_create",
        request=UserCreateInputSerializer,
        responses={201: UserOutputSerializer, 409: PROFILE_ID_TAKEN},
    )
    def post(self, request):
        data = validated(UserCreateInputSerializer, request.data)
        features = data.pop("features", None)
        profile = user_profile_create(**data, features=features_in(features) if features is not None else None)
        return Response(UserOutputSerializer(profile).data, status=status.HTTP_201_CREATED)


class UserDetailApi(APIView):
    """The profile's owner or staff: read, and replace features. Only staff change external ids."""

    permission_classes = [IsAuthenticated]

    @extend_schema(operation_id="users_retrieve", responses=UserOutputSerializer)
    def get(self, request, external_id: str):
        return Response(UserOutputSerializer(profile_get(external_id=external_id, request=request)).data)

    @extend_schema(
        operation_id="users_update",
        request=UserUpdateInputSerializer,
        responses={200: UserOutputSerializer, 409: PROFILE_ID_TAKEN},
    )
    def put(self, request, external_id: str):
        return self._update(request, external_id)

    @extend_schema(
        operation_id="users_partial_update",
        request=UserUpdateInputSerializer,
        responses={200: UserOutputSerializer, 409: PROFILE_ID_TAKEN},
    )
    def patch(self, request, external_id: str):
        return self._update(request, external_id)

    def _update(self, request, external_id: str):
        profile = profile_get(external_id=external_id, request=request)
        data = validated(UserUpdateInputSerializer, request.data)
        if "external_id" in data and data["external_id"] != profile.external_id and not is_staff(request):
            raise exceptions.PermissionDenied("Only staff may change an external id.")
        features = data.get("features")
        profile = user_profile_update(
            profile=profile,
            external_id=data.get("external_id"),
            features=features_in(features) if features is not None else None,
        )
        return Response(UserOutputSerializer(profile).data)


class UserFeedbackListApi(APIView):
    """The profile's owner or staff: current states and events, newest first (superseded history omitted)."""

    pagination_class = CatalogPagination  # read by drf-spectacular: the list answers are paginated

    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="users_feedback_list", parameters=PAGE_PARAMETERS, responses=FeedbackOutputSerializer(many=True)
    )
    def get(self, request, external_id: str):
        profile = profile_get(external_id=external_id, request=request)
        return paginated(
            self, selectors.user_feedback_list(profile=profile).select_related("user"), FeedbackOutputSerializer
        )


UserListSlashApi = without_schema(UserListApi)
UserDetailSlashApi = without_schema(UserDetailApi)
UserFeedbackListSlashApi = without_schema(UserFeedbackListApi)
