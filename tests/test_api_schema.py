"""schemathesis against ``/openapi.json``: generated requests to the query API of a real server.

The server runs on loopback with a SQLite store populated by every spec example, posted as the
platform would; requests carry an API token. Every answer must match the document: status code,
content type, schema and headers; no 5xx. CI runs a few examples per operation; set
``IOTPUSH_SCHEMA_EXAMPLES=500`` for a longer campaign (``-s`` prints how many requests ran).

The schema is loaded from `iotpush.api.openapi` when the module is collected, and a test checks
that the server serves exactly that document: schemathesis's loader from a fixture (which could
fetch it from the server) does not work with pytest 9.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from iotpush import Config, create_app
from iotpush.api import openapi
from tests.conftest import EXAMPLES, Recorder, example_path, running

EXAMPLES_PER_OPERATION = int(os.environ.get("IOTPUSH_SCHEMA_EXAMPLES", "25"))
TOKEN = "schema-test-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}
CALLS: Counter[str] = Counter()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server with every spec example received and delivered; its base URL."""
    db: Path = tmp_path_factory.mktemp("schema") / "iotpush.db"
    recorder = Recorder()
    app = create_app(Config(receiver=recorder, store=f"sqlite:///{db}", api_tokens=(TOKEN,)))
    with running(app) as url:
        for name, body in EXAMPLES.items():
            response = httpx.post(
                url + example_path(name), content=body, headers={"content-type": "application/json"}
            )
            assert response.status_code == 200, name
        recorder.wait_for(len(EXAMPLES))
        yield url
    print(
        f"\nschemathesis: {sum(CALLS.values())} generated requests: {dict(sorted(CALLS.items()))}"
    )


schema = schemathesis.openapi.from_dict(openapi())


def test_server_serves_the_document_under_test(server: str) -> None:
    assert httpx.get(server + "/openapi.json").json() == json.loads(json.dumps(openapi()))


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_query_api_answers_match_the_openapi_document(server: str, case: Any) -> None:
    CALLS[case.operation.label] += 1
    case.call_and_validate(base_url=server, headers=AUTH)


@schema.parametrize()
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
def test_query_api_without_token_answers_documented_401(server: str, case: Any) -> None:
    response = case.call_and_validate(base_url=server)
    if case.path == "/openapi.json":  # public, read-only
        assert response.status_code == (200 if case.method in ("GET", "HEAD") else 405)
    else:
        assert response.status_code == 401
