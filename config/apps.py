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

        from catalog.signals import feedback_recorded
        from config.db_router import replica_pins_check
        from config.metrics import feedback_count

        # After commit, once per stored event, whichever path stored it (API, pages, batches).
        feedback_recorded.connect(feedback_count, dispatch_uid="config.metrics.feedback")
        checks.register(replica_pins_check)
