"""The OpenAPI description of rule inputs: one variant per rule kind, with that kind's parameters.

A rule's ``params`` depend on its ``kind``, so the request body is a ``oneOf`` with one variant
per kind, each derived from ``rerank.params.KIND_PARAMS`` (the same table ``params_clean``
checks against, so the schema and the validation cannot drift apart). What JSON Schema cannot
say stays a documented 400: the feature type and the pinned item must exist, and ``ends_at``
must come after ``starts_at``.

PATCH is the one place where validity depends on the stored rule: parameters sent without a
``kind`` are checked against the rule's current kind, and a new ``kind`` sent without
parameters keeps the current ones (which must then suit it). Its schema therefore has one
variant per kind (``kind`` given) plus one without ``kind`` whose ``params`` is any object.
"""

from __future__ import annotations

import copy
from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension

from config.schema import JSON_OBJECT_SCHEMA, NON_BLANK_PATTERN
from recommender.rerank.params import KIND_HELP, KIND_PARAMS, Param, RuleKind, params_help_lines


def _param_schema(param: Param) -> dict[str, Any]:
    """The JSON schema of one parameter, as ``rerank.params._clean_value`` accepts it."""
    text = {"type": "string", "minLength": 1, "pattern": NON_BLANK_PATTERN}
    if param.type == "bool":
        schema: dict[str, Any] = {"type": "boolean"}
    elif param.type in ("int", "float"):
        schema = {"type": "integer" if param.type == "int" else "number"}
        if param.minimum is not None:
            schema["exclusiveMinimum" if param.minimum_exclusive else "minimum"] = param.minimum
        if param.maximum is not None:
            schema["exclusiveMaximum" if param.maximum_exclusive else "maximum"] = param.maximum
    elif param.type == "choice":
        schema = {"type": "string", "enum": list(param.choices)}
    elif param.type == "str":
        schema = dict(text)
    elif param.type == "str_list":  # one string is taken as a list of one
        schema = {"anyOf": [dict(text), {"type": "array", "minItems": 1, "items": dict(text)}]}
    else:
        raise AssertionError(f"unknown parameter type {param.type}")
    if param.nullable:
        schema["type"] = [schema["type"], "null"]
    if not param.required:
        schema["default"] = param.default
    schema["description"] = param.help
    return schema


def params_schema(kind: str) -> dict[str, Any]:
    """The JSON schema of ``params`` for ``kind``: its parameters only (unknown keys are refused)."""
    specs = KIND_PARAMS[kind]
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {param.name: _param_schema(param) for param in specs},
        "additionalProperties": False,
        "description": "; ".join(params_help_lines(kind)) or "This kind takes no parameters.",
    }
    required = [param.name for param in specs if param.required]
    if required:
        schema["required"] = required
    if kind == RuleKind.BOOST_FEATURE:
        # params_clean: a multiplying factor must be > 0 (mode defaults to multiply).
        schema["anyOf"] = [
            {"required": ["mode"], "properties": {"mode": {"enum": ["add"]}}},
            {"properties": {"amount": {"type": "number", "exclusiveMinimum": 0}}},
        ]
    return schema


def _kind_variant(base: dict[str, Any], kind: str, *, partial: bool) -> dict[str, Any]:
    variant = copy.deepcopy(base)
    variant["title"] = kind
    variant["description"] = KIND_HELP[kind]
    # Wrapped in allOf so that spectacular's enum post-processing, which merges enums by property
    # name, leaves the thirteen one-value enums alone.
    variant["properties"]["kind"] = {"allOf": [{"type": "string", "enum": [kind]}]}
    variant["properties"]["params"] = params_schema(kind)
    required = set(variant.get("required", [])) | {"kind"}
    # Left out, params default to {} (POST, PUT): a kind with required parameters needs them.
    if not partial and any(param.required for param in KIND_PARAMS[kind]):
        required.add("params")
    variant["required"] = sorted(required)
    return variant


class RuleInputSchema(OpenApiSerializerExtension):
    """drf-spectacular: describe ``RuleInputSerializer`` as one variant per rule kind."""

    target_class = "recommender.apis.RuleInputSerializer"

    def map_serializer(self, auto_schema, direction):
        base = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        partial = bool(getattr(self.target, "partial", False))
        variants = [_kind_variant(base, kind, partial=partial) for kind in RuleKind.values]
        schema: dict[str, Any] = {"oneOf": variants}  # no top-level "type": spectacular would drop it
        if partial:
            unchanged_kind = copy.deepcopy(base)
            unchanged_kind["title"] = "kind unchanged"
            unchanged_kind["properties"].pop("kind", None)
            unchanged_kind["properties"]["params"] = {
                **copy.deepcopy(JSON_OBJECT_SCHEMA),
                "description": "Checked against the rule's current kind (see its variant above).",
            }
            unchanged_kind["not"] = {"required": ["kind"]}
            variants.append(unchanged_kind)
        else:
            schema["required"] = sorted(base.get("required", []))  # read by spectacular: the body is required
        return schema
