"""The Prometheus series of the platform, and the one-line calls that feed them.

Serving, training and the importers each call one function (or wear one decorator) from here;
nothing else in the code knows about Prometheus. Every call is a dictionary lookup and an
in-memory (or, in multiprocess mode, an mmap) write: microseconds, no database query. The one
series read from the database, the active model version, is computed when /metrics is scraped
(`config.metrics_scrape`).

prometheus-client rather than django-prometheus: the series asked for are domain series (by
surface, fallback reason, training phase, importer), which django-prometheus does not give; its
per-view and per-query middleware would add work to every request for series nobody reads, and
both need prometheus-client's multiprocess mode under gunicorn and Celery anyway.

Several processes, one scrape. gunicorn runs several workers and Celery trains and imports in yet
other processes, so with ``PROMETHEUS_MULTIPROC_DIR`` set every process writes its values to
files in that directory and a scrape of any web worker sums them all (prometheus-client's
multiprocess mode; docs/operations.md, "Metrics"). Unset, each process keeps its own values and
/metrics shows those of the process that answers: right for runserver and tests.

This module imports no Django model and needs no settings, so it can be imported before Django is
configured (gunicorn's master, a bare subprocess in the tests).
"""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, values

from config.env import env_str

# prometheus-client reads this variable itself, under this name, so it is read from the
# environment here rather than from a settings module: the choice must be made before the first
# series exists, and in processes that never load Django's settings.
MULTIPROCESS_DIRECTORY = env_str("PROMETHEUS_MULTIPROC_DIR")


def process_identifier(pid: int | None = None) -> str:
    """The name a process's metric files carry: host and pid.

    prometheus-client names them by pid alone, but docker compose's web and worker containers share
    one directory and each container counts its pids from 1: the host name keeps two containers'
    processes apart. No underscore: the library splits file names on it.
    """
    return f"{_HOST}-{pid if pid is not None else os.getpid()}"


_HOST = socket.gethostname().replace("_", "-") or "host"

if MULTIPROCESS_DIRECTORY:
    # The project creates its directory; an operator only chooses where it is.
    Path(MULTIPROCESS_DIRECTORY).mkdir(parents=True, exist_ok=True)
    values.ValueClass = values.MultiProcessValue(process_identifier=process_identifier)
else:
    # Also when the variable is set but empty, which prometheus-client alone would take as multiprocess.
    values.ValueClass = values.MutexValue

# The project's own series, apart from prometheus-client's default registry (process and GC
# series, which multiprocess mode cannot sum): a scrape shows recsys_* only, in either mode.
REGISTRY = CollectorRegistry(auto_describe=True)

# The surfaces serving answers (recommender.candidates.base.Surface). Their series exist from the
# start at zero, so a hit rate or a latency quantile is defined before the first request.
SURFACES = ("home", "related")

# From half a millisecond (a cached homepage) to ten seconds (a cold HNSW query under load).
SERVING_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# From a second (a phase of a small catalogue) to three hours (the training task's time limit).
TRAINING_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 10800.0)
IMPORT_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 10800.0)

SERVING_SECONDS = Histogram(
    "recsys_serving_request_duration_seconds",
    "Time to answer one recommendation request of a surface, cache lookup and impressions included.",
    ["surface"],
    buckets=SERVING_BUCKETS,
    registry=REGISTRY,
)
CACHE_HITS = Counter(
    "recsys_serving_cache_hits_total",
    "Lookups answered from a serving cache (home, related: the result caches; *_precomputed: the stored lists).",
    ["surface"],
    registry=REGISTRY,
)
CACHE_MISSES = Counter(
    "recsys_serving_cache_misses_total",
    "Lookups the surface's cache could not answer; hit rate = hits / (hits + misses).",
    ["surface"],
    registry=REGISTRY,
)
FALLBACKS = Counter(
    "recsys_serving_fallbacks_total",
    "Answers served by the popular-and-fresh fallback, by surface and reason (docs/serving.md).",
    ["surface", "reason"],
    registry=REGISTRY,
)
IMPRESSIONS = Counter("recsys_impressions_total", "Impressions written after serving.", ["surface"], registry=REGISTRY)
FEEDBACK = Counter("recsys_feedback_total", "Feedback events stored (committed), by kind.", ["kind"], registry=REGISTRY)
TRAINING_RUN_SECONDS = Histogram(
    "recsys_training_run_duration_seconds",
    "Time of one training run, every phase, by outcome (ready or failed).",
    ["outcome"],
    buckets=TRAINING_BUCKETS,
    registry=REGISTRY,
)
TRAINING_PHASE_SECONDS = Histogram(
    "recsys_training_phase_duration_seconds",
    "Time of one training phase each time it runs (training runs twice when the model is refitted).",
    ["phase"],
    buckets=TRAINING_BUCKETS,
    registry=REGISTRY,
)
IMPORT_SECONDS = Histogram(
    "recsys_import_duration_seconds",
    "Time of one catalogue import, by importer kind and outcome (ok or failed).",
    ["kind", "outcome"],
    buckets=IMPORT_BUCKETS,
    registry=REGISTRY,
)
IMPORT_ROWS = Counter(
    "recsys_import_rows_total", "Rows imports added, by importer kind and table.", ["kind", "table"], registry=REGISTRY
)
IMPORT_BAD_ROWS = Counter(
    "recsys_import_bad_rows_total", "Rows imports skipped as bad, by importer kind.", ["kind"], registry=REGISTRY
)

