from django.db import migrations


def create_default(apps, schema_editor):
    TrainingConfig = apps.get_model("recommender", "TrainingConfig")
    if not TrainingConfig.objects.filter(is_default=True).exists():
        TrainingConfig.objects.get_or_create(name="default", defaults={"is_default": True})


class Migration(migrations.Migration):
    dependencies = [("recommender", "0001_initial")]
    operations = [migrations.RunPython(create_default, migrations.RunPython.noop)]
