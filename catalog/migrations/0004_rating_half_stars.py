"""Allow half-star ratings (0.5), as in MovieLens' CSV datasets, unless an admin already changed the range."""
from django.db import migrations


def widen(apps, schema_editor):
    FeedbackKind = apps.get_model("catalog", "FeedbackKind")
    FeedbackKind.objects.filter(code="rating", min_value=1.0).update(min_value=0.5)


def narrow(apps, schema_editor):
    FeedbackKind = apps.get_model("catalog", "FeedbackKind")
    FeedbackKind.objects.filter(code="rating", min_value=0.5).update(min_value=1.0)


class Migration(migrations.Migration):
    dependencies = [("catalog", "0003_default_feedback_kinds")]
    operations = [migrations.RunPython(widen, narrow)]
