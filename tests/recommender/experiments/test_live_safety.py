"""Experiments on a live server: assignment survives processes and restarts, and stopping or
promoting mid-traffic answers every request (no 5xx) and switches every process over.

Each test runs real gunicorn servers on the test database (`conftest.gunicorn_on_test_database`)
while this process changes the experiment through the services, as the dashboard and API do.
"""

from __future__ import annotations

import http.client
import threading
import time

import pytest

from bench.serving_load_common import GunicornServer, http_request
from recommender.experiments.models import Experiment
from recommender.experiments.services import (
    VariantSpec,
    experiment_create,
    experiment_promote,
    experiment_start,
    experiment_stop,
)
from recommender.models import ModelVersion
from recommender.selectors import active_version
from tests.recommender.conftest import build_planted_catalog, wait_for
from tests.recommender.experiments.conftest import tokens_create
from tests.recommender.test_training import train_inline

pytestmark = pytest.mark.slow


def _catalog_with_tokens() -> dict[str, str]:
    catalog = build_planted_catalog(clusters=2, users_per_cluster=20, items_per_cluster=20, ratings_per_user=8)
    return tokens_create([profile for profiles in catalog.profiles_by_cluster.values() for profile in profiles])


def _recommendations(server: GunicornServer, user: str, token: str, connection=None):
    return http_request(
        server.port,
        "GET",
        f"/api/v1/users/{user}/recommendations?k=5",
        headers={"Authorization": f"Token {token}"},
        connection=connection,
    )


def _variants_seen(server: GunicornServer, tokens: dict[str, str]) -> dict[str, str]:
    """User → the variant each of their answers named (each user asked twice, on fresh connections)."""
    seen: dict[str, set[str]] = {}
    for _ in range(2):
        for user, token in tokens.items():
            answer = _recommendations(server, user, token)
            assert answer.status == 200, answer.body[:300]
            seen.setdefault(user, set()).add(answer.json()["experiment"]["variant"])
    assert all(len(variants) == 1 for variants in seen.values()), seen
    return {user: variants.pop() for user, variants in seen.items()}


def test_a_user_keeps_their_variant_across_server_processes_and_a_restart(gunicorn_on_test_database):
    tokens = _catalog_with_tokens()
    train_inline()
    experiment_start(
        experiment=experiment_create(
            name="stable",
            variants=[
                VariantSpec(key="A", share=50, is_control=True, candidate_sizes={"popular": 20}),
                VariantSpec(key="B", share=50),
            ],
        )
    )
    first = gunicorn_on_test_database(workers=2, threads=2)
    second = gunicorn_on_test_database(workers=2, threads=2)
    assert first.worker_pids().isdisjoint(second.worker_pids())

    in_first = _variants_seen(first, tokens)
    in_second = _variants_seen(second, tokens)
    first.stop()
    restarted = gunicorn_on_test_database(workers=2, threads=2)
    after_restart = _variants_seen(restarted, tokens)

    assert in_first == in_second == after_restart
    assert set(in_first.values()) == {"A", "B"}


class Load:
    """``clients`` threads asking for users' homepages in a loop until stopped; every answer kept."""

    def __init__(self, server: GunicornServer, tokens: dict[str, str], *, clients: int = 4) -> None:
        self.server, self.tokens = server, tokens
        self.answers: list[tuple[float, int, dict | None]] = []  # (monotonic time, status, body)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(index, clients)) for index in range(clients)]

    def _run(self, index: int, clients: int) -> None:
        users = sorted(self.tokens)[index::clients]
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=60)
        try:
            while not self._stop.is_set():
                for user in users:
                    answer = _recommendations(self.server, user, self.tokens[user], connection)
                    body = answer.json() if answer.status == 200 else None
                    with self._lock:
                        self.answers.append((time.monotonic(), answer.status, body))
        finally:
            connection.close()

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def count(self) -> int:
        with self._lock:
            return len(self.answers)

    def after(self, moment: float) -> list[tuple[float, int, dict | None]]:
        with self._lock:
            return [answer for answer in self.answers if answer[0] > moment]


def _run_for(load: Load, answers: int, timeout: float = 60) -> None:
    target = load.count() + answers
    wait_for(lambda: load.count() >= target, timeout=timeout, message=f"{answers} more answers under load")


def test_stopping_mid_traffic_answers_every_request(gunicorn_on_test_database):
    tokens = _catalog_with_tokens()
    train_inline()
    experiment = experiment_start(
        experiment=experiment_create(
            name="stopped under load",
            variants=[
                VariantSpec(key="A", share=50, is_control=True, candidate_sizes={"popular": 20}),
                VariantSpec(key="B", share=50),
            ],
        )
    )
    server = gunicorn_on_test_database(workers=2, threads=2)

    with Load(server, tokens) as load:
        _run_for(load, 200)
        experiment_stop(experiment=experiment)
        stopped_at = time.monotonic()
        _run_for(load, 400)

    statuses = [status for _, status, _ in load.answers]
    assert set(statuses) == {200}, sorted(set(statuses))
    before = [body for moment, _, body in load.answers if moment <= stopped_at]
    assert before and all(body["experiment"]["name"] == "stopped under load" for body in before)
    # Every process sees the stop by its next request (the generation check), so the answers
    # started well after it carry no experiment; the last 200 are far past any in flight.
    late = [body for _, _, body in load.after(stopped_at)][-200:]
    assert len(late) == 200 and all(body["experiment"] is None for body in late)
    assert all(item["variant"] is None for body in late for item in body["items"])


def test_promoting_mid_traffic_switches_every_answer_to_the_winners_version(gunicorn_on_test_database):
    tokens = _catalog_with_tokens()
    challenger = train_inline()
    incumbent = train_inline()  # the newer run is active; the first stays ready
    assert active_version().pk == incumbent.pk and challenger.pk != incumbent.pk
    experiment = experiment_start(
        experiment=experiment_create(
            name="promoted under load",
            variants=[
                VariantSpec(key="A", share=50, is_control=True),
                VariantSpec(key="B", share=50, version=ModelVersion.objects.get(pk=challenger.pk)),
            ],
        )
    )
    server = gunicorn_on_test_database(workers=2, threads=2)

    with Load(server, tokens) as load:
        _run_for(load, 200)
        promoted: Experiment = experiment_promote(experiment=experiment, variant=experiment.variants.get(key="B"))
        promoted_at = time.monotonic()
        _run_for(load, 400)

    assert promoted.status == "completed" and active_version().pk == challenger.pk
    statuses = [status for _, status, _ in load.answers]
    assert set(statuses) == {200}, sorted(set(statuses))
    versions = {body["version"] for _, _, body in load.answers}
    assert versions == {incumbent.pk, challenger.pk}  # both served before: the split was live
    late = [body for _, _, body in load.after(promoted_at)][-200:]
    assert len(late) == 200
    assert all(body["version"] == challenger.pk and body["experiment"] is None for body in late)
