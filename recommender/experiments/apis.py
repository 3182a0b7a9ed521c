"""The experiments REST API (``/api/v1/experiments``), staff only: reads and results included.

Thin views, as in `recommender.apis`: an input serializer checks the JSON types and refuses
unknown fields, `services` validates the experiment as a whole (shares, control, keys, versions,
a free surface) and writes, `selectors` and `results` read. Validation errors answer 400 with the
service's fields (``variants``, ``surface``, ``ends_at``, ...); a status change that does not apply
(stop a draft, edit a running experiment's split) answers 409 (`services.ExperimentStateError`).
"""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from config.strict_json import ClosedStrictSerializer
from recommender.candidates import SOURCES
from recommender.models import ModelVersion
from recommender.rerank.models import RuleSet

from .models import Experiment, ExperimentMode, ExperimentSurface, VariantScorer
from .results import experiment_report, report_data
from .selectors import experiment_events, experiment_list
from .services import (
    VariantSpec,
    experiment_create,
    experiment_promote_by_key,
    experiment_start,
    experiment_stop,
    experiment_update,
)

MAX_VARIANTS = 20
_MAX_ID = 2**63 - 1  # a PostgreSQL bigint
_MAX_CANDIDATES = 10_000  # services._sizes_problems

# --------------------------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------------------------


class ObjectIdField(serializers.IntegerField):
    """The id of a row of ``queryset``, as a JSON integer; validated to that row."""

    def __init__(self, *, queryset, noun: str, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", _MAX_ID)
        super().__init__(**kwargs)
        self.queryset = queryset
        self.noun = noun

    def run_validation(self, data=serializers.empty):
        pk = super().run_validation(data)  # the integer, within its range (or None when allowed)
        if pk is None:
            return None
        found = self.queryset.filter(pk=pk).first()
        if found is None:
            raise serializers.ValidationError(f"No {self.noun} with id {pk}.")
        return found


# What services._sizes_problems accepts: known sources, whole numbers 0..10000, at least one
# source asked for candidates (or none given at all: the surface's configured sizes).
CANDIDATE_SIZES_SCHEMA: dict[str, Any] = {
    "type": "object",  # the field's allow_null adds "null"
    "description": 'Candidates per source for this variant, e.g. {"popular": 50}; only the sources named run. '
    "Null or {}: the surface's configured sizes.",
    "propertyNames": {"enum": sorted(SOURCES)},
    "additionalProperties": {"type": "integer", "minimum": 0, "maximum": _MAX_CANDIDATES},
    "anyOf": [
        {"type": "null"},
        {"type": "object", "maxProperties": 0},
        *({"type": "object", "required": [name], "properties": {name: {"minimum": 1}}} for name in sorted(SOURCES)),
    ],
}


@extend_schema_field(CANDIDATE_SIZES_SCHEMA)
class CandidateSizesField(serializers.JSONField):
    """Any JSON here; the service checks it (and names the variant in its message)."""

    def to_internal_value(self, data):
        data = super().to_internal_value(data)
        if isinstance(data, dict):  # JSON counts 50.0 as an integer, and so does the schema
            data = {key: int(n) if isinstance(n, float) and n.is_integer() else n for key, n in data.items()}
        return data


class VariantInputSerializer(ClosedStrictSerializer):
    key = serializers.SlugField(max_length=32, help_text="Short name shown in responses, e.g. A or new-model.")
    name = serializers.CharField(max_length=100, allow_blank=True, required=False)
    share = serializers.IntegerField(min_value=1, max_value=100, help_text="Percent of the traffic.")
    is_control = serializers.BooleanField(required=False, help_text="Exactly one variant is the control.")
    version = ObjectIdField(
        queryset=ModelVersion.objects.all(),
        noun="model version",
        allow_null=True,
        required=False,
        help_text="A ready or active model version; null: whichever version is active.",
    )
    rule_set = ObjectIdField(
        queryset=RuleSet.objects.all(),
        noun="rule set",
        allow_null=True,
        required=False,
        help_text="Null: the rules in force; else the rules outside any set plus this set's.",
    )
    scorer = serializers.ChoiceField(choices=VariantScorer.choices, required=False)
    candidate_sizes = CandidateSizesField(allow_null=True, required=False)


@extend_schema_field(VariantInputSerializer(many=True, min_length=2, max_length=MAX_VARIANTS))
class VariantsField(serializers.Field):
    """The variants, each validated in full even inside a PATCH.

    A nested serializer under a partial root skips its own required fields; a variant without a
    key or a share is not a partial variant, so the list is validated by a serializer of its own.
    """

    def to_internal_value(self, data) -> list[VariantSpec]:
        serializer = VariantInputSerializer(data=data, many=True, min_length=2, max_length=MAX_VARIANTS)
        if not serializer.is_valid():
            raise serializers.ValidationError(serializer.errors)
        return [VariantSpec(**fields) for fields in serializer.validated_data]

    def to_representation(self, value):  # input only
        raise NotImplementedError


class ExperimentInputSerializer(ClosedStrictSerializer):
    """An experiment with its variants; on PATCH every field is optional, variants replace them all."""

    name = serializers.CharField(max_length=100)
    description = serializers.CharField(allow_blank=True, required=False)
    surface = serializers.ChoiceField(choices=ExperimentSurface.choices, required=False)
    mode = serializers.ChoiceField(choices=ExperimentMode.choices, required=False)
    starts_at = serializers.DateTimeField(allow_null=True, required=False, help_text="Optional start of traffic.")
    ends_at = serializers.DateTimeField(allow_null=True, required=False, help_text="Optional end, after the start.")
    outcome_window_hours = serializers.FloatField(min_value=0.01, max_value=24 * 90, required=False)
    conversion_kinds = serializers.CharField(
        max_length=200, allow_blank=True, required=False, help_text="Feedback kinds that convert, comma-separated."
    )
    variants = VariantsField(help_text="Two or more; shares sum to 100, exactly one control, distinct keys.")


class ExperimentStopInputSerializer(ClosedStrictSerializer):
    reason = serializers.CharField(max_length=500, allow_blank=True, required=False)


class ExperimentPromoteInputSerializer(ClosedStrictSerializer):
    variant = serializers.CharField(
        max_length=32, required=False, help_text="The key of the variant to promote; left out: the results' winner."
    )


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


class VariantOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    key = serializers.CharField()
    name = serializers.CharField()
    share = serializers.IntegerField()
    is_control = serializers.BooleanField()
    position = serializers.IntegerField()
    version = serializers.IntegerField(source="version_id", allow_null=True, help_text="Null: the active version.")
    rule_set = serializers.IntegerField(source="rule_set_id", allow_null=True, help_text="Null: the rules in force.")
    scorer = serializers.CharField()
    candidate_sizes = serializers.DictField(child=serializers.IntegerField(), allow_null=True)


class ExperimentEventOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    action = serializers.CharField()
    actor = serializers.CharField(source="actor.username", allow_null=True, default=None)
    at = serializers.DateTimeField()
    detail = serializers.JSONField()


class ExperimentOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField()
    surface = serializers.CharField()
    mode = serializers.CharField()
    status = serializers.CharField()
    starts_at = serializers.DateTimeField(allow_null=True)
    ends_at = serializers.DateTimeField(allow_null=True)
    outcome_window_hours = serializers.FloatField()
    conversion_kinds = serializers.CharField()
    created_by = serializers.CharField(source="created_by.username", allow_null=True, default=None)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    stopped_at = serializers.DateTimeField(allow_null=True)
    winner = serializers.CharField(source="winner.key", allow_null=True, default=None, help_text="The promoted key.")
    variants = VariantOutputSerializer(many=True, source="variants.all")


class ExperimentDetailOutputSerializer(ExperimentOutputSerializer):
    events = ExperimentEventOutputSerializer(many=True, help_text="The audit, newest first.")


class EstimateOutputSerializer(serializers.Serializer):
    value = serializers.FloatField(allow_null=True)
    variance = serializers.FloatField(allow_null=True)
    low = serializers.FloatField(allow_null=True, help_text="95% interval.")
    high = serializers.FloatField(allow_null=True)
    users = serializers.IntegerField()
    unit_variance = serializers.FloatField(allow_null=True)


class ComparisonOutputSerializer(serializers.Serializer):
    difference = serializers.FloatField(allow_null=True, help_text="Treatment minus control.")
    relative = serializers.FloatField(allow_null=True)
    p_value = serializers.FloatField(allow_null=True)
    alpha = serializers.FloatField()
    significant = serializers.BooleanField()
    users_needed = serializers.IntegerField(allow_null=True)


class VariantResultOutputSerializer(serializers.Serializer):
    variant_id = serializers.IntegerField()
    key = serializers.CharField()
    label = serializers.CharField()
    is_control = serializers.BooleanField()
    share = serializers.IntegerField()
    users = serializers.IntegerField()
    impressions = serializers.IntegerField()
    items_shown = serializers.IntegerField()
    click_through = EstimateOutputSerializer(allow_null=True)
    conversion = EstimateOutputSerializer(allow_null=True)
    mean_rating = EstimateOutputSerializer(allow_null=True)
    against_control = serializers.DictField(
        child=ComparisonOutputSerializer(), help_text="Per metric (click_through, conversion), against the control."
    )


class DailyOutputSerializer(serializers.Serializer):
    day = serializers.DateField()
    variant = serializers.CharField()
    items_shown = serializers.IntegerField()
    impressions = serializers.IntegerField()
    clicked = serializers.IntegerField()
    click_through = serializers.FloatField(allow_null=True)


class InterleavingOutputSerializer(serializers.Serializer):
    exposed_users = serializers.IntegerField()
    clicking_users = serializers.IntegerField()
    preference = serializers.FloatField(allow_null=True)
    preference_low = serializers.FloatField(allow_null=True)
    preference_high = serializers.FloatField(allow_null=True)
    p_value = serializers.FloatField(allow_null=True)
    wins = serializers.DictField(child=serializers.IntegerField(), help_text="Users preferring each key, and ties.")


class ExperimentResultsOutputSerializer(serializers.Serializer):
    """`results.report_data`: the figures of the results page."""

    experiment_id = serializers.IntegerField()
    name = serializers.CharField()
    status = serializers.CharField()
    mode = serializers.CharField()
    variants = VariantResultOutputSerializer(many=True)
    verdicts = serializers.ListField(child=serializers.CharField())
    winner_key = serializers.CharField(
        allow_null=True, help_text="A treatment significantly better than the control on click-through, else null."
    )
    daily = DailyOutputSerializer(many=True)
    interleaving = InterleavingOutputSerializer(allow_null=True, help_text="Interleaved experiments only.")


# --------------------------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------------------------

_NOT_FOUND = OpenApiResponse(description="No such experiment.")
_CONFLICT = OpenApiResponse(description="The experiment's status does not allow this.")


def _experiment(experiment_id: int) -> Experiment:
    return get_object_or_404(experiment_list(), pk=experiment_id)


def _detail(experiment_id: int) -> dict:
    """`ExperimentDetailOutputSerializer`'s body: the experiment (read again, after any write) and its audit."""
    experiment = _experiment(experiment_id)
    events = ExperimentEventOutputSerializer(experiment_events(experiment), many=True).data
    return {**ExperimentOutputSerializer(experiment).data, "events": events}


class ExperimentListApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(operation_id="experiments_list", responses=ExperimentOutputSerializer(many=True))
    def get(self, request):
        return Response(ExperimentOutputSerializer(experiment_list(), many=True).data)

    @extend_schema(
        operation_id="experiments_create",
        request=ExperimentInputSerializer,
        responses={201: ExperimentDetailOutputSerializer, 409: OpenApiResponse(description="The name is taken.")},
    )
    def post(self, request):
        serializer = ExperimentInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        experiment = experiment_create(actor=request.user, **serializer.validated_data)
        return Response(_detail(experiment.pk), status=status.HTTP_201_CREATED)


class ExperimentDetailApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(operation_id="experiments_retrieve", responses={200: ExperimentDetailOutputSerializer})
    def get(self, request, experiment_id: int):
        return Response(_detail(experiment_id))

    @extend_schema(
        operation_id="experiments_partial_update",
        request=ExperimentInputSerializer,
        responses={
            200: ExperimentDetailOutputSerializer,
            409: OpenApiResponse(description="Started: only its end, window and description change; or a taken name."),
        },
    )
    def patch(self, request, experiment_id: int):
        experiment = _experiment(experiment_id)
        serializer = ExperimentInputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        experiment_update(experiment=experiment, actor=request.user, **serializer.validated_data)
        return Response(_detail(experiment_id))


class ExperimentResultsApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(operation_id="experiments_results", responses={200: ExperimentResultsOutputSerializer})
    def get(self, request, experiment_id: int):
        return Response(report_data(experiment_report(_experiment(experiment_id))))


class ExperimentStartApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        operation_id="experiments_start",
        request=None,
        responses={
            200: ExperimentDetailOutputSerializer,
            400: OpenApiResponse(description="Not valid now: the surface is taken, or a version cannot serve."),
            409: OpenApiResponse(description="Not a draft."),
        },
    )
    def post(self, request, experiment_id: int):
        experiment_start(experiment=_experiment(experiment_id), actor=request.user)
        return Response(_detail(experiment_id))


class ExperimentStopApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        operation_id="experiments_stop",
        request=ExperimentStopInputSerializer,
        responses={200: ExperimentDetailOutputSerializer, 409: OpenApiResponse(description="Not running.")},
    )
    def post(self, request, experiment_id: int):
        experiment = _experiment(experiment_id)
        serializer = ExperimentStopInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        experiment_stop(experiment=experiment, actor=request.user, **serializer.validated_data)
        return Response(_detail(experiment_id))


class ExperimentPromoteApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        operation_id="experiments_promote",
        request=ExperimentPromoteInputSerializer,
        responses={
            200: ExperimentDetailOutputSerializer,
            400: OpenApiResponse(description="No such variant, or no winner to promote."),
            409: OpenApiResponse(description="Neither running nor stopped, or the version cannot be activated."),
        },
    )
    def post(self, request, experiment_id: int):
        experiment = _experiment(experiment_id)
        serializer = ExperimentPromoteInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        experiment_promote_by_key(
            experiment=experiment, variant_key=serializer.validated_data.get("variant"), actor=request.user
        )
        return Response(_detail(experiment_id))
