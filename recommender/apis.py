"""The recommender REST API (``/api/v1/``): recommendations, related items, rules, rule sets and models.

Thin views: an input serializer checks the query or body, the pipeline or a service does the
work, an output serializer answers. Domain errors (``ApplicationError``: a training already
running, an activation refused) and validation errors become JSON 4xx in
``config.exception_handlers``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import AllowAny, IsAdminUser, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from config.authentication import lookup_arm, lookup_result, token_lookup_for_request
from config.stored_answers import StoredAnswerApiView, StoredHit
from config.strict_json import ClosedStrictSerializer, StrictSerializer

from . import serving
from .models import ModelVersion
from .rerank.models import Rule, RuleScope, RuleSet
from .rerank.params import RuleKind
from .rerank.selectors import rule_set_list
from .rerank.services import (
    rule_create,
    rule_delete,
    rule_set_create,
    rule_set_delete,
    rule_set_update,
    rule_update,
)
from .selectors import model_version_list
from .services.activation import model_version_activate, model_version_rollback
from .services.training import model_training_request


def _is_staff(request) -> bool:
    return bool(request.user and request.user.is_authenticated and request.user.is_staff)


def _may_read_recommendations(user, profile) -> bool:
    """A user reads their own homepage; staff read anyone's."""
    return bool(user.is_staff or profile.user_id == user.pk)


# --------------------------------------------------------------------------------------------
# Recommendations and related items
# --------------------------------------------------------------------------------------------


class KInputSerializer(serializers.Serializer):
    k = serializers.IntegerField(
        min_value=1, default=10, help_text=f"How many items (at least 1); values above {serving.K_MAX} are capped."
    )


class RecommendedItemOutputSerializer(serializers.Serializer):
    external_id = serializers.CharField(source="item.external_id")
    title = serializers.CharField(source="item.title")
    provider = serializers.CharField(source="item.provider")
    published_at = serializers.DateTimeField(source="item.published_at", allow_null=True)
    score = serializers.FloatField(
        allow_null=True,
        help_text="The scorer's score: LightFM's full score, or its blend with item-item and popularity "
        "signals when the version has one (null in a fallback).",
    )
    sources = serializers.DictField(
        child=serializers.FloatField(), help_text="Candidate sources that nominated the item, with their scores."
    )
    because_you_liked = serializers.ListField(
        child=serializers.CharField(), source="reasons", help_text='Explanations such as "Because you liked Heat".'
    )
    rules = serializers.ListField(
        child=serializers.CharField(), source="notes", help_text="What the re-ranking rules did to this item."
    )
    variant = serializers.CharField(
        allow_null=True,
        help_text="The experiment variant whose list contributed the item (an interleaved list mixes two), or null.",
    )


class ExperimentLabelOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    variant = serializers.CharField(help_text='The variant that served the list ("interleaved" for two mixed).')
    mode = serializers.CharField(help_text="split or interleave.")


class RecommendationsOutputSerializer(serializers.Serializer):
    surface = serializers.CharField()
    version = serializers.IntegerField(
        source="version_id", allow_null=True, help_text="The model version that served the list."
    )
    fallback = serializers.BooleanField(help_text="True when popular/fresh items were served instead of the model.")
    fallback_reason = serializers.CharField(
        help_text="no_active_model, vector_store_error, unknown_user, anonymous, pipeline_error, or empty."
    )
    cached = serializers.BooleanField()
    rules_applied = serializers.ListField(
        child=serializers.JSONField(), help_text="Each rule that ran and what it changed."
    )
    experiment = ExperimentLabelOutputSerializer(
        allow_null=True, help_text="The running experiment that served the list, or null."
    )
    items = RecommendedItemOutputSerializer(many=True)


def _plain_k(value: str) -> int | None:
    """A plain positive integer k, capped; None for anything the serializer must judge."""
    if value.isascii() and value.isdigit() and int(value) >= 1:
        return min(int(value), serving.K_MAX)
    return None


