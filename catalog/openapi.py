"""The OpenAPI description of the feedback body: one event, or a batch under ``events``.

The view tells them apart by the ``events`` key alone (a batch may carry other keys, which are
ignored; an event never has ``events``), so the event variant says it has no ``events``: with
that, every body matches exactly one variant, as ``oneOf`` requires. Registered by
`catalog.apps.CatalogConfig.ready` (importing this module is what registers an extension).
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiSerializerExtension


class FeedbackRecordInputSchema(OpenApiSerializerExtension):
    target_class = "catalog.apis.FeedbackRecordInputSerializer"

    def get_name(self):
        return "FeedbackRecordInput"

    def map_serializer(self, auto_schema, direction):
        from catalog.apis.feedback import FeedbackBatchInputSerializer, FeedbackEventInputSerializer

        event = auto_schema.resolve_serializer(FeedbackEventInputSerializer, direction).ref
        batch = auto_schema.resolve_serializer(FeedbackBatchInputSerializer, direction).ref
        return {"oneOf": [{"allOf": [event], "not": {"required": ["events"]}}, batch]}
