"""The start-up calls of the original Step Flow's worker SDK, through the real app.

The SDK (docs/research/mcai-worker-sdk-2.1.1.md §3) panics on any other status or shape, so
the bodies are compared whole: a missing `total` or a two-part version is a dead worker.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from starlette.testclient import TestClient
from structlog.testing import capture_logs

from stepflow.adapters.http.app import create_app
from stepflow.adapters.http.auth import TokenAuth, parse_tokens
from stepflow.engine.application import WorkflowEngine
from stepflow.projections.history import audit

WORKER, ALICE = "worker-token-0123456789", "alice-token-0123456789"
TOKENS = f"{WORKER}=mcai-worker:workers; {ALICE}=alice:ops"
EMPTY = {"data": [], "total": 0}
SDK_CALLS = [("GET", "/api/step_flow"), ("GET", "/api/step_flow/blacklist"),
             ("DELETE", "/api/step_flow/blacklist/3010")]


@pytest.fixture(autouse=True)
def plain_logging() -> None:
    structlog.reset_defaults()


@pytest.fixture
def app(memory_engine: WorkflowEngine) -> Any:
    return create_app(memory_engine, auth=TokenAuth(parse_tokens(TOKENS)))


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def open_client(memory_engine: WorkflowEngine) -> Iterator[TestClient]:
    """Authentication off: no token configured (the app serves loopback only)."""
    with TestClient(create_app(memory_engine)) as c:
        yield c


def sign_in(client: TestClient, email: str, password: str) -> Any:
    return client.post("/api/sessions", json={"session": {"email": email, "password": password}})


def test_the_sdk_start_up_sequence_with_the_token_it_was_given(client: TestClient) -> None:
    session = sign_in(client, "mcai-worker", WORKER)
    assert session.status_code == 200, session.text
    assert session.json() == {"access_token": WORKER}
    raw = {"authorization": session.json()["access_token"]}  # verbatim, no "Bearer ", as the SDK does

    info = client.get("/api/step_flow", headers=raw)
    assert info.status_code == 200, info.text
    body = info.json()
    assert set(body) == {"application", "version", "stepflow_version"}
    assert body["application"] == "stepflow"
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", body["version"])
    assert match, body["version"]  # the SDK panics on anything but x.y.z
    assert tuple(map(int, match.groups())) >= (1, 6, 0)  # so that it asks for the blacklist
    assert isinstance(body["stepflow_version"], str) and body["stepflow_version"]

    blacklist = client.get("/api/step_flow/blacklist", headers=raw)
    assert (blacklist.status_code, blacklist.json()) == (200, EMPTY)
    removed = client.delete("/api/step_flow/blacklist/3010", headers=raw)
    assert (removed.status_code, removed.json()) == (200, EMPTY)


@pytest.mark.parametrize("header", [WORKER, f"Bearer {WORKER}", f"bearer {WORKER}", f" {ALICE} "])
def test_raw_and_bearer_tokens_are_both_taken(client: TestClient, header: str) -> None:
    for method, path in SDK_CALLS:
        response = client.request(method, path, headers={"authorization": header})
        assert response.status_code == 200, (method, path, header, response.text)


@pytest.mark.parametrize("headers", [{}, {"authorization": ""}, {"authorization": "wrong-token-0123456789"},
                                     {"authorization": "Bearer wrong-token-0123456789"},
                                     {"authorization": f"Basic {WORKER}"}, {"authorization": f"{WORKER}x"},
                                     {"authorization": "Bearer"}])
def test_without_a_known_token_the_sdk_calls_are_401(client: TestClient, headers: dict[str, str]) -> None:
    for method, path in SDK_CALLS:
        response = client.request(method, path, headers=headers)
        assert response.status_code == 401, (method, path, headers, response.text)
        assert response.json()["error"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_the_raw_token_is_only_taken_by_the_sdk_routes(client: TestClient) -> None:
    assert client.get("/api/me", headers={"authorization": WORKER}).status_code == 401
    assert client.get("/api/me", headers={"authorization": f"Bearer {WORKER}"}).status_code == 200


@pytest.mark.parametrize(("email", "password"), [
    ("mcai-worker", "wrong-token-0123456789"),  # not a token
    ("alice", WORKER),                          # a token, but another user's
    ("mcai-worker", ALICE),
    ("", WORKER),
    ("mcai-worker", ""),                        # what the SDK sends before fetching a credential
    ("", ""),
])
def test_wrong_credentials_are_refused_and_logged(client: TestClient, app: Any, email: str, password: str) -> None:
    with capture_logs() as logs:
        response = sign_in(client, email, password)
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthorized"
    assert "access_token" not in response.json()
    refused = [entry for entry in logs if entry["event"] == "session_refused"]
    assert [entry["email"] for entry in refused] == [email]
    assert all(password not in str(entry) for entry in logs if password)  # never the token
    assert not [a for a in audit(app.state.services.engine) if a.event == "ActionRefused"]  # see step_flow_api


def test_a_good_sign_in_is_logged_with_its_user_only(client: TestClient) -> None:
    with capture_logs() as logs:
        assert sign_in(client, "alice", ALICE).json() == {"access_token": ALICE}
    assert [(e["event"], e["user"]) for e in logs if e["event"].startswith("session")] == [("session_granted", "alice")]
    assert ALICE not in str(logs)


@pytest.mark.parametrize(("body", "status", "field"), [
    (b'{"email": "a", "password": "b"}', 422, "$"),
    (b'{"session": {"email": "mcai-worker"}}', 422, "$.session"),
    (b'{"session": {"email": 1, "password": "x"}}', 422, "$.session.email"),
    (b"not json", 400, "$"),
    (b"", 422, "$"),
])
def test_a_malformed_sign_in_names_the_field(client: TestClient, body: bytes, status: int, field: str) -> None:
    response = client.post("/api/sessions", content=body, headers={"content-type": "application/json"})
    assert (response.status_code, response.json()["field"]) == (status, field), response.text


def test_with_authentication_off_any_sign_in_gets_a_session(open_client: TestClient) -> None:
    for email, password in (("mcai-worker", WORKER), ("someone", "anything"), ("", "")):
        response = sign_in(open_client, email, password)
        assert response.status_code == 200, response.text
        assert set(response.json()) == {"access_token"}
        token = response.json()["access_token"]
        assert token and token not in (WORKER, "anything")  # nothing echoed that was not checked
        for method, path in SDK_CALLS:
            answer = open_client.request(method, path, headers={"authorization": token})
            assert answer.status_code == 200, answer.text
    for method, path in SDK_CALLS:  # every request acts as `anonymous`, with or without a header
        assert open_client.request(method, path).status_code == 200


@pytest.mark.parametrize("job_id", ["x", "-1", "1.0", "18446744073709551616", "١٢"])
def test_unblacklisting_needs_a_u64_job_id(client: TestClient, job_id: str) -> None:
    response = client.delete(f"/api/step_flow/blacklist/{job_id}", headers={"authorization": WORKER})
    assert (response.status_code, response.json()["field"]) == (422, "path.job_id"), response.text


def test_unblacklisting_the_largest_u64_is_fine(client: TestClient) -> None:
    response = client.delete("/api/step_flow/blacklist/18446744073709551615", headers={"authorization": WORKER})
    assert (response.status_code, response.json()) == (200, EMPTY)


def test_the_openapi_document_has_the_sdk_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert paths["/api/sessions"]["post"]["security"] == []  # signing in needs no token
    assert "security" not in paths["/api/step_flow"]["get"]  # the document's bearer scheme applies
    assert "Authorization: TOKEN" in paths["/api/step_flow/blacklist"]["get"]["responses"]["401"]["description"]
    assert {"200", "401", "422"} <= set(paths["/api/step_flow/blacklist/{job_id}"]["delete"]["responses"])