def _k_from(request) -> int:
    params = request.query_params
    # The common shapes, answered as the serializer would (its field validation cost a cached
    # request about a tenth of its time): no k at all, or a plain positive integer.
    if not params:
        return 10
    value = params.get("k")
    if len(params) == 1 and value is not None and (plain := _plain_k(value)) is not None:
        return plain
    # A plain dict, not the QueryDict: DRF reads "?k=" from a QueryDict as "not given" (HTML form
    # rules) and would serve the default; for this API an empty k is a malformed k.
    serializer = KInputSerializer(data=params.dict())
    serializer.is_valid(raise_exception=True)
    return min(serializer.validated_data["k"], serving.K_MAX)


def _lean_k(request) -> int | None:
    """k for the lean hit path: no query (10) or exactly ``k=<digits>``; None leaves the request to the view."""
    query = request.META.get("QUERY_STRING", "")
    if not query:
        return 10
    name, equals, value = query.partition("=")
    return _plain_k(value) if name == "k" and equals else None


def _lean_lookup(request, key: str, lookup) -> tuple[int, object, tuple | None] | None:
    """k, the token's user and the looked-up row for a lean hit; None leaves the request to the view
    (a query other than ``k=<digits>``, or a token the full view must refuse with its own message)."""
    k = _lean_k(request)
    if k is None:
        return None
    try:
        user, _token, found = token_lookup_for_request(request, key, lookup)
    except exceptions.AuthenticationFailed:
        return None
    return k, user, found


# Renders a stored hit's body as the view's JSONRenderer renders its response (the lean path
# answers only requests that negotiation gives to JSONRenderer without parameters).
_JSON = JSONRenderer()


def _stored_answer_save(result: serving.Recommendations, data: dict[str, Any]) -> None:
    """Store the body the next hit of this list answers: this one's data, flagged as cached."""
    if result.cache_key is not None:
        serving.stored_answer_save(result, body=_JSON.render({**data, "cached": True}, "application/json"))


# One field instance formats every date: DRF's own rules (current time zone, "Z" for UTC).
_DATETIME = serializers.DateTimeField()


def recommendations_data(result: serving.Recommendations) -> dict[str, Any]:
    """The body of `RecommendationsOutputSerializer` built from plain values.

    Same keys, types and formats as the serializer (which stays the schema, and the reference a
    test compares this to), without building a field tree per item: DRF's per-field
    ``to_representation`` walk cost about as much as the rest of a cached request.
    """
    items = []
    for entry in result.items:
        item = entry.item
        items.append(
            {
                "external_id": str(item.external_id),
                "title": str(item.title),
                "provider": str(item.provider),
                "published_at": None if item.published_at is None else _DATETIME.to_representation(item.published_at),
                "score": None if entry.score is None else float(entry.score),
                "sources": {str(name): float(score) for name, score in entry.sources.items()},
                "because_you_liked": [str(reason) for reason in entry.reasons],
                "rules": [str(note) for note in entry.notes],
                "variant": None if entry.variant is None else str(entry.variant),
            }
        )
    return {
        "surface": str(result.surface),
        "version": None if result.version_id is None else int(result.version_id),
        "fallback": bool(result.fallback),
        "fallback_reason": str(result.fallback_reason),
        "cached": bool(result.cached),
        "rules_applied": list(result.rules_applied),
        "experiment": None if result.experiment is None else dict(result.experiment),
        "items": items,
    }


