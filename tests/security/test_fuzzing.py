"""Schemathesis against the OpenAPI schema, in process (WSGI), as staff with a token.

Every operation of the schema gets positive and negative examples (wrong types, out-of-range
values, missing fields) and every response is run through all of schemathesis' per-response
checks: no 5xx, status codes, content types, headers and bodies as documented, negative data
refused. The number of examples per operation is bounded
(``FUZZ_MAX_EXAMPLES``, default 25) so the whole run stays well under two minutes.

One check is left out, on purpose: ``positive_data_acceptance`` asserts that every request the
schema allows succeeds. Referential and per-kind rules cannot be written into an OpenAPI schema
(a feedback event for an item that does not exist, rule parameters that depend on the rule's
kind, a duplicate external id), and refusing those with a 400 is correct. Every other check,
negative data rejection included, runs on every example.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import schemathesis
from schemathesis.checks import positive_data_acceptance
from hypothesis import HealthCheck, settings
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from rest_framework.authtoken.models import Token

from config.wsgi import application
from tests.security.conftest import build_world

REPO = Path(__file__).resolve().parents[2]
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "25"))

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)


@pytest.fixture
def keep_test_connection():
    """The real WSGI handler closes the connection after each request, which would end the
    test's transaction; Django's own test client disconnects the same receiver."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def staff_token(db, keep_test_connection) -> str:
    world = build_world()
    return Token.objects.create(user=world.staff).key


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_meets_its_schema_under_fuzzing(case, staff_token):
    case.call_and_validate(headers={"Authorization": f"Token {staff_token}"},
                           excluded_checks=[positive_data_acceptance])


def test_schema_validates_with_warnings_as_errors(tmp_path):
    output = tmp_path / "schema.yaml"
    result = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn", "--file", str(output)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stderr and "Error" not in result.stderr, result.stderr
    assert output.read_text().startswith("openapi: 3")
