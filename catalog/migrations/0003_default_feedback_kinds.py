"""Seed the feedback kinds every catalogue starts with; admins edit weights afterwards."""
from django.db import migrations

DEFAULT_KINDS = [
    # code, name, weight, explicit, stateful, min, max, default value
    ("rating", "Rating", 1.0, True, True, 0.5, 5.0, 5.0),  # half stars, as in MovieLens CSV data
    ("like", "Like", 1.0, False, True, None, None, 1.0),
    ("dislike", "Dislike", -1.0, False, True, None, None, 1.0),
    ("view", "View", 0.5, False, False, None, None, 1.0),
    ("click", "Click", 0.5, False, False, None, None, 1.0),
    ("purchase", "Purchase", 2.0, False, False, None, None, 1.0),
]


def create_kinds(apps, schema_editor):
    FeedbackKind = apps.get_model("catalog", "FeedbackKind")
    for code, name, weight, explicit, stateful, low, high, default in DEFAULT_KINDS:
        FeedbackKind.objects.get_or_create(
            code=code,
            defaults=dict(name=name, weight=weight, is_explicit=explicit, is_stateful=stateful,
                          min_value=low, max_value=high, default_value=default),
        )


class Migration(migrations.Migration):
    dependencies = [("catalog", "0002_initial")]
    operations = [migrations.RunPython(create_kinds, migrations.RunPython.noop)]