class UserRecommendationsApi(StoredAnswerApiView):
    """``GET`` the homepage list of one user: the user themself or staff.

    A cached list's body is stored when first answered and answered as bytes on later
    token-authenticated hits (`config.stored_answers`, `recommender.serving.stored`).
    """

    permission_classes = [IsAuthenticated]

    def stored_hit(self, request, key: str, **kwargs) -> StoredHit | None:
        started = time.perf_counter()
        looked_up = _lean_lookup(request, key, serving.profile_lookup_sql(kwargs["external_id"]))
        if looked_up is None:
            return None
        k, user, found = looked_up
        if found is None or not _may_read_recommendations(user, found[0]):
            return None
        profile, generations = found
        answer = serving.home_stored_answer(profile_id=profile.pk, k=k, generations=generations)
        if answer is None:
            return None
        return StoredHit(
            user, answer.body, lambda: serving.stored_answer_served(answer, profile_id=profile.pk, started=started)
        )

    def initial(self, request, *args, **kwargs):
        # A token's statement also reads the profile asked for and its cache generations: on a
        # cache hit, the request's only round trip (docs/serving.md, "What a hit costs").
        lookup_arm(request, serving.profile_lookup_sql(kwargs["external_id"]))
        super().initial(request, *args, **kwargs)

    @extend_schema(
        operation_id="users_recommendations",
        parameters=[KInputSerializer],
        responses={
            200: RecommendationsOutputSerializer,
            400: OpenApiResponse(description="Invalid k."),
            403: OpenApiResponse(description="Another user's list, not staff."),
            404: OpenApiResponse(description="No such user."),
        },
    )
    def get(self, request, external_id: str):
        k = _k_from(request)
        answered, found = lookup_result(request)
        if not answered:  # a session: the profile and its generations in one statement of their own
            found = serving.profile_with_generations(external_id)
        if found is None:
            raise exceptions.NotFound(f"No user with external id {external_id!r}.")
        profile, generations = found
        if not _may_read_recommendations(request.user, profile):
            raise exceptions.PermissionDenied("You may only read your own recommendations.")
        result = serving.recommend_for_user(profile=profile, k=k, generations=generations)
        data = recommendations_data(result)
        _stored_answer_save(result, data)
        return Response(data)


class ItemRelatedApi(StoredAnswerApiView):
    """``GET`` items related to one item; public. Token-authenticated hits take the lean path
    (`UserRecommendationsApi`); anonymous and session visitors always get the full view."""

    permission_classes = [AllowAny]

    def stored_hit(self, request, key: str, **kwargs) -> StoredHit | None:
        started = time.perf_counter()
        looked_up = _lean_lookup(request, key, serving.item_viewer_lookup_sql(kwargs["external_id"]))
        if looked_up is None:
            return None
        k, user, found = looked_up
        if found is None:
            return None
        item_id, is_active, profile_id, generations = found
        if not is_active:  # staff may read an inactive item's list: the full view decides
            return None
        answer = serving.related_stored_answer(item_id=item_id, k=k, profile_id=profile_id, generations=generations)
        if answer is None:
            return None
        return StoredHit(
            user, answer.body, lambda: serving.stored_answer_served(answer, profile_id=profile_id, started=started)
        )

    @extend_schema(
        operation_id="items_related",
        parameters=[KInputSerializer],
        responses={
            200: RecommendationsOutputSerializer,
            400: OpenApiResponse(description="Invalid k."),
            404: OpenApiResponse(description="No such (active) item."),
        },
    )
    def get(self, request, external_id: str):
        k = _k_from(request)
        # The item, the visitor's profile and the cache generations in one round trip.
        found = serving.item_viewer_generations(
            external_id, user_id=request.user.pk if request.user.is_authenticated else None
        )
        if found is None or (not found[0].is_active and not _is_staff(request)):
            raise exceptions.NotFound(f"No item with external id {external_id!r}.")
        item, profile, generations = found
        result = serving.related_items(item=item, k=k, profile=profile, generations=generations)
        data = recommendations_data(result)
        _stored_answer_save(result, data)
        return Response(data)


# --------------------------------------------------------------------------------------------
# Rules (staff)
# --------------------------------------------------------------------------------------------


class RuleInputSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100)
    kind = serializers.ChoiceField(choices=RuleKind.choices)
    enabled = serializers.BooleanField(default=True)
    order = serializers.IntegerField(default=100, min_value=-(2**31), max_value=2**31 - 1)  # a PostgreSQL integer
    scope = serializers.ChoiceField(choices=RuleScope.choices, default=RuleScope.BOTH)
    params = serializers.JSONField(default=dict)
    starts_at = serializers.DateTimeField(allow_null=True, required=False)
    ends_at = serializers.DateTimeField(allow_null=True, required=False)
    rule_set = serializers.PrimaryKeyRelatedField(
        queryset=RuleSet.objects.all(),
        allow_null=True,
        required=False,
        help_text="The id of the rule set it belongs to (see /api/v1/rule-sets); null: it always applies.",
    )

    def validate_params(self, value):
        # jsonb cannot store the NUL character: refused here rather than as a DataError (500).
        if "\\u0000" in json.dumps(value):
            raise serializers.ValidationError("Parameters may not contain the NUL character.")
        return value