for _surface in SURFACES:
    SERVING_SECONDS.labels(surface=_surface)
    CACHE_HITS.labels(surface=_surface)
    CACHE_MISSES.labels(surface=_surface)


P = ParamSpec("P")


@functools.cache
def _child(series: Counter | Histogram, *label_values: str) -> Any:
    """The child of ``series`` for these label values (in the order of its label names), looked up once.

    ``series.labels(...)`` takes a lock and builds a key on every call (about 4 µs measured); a
    cached child costs a dictionary lookup. Every label here takes values from a small fixed set
    (surfaces, fallback reasons, phases, importer kinds, tables, feedback kinds), so the cache
    stays small.
    """
    return series.labels(*label_values)


class _Answer(Protocol):
    surface: str
    fallback_reason: str


class _Summary(Protocol):
    added: dict[str, int]
    bad_row_count: int


AnswerT = TypeVar("AnswerT", bound=_Answer)
SummaryT = TypeVar("SummaryT", bound=_Summary)
ResultT = TypeVar("ResultT")


def surface_observed(serve: Callable[P, AnswerT]) -> Callable[P, AnswerT]:
    """Decorate a surface: its latency and its fallbacks, read from the answer it returns.

    The whole call is timed (cache lookup, model path, item rows, impressions), which is what the
    request waits for; the ``ms=`` of the serving log line stops before the impressions.
    """

    @functools.wraps(serve)
    def observed(*args: P.args, **kwargs: P.kwargs) -> AnswerT:
        started = time.perf_counter()
        answer = serve(*args, **kwargs)
        surface_observe(answer.surface, time.perf_counter() - started, answer.fallback_reason)
        return answer

    return observed


def surface_observe(surface: str, seconds: float, fallback_reason: str) -> None:
    """One answer of a surface: its latency, and its fallback when it was one (`surface_observed`)."""
    _child(SERVING_SECONDS, surface).observe(seconds)
    if fallback_reason:
        _child(FALLBACKS, surface, fallback_reason).inc()


def cache_lookup(surface: str, *, hit: bool) -> None:
    """One lookup in a surface's cache."""
    _child(CACHE_HITS if hit else CACHE_MISSES, surface).inc()


def impressions_count(surface: str, count: int) -> None:
    _child(IMPRESSIONS, surface).inc(count)


def feedback_count(sender=None, *, kind: str, **signal_arguments) -> None:
    """Receiver of ``catalog.signals.feedback_recorded`` (connected in `config.apps`): one stored event."""
    _child(FEEDBACK, kind).inc()


def training_run_observed(run: Callable[P, ResultT]) -> Callable[P, ResultT]:
    """Decorate the training run: its duration, ``ready`` when it returns, ``failed`` when it raises."""

    @functools.wraps(run)
    def observed(*args: P.args, **kwargs: P.kwargs) -> ResultT:
        started = time.perf_counter()
        outcome = "failed"
        try:
            result = run(*args, **kwargs)
            outcome = "ready"
            return result
        finally:
            _child(TRAINING_RUN_SECONDS, outcome).observe(time.perf_counter() - started)

    return observed


def training_phase_observe(phase: str, seconds: float) -> None:
    _child(TRAINING_PHASE_SECONDS, phase).observe(seconds)


def import_observed(kind: str) -> Callable[[Callable[P, SummaryT]], Callable[P, SummaryT]]:
    """Decorate an importer of ``kind``: duration by outcome, and the rows of the summary it returns."""

    def decorate(importer: Callable[P, SummaryT]) -> Callable[P, SummaryT]:
        @functools.wraps(importer)
        def observed(*args: P.args, **kwargs: P.kwargs) -> SummaryT:
            started = time.perf_counter()
            outcome = "failed"
            try:
                summary = importer(*args, **kwargs)
                outcome = "ok"
            finally:
                _child(IMPORT_SECONDS, kind, outcome).observe(time.perf_counter() - started)
            _import_rows_count(kind, summary.added, summary.bad_row_count)
            return summary

        return observed

    return decorate


def _import_rows_count(kind: str, added: Mapping[str, int], bad_rows: int) -> None:
    for table, count in added.items():
        _child(IMPORT_ROWS, kind, table).inc(count)
    _child(IMPORT_BAD_ROWS, kind).inc(bad_rows)
