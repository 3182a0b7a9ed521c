from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_schedules(sender, **kwargs) -> None:
    from config.schedules import periodic_tasks_sync

    periodic_tasks_sync()


class RecommenderConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "recommender"
    verbose_name = "Recommender"

    def ready(self) -> None:
        post_migrate.connect(_sync_schedules, sender=self, dispatch_uid="recommender.sync_schedules")
        from catalog.item_panels import ItemPanel, item_panel_register
        from recommender.receivers import receivers_connect

        receivers_connect()
        item_panel_register(
            ItemPanel(
                key="related",
                heading="Related items",
                link_text="Show related items",
                url_name="item-related-panel",
                refresh_after_rating=True,
            )
        )