# Its OpenAPI description (one variant per kind, with that kind's parameters) is
# recommender.openapi.RuleInputSchema, registered by this import.
from recommender import openapi as _rule_input_schema  # noqa: E402,F401


class RuleOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    kind = serializers.CharField()
    enabled = serializers.BooleanField()
    order = serializers.IntegerField()
    scope = serializers.CharField()
    params = serializers.JSONField()
    starts_at = serializers.DateTimeField(allow_null=True)
    ends_at = serializers.DateTimeField(allow_null=True)
    rule_set = serializers.IntegerField(source="rule_set_id", allow_null=True)
    updated_at = serializers.DateTimeField()


class RuleListApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(operation_id="rules_list", responses=RuleOutputSerializer(many=True))
    def get(self, request):
        return Response(RuleOutputSerializer(Rule.objects.order_by("order", "id"), many=True).data)

    @extend_schema(operation_id="rules_create", request=RuleInputSerializer, responses={201: RuleOutputSerializer})
    def post(self, request):
        serializer = RuleInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        rule = rule_create(**serializer.validated_data)
        return Response(RuleOutputSerializer(rule).data, status=status.HTTP_201_CREATED)


class RuleDetailApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(operation_id="rules_retrieve", responses=RuleOutputSerializer)
    def get(self, request, rule_id: int):
        return Response(RuleOutputSerializer(get_object_or_404(Rule, pk=rule_id)).data)

    @extend_schema(operation_id="rules_update", request=RuleInputSerializer, responses=RuleOutputSerializer)
    def put(self, request, rule_id: int):
        return self._update(request, rule_id, partial=False)

    @extend_schema(operation_id="rules_partial_update", request=RuleInputSerializer, responses=RuleOutputSerializer)
    def patch(self, request, rule_id: int):
        return self._update(request, rule_id, partial=True)

    def _update(self, request, rule_id: int, *, partial: bool):
        rule = get_object_or_404(Rule, pk=rule_id)
        serializer = RuleInputSerializer(data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        # starts_at/ends_at have no default, so a PUT without them keeps the stored period: the
        # service changes only the fields it is given.
        return Response(RuleOutputSerializer(rule_update(rule=rule, **serializer.validated_data)).data)

    @extend_schema(operation_id="rules_destroy", responses={204: OpenApiResponse(description="Deleted.")})
    def delete(self, request, rule_id: int):
        rule_delete(rule=get_object_or_404(Rule, pk=rule_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --------------------------------------------------------------------------------------------
# Rule sets (staff)
# --------------------------------------------------------------------------------------------


class RuleSetInputSerializer(ClosedStrictSerializer):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(allow_blank=True, required=False)
    enabled = serializers.BooleanField(required=False, help_text="Its rules apply to traffic outside experiments.")


class RuleSetOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField()
    enabled = serializers.BooleanField()
    rule_count = serializers.IntegerField(help_text="Rules in the set.")
    variant_count = serializers.IntegerField(help_text="Experiment variants that name the set.")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


def _rule_set_data(rule_set_id: int) -> dict:
    return RuleSetOutputSerializer(get_object_or_404(rule_set_list(), pk=rule_set_id)).data


class RuleSetListApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(operation_id="rule_sets_list", responses=RuleSetOutputSerializer(many=True))
    def get(self, request):
        return Response(RuleSetOutputSerializer(rule_set_list(), many=True).data)

    @extend_schema(
        operation_id="rule_sets_create",
        request=RuleSetInputSerializer,
        responses={201: RuleSetOutputSerializer, 409: OpenApiResponse(description="The name is taken.")},
    )
    def post(self, request):
        serializer = RuleSetInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        rule_set = rule_set_create(**serializer.validated_data)
        return Response(_rule_set_data(rule_set.pk), status=status.HTTP_201_CREATED)


class RuleSetDetailApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(operation_id="rule_sets_retrieve", responses=RuleSetOutputSerializer)
    def get(self, request, rule_set_id: int):
        return Response(_rule_set_data(rule_set_id))

    @extend_schema(
        operation_id="rule_sets_partial_update",
        request=RuleSetInputSerializer,
        responses={200: RuleSetOutputSerializer, 409: OpenApiResponse(description="The name is taken.")},
    )
    def patch(self, request, rule_set_id: int):
        rule_set = get_object_or_404(RuleSet, pk=rule_set_id)
        serializer = RuleSetInputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        rule_set_update(rule_set=rule_set, **serializer.validated_data)
        return Response(_rule_set_data(rule_set_id))

    @extend_schema(
        operation_id="rule_sets_destroy",
        responses={
            204: OpenApiResponse(description="Deleted."),
            409: OpenApiResponse(description="Rules belong to the set, or experiment variants use it."),
        },
    )
    def delete(self, request, rule_set_id: int):
        rule_set_delete(rule_set=get_object_or_404(RuleSet, pk=rule_set_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


class ModelVersionOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    is_active = serializers.BooleanField()
    progress = serializers.FloatField(help_text="0..1 over the whole run.")
    epoch = serializers.IntegerField()
    epochs_total = serializers.IntegerField()
    metrics = serializers.JSONField(
        help_text=(
            "Held-out metrics of the protocol's model. With several model families, `stack` holds the "
            "served scorer's choice and metrics, each family alone and popularity on the same split, and "
            "`stack.validation` the validation report: lift over each family, feature importances, the search."
        )
    )
    baseline_metrics = serializers.JSONField(help_text="The popularity baseline on the same split.")
    gate_reason = serializers.CharField()
    error = serializers.CharField()
    config = serializers.CharField(source="config.name", allow_null=True, default=None)
    dimension = serializers.IntegerField(allow_null=True)
    n_users = serializers.IntegerField(allow_null=True)
    n_items = serializers.IntegerField(allow_null=True)
    n_interactions = serializers.IntegerField(allow_null=True)
    phase_seconds = serializers.JSONField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    activated_at = serializers.DateTimeField(allow_null=True)


class ModelListApi(APIView):
    """``GET`` every version with its metrics; readable by any signed-in client."""

    permission_classes = [IsAuthenticated]

    @extend_schema(operation_id="models_list", responses=ModelVersionOutputSerializer(many=True))
    def get(self, request):
        return Response(ModelVersionOutputSerializer(model_version_list()[:200], many=True).data)


class ModelDetailApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(operation_id="models_retrieve", responses=ModelVersionOutputSerializer)
    def get(self, request, version_id: int):
        version = get_object_or_404(model_version_list(), pk=version_id)
        return Response(ModelVersionOutputSerializer(version).data)


class ModelTrainApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        operation_id="models_train",
        request=None,
        responses={
            202: ModelVersionOutputSerializer,
            409: OpenApiResponse(description="A training run is already queued or running."),
        },
    )
    def post(self, request):
        version = model_training_request(requested_by=request.user)
        version = ModelVersion.objects.select_related("config").get(pk=version.pk)
        return Response(ModelVersionOutputSerializer(version).data, status=status.HTTP_202_ACCEPTED)


class ModelActivateApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        operation_id="models_activate",
        request=None,
        responses={
            200: ModelVersionOutputSerializer,
            409: OpenApiResponse(description="The version is not ready or has no valid index."),
        },
    )
    def post(self, request, version_id: int):
        version = model_version_activate(
            version=get_object_or_404(ModelVersion, pk=version_id),
            reason=f"Activated by {request.user.get_username()} through the API.",
        )
        return Response(ModelVersionOutputSerializer(version).data)


class ModelRollbackApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        operation_id="models_rollback",
        request=None,
        responses={
            200: ModelVersionOutputSerializer,
            409: OpenApiResponse(description="No earlier version to roll back to."),
        },
    )
    def post(self, request):
        return Response(ModelVersionOutputSerializer(model_version_rollback()).data)


def _without_schema(view_class: type[APIView]) -> type[APIView]:
    """The same view under its trailing-slash URL, left out of the OpenAPI schema."""
    return extend_schema(exclude=True)(type(f"{view_class.__name__}Slash", (view_class,), {}))
