from django.apps import AppConfig


class ProjectConfig(AppConfig):
    """The project itself, as an app: the commands that span catalog and recommender live here.

    ``manage.py run_stack`` (the whole stack behind `make run`), ``stats`` (catalogue counts and the
    active model) and ``embedded_postgres``; catalog/ never imports the recommender, so they cannot
    live there. No models.
    """

    name = "config"
    label = "project"
    verbose_name = "Project"

    def ready(self) -> None:
        from django.core import checks

        from config.db_router import replica_pins_check

        checks.register(replica_pins_check)
