"""OpenAPI post-processing: document the error answers every operation can give.

The views declare their success bodies and domain conflicts; the errors that come from the
framework around them (validation, authentication, paging, body limits, throttling, a database
outage) are the same everywhere, so they are added here, once, in the JSON shape
``config.exception_handlers`` produces. Schemathesis checks the API against exactly this.
"""
from __future__ import annotations

from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers

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


def _error(code: str) -> dict:
    return {"description": _DESCRIPTIONS[code],
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}}}}


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


def error_responses_add(result, generator, request, public):
    """drf-spectacular POSTPROCESSING_HOOKS entry: add the shared error responses to each operation."""
    result.setdefault("components", {}).setdefault("schemas", {})[ERROR_SCHEMA_NAME] = ERROR_SCHEMA
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for code in _error_codes(path, operation):
                operation["responses"].setdefault(code, _error(code))
    return result


class ApiAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, with request fields described as strictly as DRF checks them.

    DRF refuses blank strings (unless ``allow_blank``), strings made only of whitespace (it trims
    them), the NUL character, and ``null`` for a JSONField without ``allow_null``; the default
    mapping says none of that, so a client (or a fuzzer) reading the schema could send them.
    """

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if direction != "request":
            return schema
        if isinstance(field, serializers.CharField) and not isinstance(field, serializers.ChoiceField) \
                and schema.get("type") == "string" and "format" not in schema and "enum" not in schema:
            schema.setdefault("pattern", NON_BLANK_PATTERN if not field.allow_blank else NO_NUL_PATTERN)
            if not field.allow_blank:
                schema.setdefault("minLength", 1)
        elif isinstance(field, serializers.JSONField) and not field.allow_null and not schema.get("type"):
            schema.update({"type": "object", "additionalProperties": {}})
        return schema
