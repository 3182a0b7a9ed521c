from django.apps import AppConfig


class ExperimentsConfig(AppConfig):
    """A/B and interleaved tests of versions, rule sets and pools: its own app, since its variants
    point at the recommender's versions and rule sets (and the recommender never points back)."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "recommender.experiments"
    label = "experiments"
    verbose_name = "Experiments"
