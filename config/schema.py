"""OpenAPI post-processing: document the error answers every operation can give.

The views declare their success bodies and domain conflicts; the errors that come from the
framework around them (validation, authentication, paging, body limits, throttling, a database
outage) are the same everywhere, so they are added here, once, in the JSON shape
``config.exception_handlers`` produces. Schemathesis checks the API against exactly this.
"""

from __future__ import annotations

import copy

from django.core.validators import RegexValidator
from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers

from config.strict_json import ClosedStrictSerializer

# ECMA regular expressions, as OpenAPI uses: no NUL anywhere, and at least one visible character.
NO_NUL_PATTERN = r"^[^\u0000]*$"
NON_BLANK_PATTERN = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"

ERROR_SCHEMA_NAME = "Error"
ERROR_SCHEMA = {
    "type": "object",
    "description": "``detail`` for most errors; for validation errors, the offending fields with their messages.",
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": True,
}

_DESCRIPTIONS = {
    "400": "Invalid input: the fields at fault, or ``detail``.",
    "401": "Not signed in (send ``Authorization: Token …``).",
    "403": "Signed in, but not allowed.",
    "404": "No such object, or no such page of results.",
    "413": "The body is larger than DATA_UPLOAD_MAX_MEMORY_SIZE.",
    "415": "The body is not JSON.",
    "429": "Throttled; the Retry-After header says when to retry.",
    "503": "The database is unavailable; retry shortly.",
}


# Free-form JSON as PostgreSQL's jsonb can store it: anything but the NUL character, in values
# and in keys. Recursive, so it is a component (added by error_responses_add).
JSON_VALUE_SCHEMA_NAME = "JsonValue"
JSON_VALUE_REF = {"$ref": f"#/components/schemas/{JSON_VALUE_SCHEMA_NAME}"}
JSON_OBJECT_SCHEMA = {
    "type": "object",
    "propertyNames": {"pattern": NO_NUL_PATTERN},
    "additionalProperties": JSON_VALUE_REF,
}
JSON_VALUE_SCHEMA = {
    "description": "Any JSON value; no string or key may contain the NUL character.",
    "anyOf": [
        {"type": ["null", "boolean", "number"]},
        {"type": "string", "pattern": NO_NUL_PATTERN},
        {"type": "array", "items": JSON_VALUE_REF},
        JSON_OBJECT_SCHEMA,
    ],
}

_ERROR_CONTENT = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}}}


def _error(code: str) -> dict:
    return {"description": _DESCRIPTIONS[code], "content": _ERROR_CONTENT}


def _error_codes(path: str, operation: dict) -> list[str]:
    parameters = operation.get("parameters", [])
    has_body = "requestBody" in operation
    codes = ["429", "503"]
    if has_body or any(p.get("in") == "query" for p in parameters):
        codes.append("400")
    if {} not in operation.get("security", [{}]):  # spectacular adds {} when anonymous calls are allowed
        codes += ["401", "403"]
    if "{" in path or any(p.get("name") == "page" for p in parameters):
        codes.append("404")
    if has_body:
        codes += ["413", "415"]
    return codes


def _resolve(schema: dict, components: dict) -> dict:
    ref = schema.get("$ref", "")
    return components.get(ref.rsplit("/", 1)[-1], {}) if ref.startswith("#/components/schemas/") else schema


def _required_of(schema: dict, components: dict) -> set[str]:
    """The properties ``schema`` requires, through ``$ref`` and ``allOf``."""
    schema = _resolve(schema, components)
    required = set(schema.get("required", []))
    for part in schema.get("allOf", []):
        required |= _required_of(part, components)
    return required


