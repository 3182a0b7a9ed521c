"""A real gunicorn on the test database, and simulated visitors who browse and click through the API.

The server is `bench.serving_load_common.GunicornServer` (the fault tests' and load benchmarks'),
pointed at the test database: the tests using it are transactional, so what they write is
committed and the server's processes see it.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field

import pytest
from rest_framework.authtoken.models import Token

from bench.serving_load_common import GunicornServer, http_request
from catalog.models import UserProfile
from tests.recommender.conftest import _test_database_url


def tokens_create(profiles: list[UserProfile]) -> dict[str, str]:
    """External id → API token of each profile's user (created when missing)."""
    return {profile.external_id: Token.objects.get_or_create(user=profile.user)[0].key for profile in profiles}


@pytest.fixture
def gunicorn_on_test_database(transactional_db, tmp_path):
    """Start servers on the test database: ``start(workers=1)`` returns a ready GunicornServer.

    Every server started is stopped at the end of the test.
    """
    servers: list[GunicornServer] = []

    def start(*, workers: int = 1, threads: int = 4) -> GunicornServer:
        server = GunicornServer(
            database_url=_test_database_url(),
            log_path=tmp_path / f"gunicorn-{len(servers)}.log",
            workers=workers,
            threads=threads,
            # The impressions the results read are written behind; a short interval keeps waits short.
            env={"IMPRESSIONS_FLUSH_SECONDS": "0.1"},
        )
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()


def click_draw(seed: int, user: str, item: str) -> float:
    """A uniform [0, 1) draw fixed by (seed, user, item): whether a visitor takes to an item is decided
    once, the same on every showing and every run (a second showing is no second chance)."""
    digest = hashlib.sha256(f"{seed}:{user}:{item}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class Traffic:
    """What the simulated visitors saw and did."""

    statuses: list[int] = field(default_factory=list)
    shown: dict[str, list[tuple[str, str, float]]] = field(default_factory=dict)  # variant -> (user, item, p click)
    clicks: int = 0
    variants_by_user: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def planted_rate(self, variant: str) -> float:
        """The click-through the visitors' probabilities imply for the (user, item) pairs a variant showed.

        The results count each (user, item) pair once, and a visitor's coin for a pair is drawn
        once (`click_draw`), so a pair is clicked with its probability however often it is shown.
        """
        pairs = {(user, item): p for user, item, p in self.shown[variant]}
        return sum(pairs.values()) / len(pairs)


def browse(
    server: GunicornServer,
    *,
    tokens: dict[str, str],
    click_probability,
    sessions: int,
    k: int = 10,
    seed: int = 0,
    clients: int = 4,
) -> Traffic:
    """Each visitor opens their homepage ``sessions`` times through the API and clicks each item shown
    with ``click_probability(user, item)``, posting a ``click`` feedback; ``clients`` threads in parallel."""
    traffic = Traffic()
    users = sorted(tokens)

    clicked: set[tuple[str, str]] = set()

    def visit(user: str, connection) -> None:
        headers = {"Authorization": f"Token {tokens[user]}"}
        answer = http_request(
            server.port, "GET", f"/api/v1/users/{user}/recommendations?k={k}", headers=headers, connection=connection
        )
        with traffic.lock:
            traffic.statuses.append(answer.status)
        if answer.status != 200:
            return
        body = answer.json()
        variant = (body.get("experiment") or {}).get("variant") or "none"
        for entry in body["items"]:
            item = entry["external_id"]
            p = click_probability(user, item)
            with traffic.lock:
                traffic.shown.setdefault(variant, []).append((user, item, p))
                traffic.variants_by_user[user] = variant
            with traffic.lock:
                first_click = (user, item) not in clicked and click_draw(seed, user, item) < p
                if first_click:
                    clicked.add((user, item))
            if first_click:
                posted = http_request(
                    server.port,
                    "POST",
                    "/api/v1/feedback",
                    body={"user": user, "item": item, "kind": "click"},
                    headers=headers,
                    connection=connection,
                )
                with traffic.lock:
                    traffic.statuses.append(posted.status)
                    traffic.clicks += 1

    def worker(index: int) -> None:
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        try:
            for _ in range(sessions):
                for user in users[index::clients]:
                    visit(user, connection)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return traffic
