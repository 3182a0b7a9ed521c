from django.apps import AppConfig


class CatalogConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "catalog"
    verbose_name = "Catalogue"

    def ready(self) -> None:
        # drf-spectacular registers an extension when its module is imported.
        from catalog import openapi  # noqa: F401