def _body_required_by_variants(operation: dict, components: dict) -> None:
    """A body that is a oneOf of variants which all require fields cannot be left out.

    spectacular marks a body required from the top-level ``required`` of its schema, which a
    polymorphic body (one feedback event, or a batch) does not have.
    """
    body = operation.get("requestBody")
    if not body or body.get("required"):
        return
    for media in body.get("content", {}).values():
        schema = _resolve(media.get("schema", {}), components)
        variants = schema.get("oneOf", [])
        if variants and all(_required_of(variant, components) for variant in variants):
            body["required"] = True


def error_responses_add(result, generator, request, public):
    """drf-spectacular POSTPROCESSING_HOOKS entry: add the shared error responses to each operation."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components[ERROR_SCHEMA_NAME] = ERROR_SCHEMA
    components[JSON_VALUE_SCHEMA_NAME] = JSON_VALUE_SCHEMA
    for path, operations in result.get("paths", {}).items():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            _body_required_by_variants(operation, components)
            for code in _error_codes(path, operation):
                operation["responses"].setdefault(code, _error(code))
            for code, response in operation["responses"].items():
                # Errors the views declare themselves (409 conflicts) have the same JSON shape.
                if code[0] in "45" and "content" not in response:
                    response["content"] = _ERROR_CONTENT
    return result


def _nullable_format_as_any_of(schema: dict) -> dict:
    """``{"type": ["string", "null"], "format": "date-time"}`` as ``anyOf`` [date-time, null].

    Same meaning; spelled out because schemathesis' coverage phase drops the format of a type
    list and would send ``""`` as a valid date-time.
    """
    outer_keys = {"description", "default", "readOnly", "writeOnly", "deprecated", "title"}
    inner = {key: value for key, value in schema.items() if key not in outer_keys}
    inner["type"] = _main_type(schema)
    outer = {key: value for key, value in schema.items() if key in outer_keys}
    return {**outer, "anyOf": [inner, {"type": "null"}]}


def _main_type(schema: dict) -> str | None:
    """``"string"`` for both ``"string"`` and OpenAPI 3.1's nullable ``["string", "null"]``."""
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((t for t in kind if t != "null"), None)
    return kind


class ApiAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, with request fields described as strictly as DRF checks them.

    DRF refuses blank strings (unless ``allow_blank``), strings made only of whitespace (it trims
    them), the NUL character, and ``null`` for a JSONField without ``allow_null``; the default
    mapping says none of that, so a client (or a fuzzer) reading the schema could send them.
    """

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        closed = isinstance(serializer, ClosedStrictSerializer) or (
            isinstance(serializer, type) and issubclass(serializer, ClosedStrictSerializer)
        )
        if direction == "request" and closed:
            schema["additionalProperties"] = False  # it refuses unknown fields with a 400
        return schema

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if direction != "request":
            return schema
        if isinstance(field, serializers.ListSerializer):
            # DRF checks these on the list itself, not through validators spectacular would read.
            if not field.allow_empty:
                schema.setdefault("minItems", max(1, field.min_length or 0))
            elif field.min_length:
                schema.setdefault("minItems", field.min_length)
            if field.max_length is not None:
                schema.setdefault("maxItems", field.max_length)
        elif (
            isinstance(field, serializers.CharField)
            and not isinstance(field, serializers.ChoiceField)
            and _main_type(schema) == "string"
            and "format" not in schema
            and "enum" not in schema
            and not any(isinstance(v, RegexValidator) for v in field.validators)
        ):  # slugs: their own pattern
            schema.setdefault("pattern", NON_BLANK_PATTERN if not field.allow_blank else NO_NUL_PATTERN)
            # With allow_blank, spectacular then offers "" as a separate oneOf branch; the minimum
            # keeps the two branches apart (oneOf: "" must match exactly one of them).
            schema.setdefault("minLength", 1)
        elif isinstance(field, serializers.JSONField) and not field.allow_null and not schema.get("type"):
            schema.update(copy.deepcopy(JSON_OBJECT_SCHEMA))
        if isinstance(schema.get("type"), list) and "null" in schema["type"] and "format" in schema:
            schema = _nullable_format_as_any_of(schema)
        return schema
