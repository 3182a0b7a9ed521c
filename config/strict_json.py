"""Input serializers that take JSON types as the schema states them.

DRF coerces generously: ``0`` becomes ``"0"`` for a CharField, ``"5"`` becomes ``5`` for an
IntegerField, ``"yes"`` becomes ``True`` for a BooleanField. That is convenient for HTML forms,
but this is a JSON API whose OpenAPI schema is the contract, so a value of the wrong JSON type is
refused with a 400 naming the field.
"""

from __future__ import annotations

from rest_framework import serializers

_JSON_TYPES: list[tuple[type, tuple[type, ...], str]] = [
    (serializers.BooleanField, (bool,), "a boolean"),
    (serializers.ChoiceField, (str,), "a string"),
    (serializers.CharField, (str,), "a string"),
    (serializers.IntegerField, (int,), "an integer"),
    (serializers.FloatField, (int, float), "a number"),
    (serializers.ListSerializer, (list,), "an array"),
    (serializers.ListField, (list,), "an array"),
    (serializers.Serializer, (dict,), "an object"),
]


def _type_error(field: serializers.Field, value) -> str | None:
    if value is None:
        return None  # the field's own allow_null decides
    for field_class, json_types, name in _JSON_TYPES:
        if isinstance(field, field_class):
            wrong_bool = isinstance(value, bool) and bool not in json_types
            # JSON Schema (OpenAPI 3.1) counts 36.0 as an integer: a number with no fraction.
            whole_float = int in json_types and isinstance(value, float) and value.is_integer()
            if wrong_bool or not (isinstance(value, json_types) or whole_float):
                return f"Must be {name}."
            return None
    return None


class StrictSerializer(serializers.Serializer):
    def to_internal_value(self, data):
        if isinstance(data, dict):
            errors = {}
            for name, field in self.fields.items():
                if not field.read_only and field.source != "*" and name in data:
                    message = _type_error(field, data[name])
                    if message:
                        errors[name] = [message]
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


# A StrictSerializer that also refuses fields it does not know (400 naming each one). DRF ignores
# unknown keys, so a misspelt field ("shares" for "share") would be dropped without a word. The
# OpenAPI schema says the same: ``additionalProperties: false`` (config.schema.ApiAutoSchema).
# A comment, not a docstring: spectacular would show a docstring as every subclass's description.
class ClosedStrictSerializer(StrictSerializer):
    def to_internal_value(self, data):
        if isinstance(data, dict):
            known = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(str(key) for key in data if key not in known)
            if unknown:
                raise serializers.ValidationError({key: ["Unknown field."] for key in unknown})
        return super().to_internal_value(data)
