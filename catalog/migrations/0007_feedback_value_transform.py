"""FeedbackKind.value_transform, and the seeded ``play`` kind: an implicit count weighted by log(1 + plays).

``play`` is stateful: one (user, item) holds one current count (a later count supersedes it),
which is what listening logs such as Last.fm's user_artists.dat hold. Existing kinds keep
``none`` (kind weight, value ignored), so their training weights do not change.
"""

from django.db import migrations, models

PLAY_KIND = {
    "code": "play",
    "name": "Play",
    "weight": 1.0,
    "is_explicit": False,
    "is_stateful": True,
    "min_value": 0.0,
    "max_value": None,
    "default_value": 1.0,
    "value_transform": "log",
}


def create_play(apps, schema_editor):
    FeedbackKind = apps.get_model("catalog", "FeedbackKind")
    defaults = {key: value for key, value in PLAY_KIND.items() if key != "code"}
    FeedbackKind.objects.get_or_create(code=PLAY_KIND["code"], defaults=defaults)


def remove_play(apps, schema_editor):
    FeedbackKind = apps.get_model("catalog", "FeedbackKind")
    Feedback = apps.get_model("catalog", "Feedback")
    if not Feedback.objects.filter(kind_id=PLAY_KIND["code"]).exists():
        FeedbackKind.objects.filter(code=PLAY_KIND["code"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0006_feature_weight_range"),
    ]

    operations = [
        migrations.AddField(
            model_name="feedbackkind",
            name="value_transform",
            field=models.CharField(
                choices=[
                    ("none", "None: the kind weight, the value ignored"),
                    ("log", "Log: kind weight × log(1 + value)"),
                    ("confidence", "Confidence: kind weight × (1 + α·log(1 + value/ε))"),
                ],
                db_default="none",
                default="none",
                help_text="Implicit kinds only: how the value (a count: plays, purchases) scales the training weight.",
                max_length=16,
            ),
        ),
        migrations.RunPython(create_play, remove_play),
    ]
