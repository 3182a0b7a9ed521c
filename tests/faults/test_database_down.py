"""Database down or stuck: a real gunicorn on its OWN embedded PostgreSQL, which the test stops.

The server under test gets a second PostgreSQL in a temporary folder (never the shared
`.pgdata/`), so stopping it disturbs nobody. Promises checked (docs/resilience.md):

- a stuck database (a lock held elsewhere) cancels the request after the web statement timeout
  and answers a JSON 503 with Retry-After, well under 2 s;
- a stopped database: the API answers JSON 503 at once, pages a plain 503, /health/ready 503
  and /health/live 200;
- the database comes back: the same gunicorn workers (no restart) answer 200 again on every
  thread, because CONN_HEALTH_CHECKS drops the dead connections.

"Quickly" is a correctness bound here (2 s per request), not a benchmark.
"""

from __future__ import annotations

import threading

import psycopg
import pytest

from bench.serving_load_common import GunicornServer, api_clients_create, http_request, manage_on
from config.embedded_postgres import ensure_running, stop

pytestmark = pytest.mark.slow

QUICK_SECONDS = 2.0
DATABASE = "faults_app"


@pytest.fixture(scope="module")
def app_on_own_database(tmp_path_factory):
    folder = tmp_path_factory.mktemp("db-down")
    pg_path = folder / "pg"
    server = ensure_running(path=pg_path, database=DATABASE)
    url = server.url(DATABASE)
    gunicorn = None
    try:
        manage_on(url, "migrate", "--noinput")
        seeded = api_clients_create(url, users=1, items=3, prefix="down-")
        gunicorn = GunicornServer(
            database_url=url,
            log_path=folder / "gunicorn.log",
            workers=1,
            threads=4,
            # Lock timeout off, so a lock wait is ended by the statement timeout (both are bounded).
            env={"DATABASE_CONNECT_TIMEOUT": "2", "WEB_STATEMENT_TIMEOUT_MS": "800", "WEB_LOCK_TIMEOUT_MS": "0"},
        )
        gunicorn.wait_ready()
        yield {
            "server": gunicorn,
            "pg_path": pg_path,
            "url": url,
            "client": seeded["clients"][0],
            "items": seeded["items"],
        }
    finally:
        if gunicorn is not None:
            gunicorn.stop()
        stop(pg_path)


def _auth(client: dict) -> dict:
    return {"Authorization": f"Token {client['token']}"}


def _requests(app: dict) -> dict[str, dict]:
    """One request of each kind the fault must not turn into a 500 or a hang."""
    client = app["client"]
    return {
        "items list": {"method": "GET", "path": "/api/v1/items"},
        "recommendations": {
            "method": "GET",
            "path": f"/api/v1/users/{client['user']}/recommendations?k=5",
            "headers": _auth(client),
        },
        "feedback": {
            "method": "POST",
            "path": "/api/v1/feedback",
            "headers": _auth(client),
            "body": {"item": app["items"][0], "kind": "rating", "value": 4},
        },
    }


def _send(app: dict, spec: dict):
    return http_request(
        app["server"].port, spec["method"], spec["path"], body=spec.get("body"), headers=spec.get("headers"), timeout=30
    )


def _assert_json_503(answer, label: str) -> None:
    assert answer.status == 503, (label, answer.status, answer.body[:500])
    assert answer.headers["content-type"].startswith("application/json"), (label, answer.headers)
    assert answer.json()["code"] == "database_unavailable"
    assert int(answer.headers["retry-after"]) > 0
    assert answer.seconds < QUICK_SECONDS, (label, answer.seconds)


def test_the_api_serves_while_the_database_is_up(app_on_own_database):
    for label, spec in _requests(app_on_own_database).items():
        answer = _send(app_on_own_database, spec)
        assert answer.status in (200, 201), (label, answer.status, answer.body[:500])


def test_a_stuck_database_is_cut_off_by_the_statement_timeout(app_on_own_database):
    app = app_on_own_database
    # Another session holds an exclusive lock on the token table: every token lookup waits on it.
    with psycopg.connect(app["url"]) as blocker:
        blocker.execute("LOCK TABLE authtoken_token IN ACCESS EXCLUSIVE MODE")
        spec = _requests(app)["recommendations"]
        answers = [_send(app, spec) for _ in range(3)]
        blocker.rollback()
    for answer in answers:
        _assert_json_503(answer, "recommendations behind a lock")
        assert answer.seconds >= 0.7  # it really waited for the 800 ms timeout, then gave up
    assert "canceling statement due to statement timeout" in app["server"].output()
    assert _send(app, spec).status == 200  # the lock is gone: the same connection serves again


def test_database_down_answers_503_quickly_then_recovers_without_a_restart(app_on_own_database):
    app = app_on_own_database
    gunicorn: GunicornServer = app["server"]
    requests = _requests(app)
    # Warm every thread's connection first, so the recovery below has stale connections to drop.
    _concurrently(app, [requests["recommendations"]] * 8)
    workers_before = gunicorn.worker_pids()
    assert workers_before

    assert stop(app["pg_path"]) is True
    try:
        for _ in range(2):  # the second round runs on threads whose connection already failed
            for label, spec in requests.items():
                _assert_json_503(_send(app, spec), label)
        page = _send(app, {"method": "GET", "path": "/catalogue/", "headers": {"Accept": "text/html"}})
        assert page.status == 503 and page.headers["content-type"].startswith("text/html"), page.body[:300]
        assert b"Temporarily unavailable" in page.body and page.seconds < QUICK_SECONDS
        ready = _send(app, {"method": "GET", "path": "/health/ready"})
        assert ready.status == 503 and ready.json()["status"] == "error" and ready.seconds < QUICK_SECONDS
        live = _send(app, {"method": "GET", "path": "/health/live"})
        assert live.status == 200 and live.json() == {"status": "ok"}
    finally:
        ensure_running(path=app["pg_path"], database=DATABASE)

    # Back: no restart of gunicorn, every request (on every thread) is served again.
    answers = _concurrently(app, [requests["items list"], requests["recommendations"]] * 6)
    assert [answer.status for answer in answers] == [200] * len(answers), [a.body[:200] for a in answers]
    assert _send(app, {"method": "GET", "path": "/health/ready"}).status == 200
    assert _send(app, requests["feedback"]).status in (200, 201)
    assert gunicorn.worker_pids() == workers_before
    assert gunicorn.process.poll() is None


def _concurrently(app: dict, specs: list[dict]) -> list:
    answers: list = [None] * len(specs)

    def one(index: int) -> None:
        answers[index] = _send(app, specs[index])

    threads = [threading.Thread(target=one, args=(index,)) for index in range(len(specs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers
