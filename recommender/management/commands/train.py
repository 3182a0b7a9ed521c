"""`manage.py train [--wait] [--json]`: queue a training run and optionally follow it to the end."""

from __future__ import annotations

import json
import time

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from recommender.models import ModelVersion, TrainingConfig, VersionStatus
from recommender.services.training import TrainingAlreadyRunning, model_training_request, model_version_train

TERMINAL = {VersionStatus.READY, VersionStatus.ACTIVE, VersionStatus.FAILED, VersionStatus.RETIRED}
METRIC_KEYS = ("precision_at_{k}", "recall_at_{k}", "ndcg_at_{k}", "auc", "coverage")


class Command(BaseCommand):
    help = "Queue a training run of the default (or a named) configuration."

    def add_arguments(self, parser):
        parser.add_argument("--config", help="TrainingConfig name (default: the one marked default).")
        parser.add_argument("--wait", action="store_true", help="Follow progress and print the metrics.")
        parser.add_argument("--json", action="store_true", help="End with one JSON line describing the version.")
        parser.add_argument("--inline", action="store_true", help="Train in this process instead of a worker.")
        parser.add_argument(
            "--worker-timeout",
            type=float,
            default=20.0,
            help="With --wait: seconds to wait for a worker to pick the run up before "
            "training in this process instead (default 20).",
        )
        parser.add_argument("--timeout", type=float, default=6 * 3600, help="With --wait: give up after this.")

    def handle(self, *args, **options):
        config = None
        if options["config"]:
            config = TrainingConfig.objects.filter(name=options["config"]).first()
            if config is None:
                raise CommandError(f"No training configuration named {options['config']!r}.")
        try:
            version = model_training_request(config=config, enqueue=not options["inline"])
        except TrainingAlreadyRunning as error:
            raise CommandError(error.message) from error
        except ValidationError as error:  # a configuration the service refuses (e.g. unknown families)
            raise CommandError("; ".join(error.messages)) from error
        self.stderr.write(
            f"Training v{version.pk} in this process."
            if options["inline"]
            else f"Queued v{version.pk} on the training queue."
        )
        if options["inline"]:
            self._run_here(version.pk)
        elif options["wait"]:
            self._follow(version.pk, options["worker_timeout"], options["timeout"])
        version.refresh_from_db()
        if options["wait"] or options["inline"]:
            self._print_table(version)
        if options["json"]:
            self.stdout.write(json.dumps(version_summary(version)))
        if version.status == VersionStatus.FAILED:
            raise CommandError(f"v{version.pk} failed: {version.error}")

    def _run_here(self, version_id: int) -> None:
        # None: a worker took it after all; _follow keeps watching.
        model_version_train(version_id=version_id)

    def _follow(self, version_id: int, worker_timeout: float, timeout: float) -> None:
        started = time.monotonic()
        last = None
        while True:
            version = ModelVersion.objects.get(pk=version_id)
            line = f"v{version.pk} {version.get_status_display()}"
            if version.status == VersionStatus.TRAINING:
                line += f" (epoch {version.epoch} of {version.epochs_total})"
            if line != last:
                self.stderr.write(line)
                last = line
            if version.status in TERMINAL:
                if version.status == VersionStatus.READY and not version.gate_reason:
                    time.sleep(0.2)  # the worker applies the gate right after `ready`
                    continue
                return
            waited = time.monotonic() - started
            if version.status == VersionStatus.QUEUED and waited > worker_timeout:
                self.stderr.write(
                    f"No worker picked v{version_id} up within {worker_timeout:.0f} s "
                    "(is one running? `make run` starts one); training in this process instead."
                )
                self._run_here(version_id)
                continue
            if waited > timeout:
                raise CommandError(f"Gave up waiting for v{version_id} after {timeout:.0f} s.")
            time.sleep(0.5)

    def _print_table(self, version: ModelVersion) -> None:
        k = version.config_snapshot.get("eval_k", 10)
        self.stdout.write(
            f"v{version.pk}: {version.get_status_display()}"
            + (f" — {version.gate_reason}" if version.gate_reason else "")
        )
        self.stdout.write(f"{'metric':<16}{'model':>10}{'popularity':>12}")
        for template in METRIC_KEYS:
            key = template.format(k=k)
            model, base = version.metrics.get(key), version.baseline_metrics.get(key)
            if model is not None:
                self.stdout.write(f"{key:<16}{model:>10.4f}{base if base is not None else float('nan'):>12.4f}")
        if version.phase_seconds:
            self.stdout.write("phases: " + ", ".join(f"{p} {s:.1f}s" for p, s in version.phase_seconds.items()))


def version_summary(version: ModelVersion) -> dict:
    metrics, baseline = version.metrics, version.baseline_metrics
    return {
        "version": version.pk,
        "status": version.status,
        "precision_at_10": metrics.get("precision_at_10"),
        "recall_at_10": metrics.get("recall_at_10"),
        "ndcg_at_10": metrics.get("ndcg_at_10"),
        "auc": metrics.get("auc"),
        "coverage": metrics.get("coverage"),
        "baseline_precision_at_10": baseline.get("precision_at_10"),
        "baseline": baseline,
        "gate_reason": version.gate_reason,
        "phase_seconds": version.phase_seconds,
        "error": version.error or None,
    }
