"""Bearer tokens, per-definition rights, and refusals in the audit log."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from starlette.testclient import TestClient

from stepflow.adapters.http.app import create_app
from stepflow.adapters.http.auth import AuthConfigError, TokenAuth, check_binding, parse_tokens
from stepflow.adapters.http.catalog import DefinitionCatalog
from stepflow.adapters.http.routes import ENDPOINTS
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import build_definition
from stepflow.projections.history import audit

ALICE, BOB, CAROL, ROOT = "alice-token-0123456789", "bob-token-0123456789", "carol-token-0123456789", "root-token-012345678"
TOKENS = f"{ALICE}=alice:ops; {BOB}=bob:viewers\n# comment\n{CAROL}=carol; {ROOT}=root:admin,ops"
GUARDED = {
    "identifier": "guarded",
    "steps": [{"id": "only", "job_type": "work"}],
    "rights": {"view": ["ops", "viewers"], "create": ["ops"], "abort": ["ops"], "update": ["ops"],
               "retry": ["ops"], "delete": ["admin"]},
}
OPEN = {"identifier": "open", "steps": [{"id": "only", "job_type": "work"}]}


@pytest.fixture(autouse=True)
def plain_logging() -> None:
    structlog.reset_defaults()


@pytest.fixture
def app(memory_engine: WorkflowEngine) -> Any:
    catalog = DefinitionCatalog([build_definition(GUARDED), build_definition(OPEN)])
    return create_app(memory_engine, catalog=catalog, auth=TokenAuth({**parse_tokens(TOKENS)}))


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def as_(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def start(client: TestClient, definition: str, token: str = ALICE) -> str:
    response = client.post("/api/workflows", json={"definition": definition}, headers=as_(token))
    assert response.status_code == 201, response.text
    # a start answers after its commit: wait, as a client would, until the views show it
    after = {"after": response.json()["notification_id"], "limit": 1}
    assert client.get("/api/workflows", params=after, headers=as_(token)).status_code == 200
    return str(response.json()["workflow_id"])


def refusals(app: Any) -> list[Any]:
    return [a for a in audit(app.state.services.engine) if a.event == "ActionRefused"]


def concrete(path: str) -> str:
    return re.sub(r"\{[a-z_]+\}", lambda m: str(uuid.uuid4()) if "workflow" in m.group(0) else "x", path)


@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if not e.public], ids=lambda e: f"{e.method} {e.path}")
def test_every_private_route_needs_a_known_bearer_token(client: TestClient, endpoint: Any) -> None:
    path = concrete(endpoint.path)
    for headers in ({}, as_("wrong-token-0123456789"), {"Authorization": f"Basic {ALICE}"}, {"Authorization": "Bearer"}):
        response = client.request(endpoint.method, path, headers=headers, json={} if endpoint.body else None)
        assert response.status_code == 401, (path, headers, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["error"] == "unauthorized"


def test_public_routes_answer_without_a_token(client: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json", "/", "/static/app.js"):
        assert client.get(path).status_code == 200, path


def test_metrics_can_be_made_public(client: TestClient, memory_engine: WorkflowEngine,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=as_(CAROL)).status_code == 200
    monkeypatch.setenv("STEPFLOW_HTTP_PUBLIC_METRICS", "1")  # read with the other settings as the app is made
    with TestClient(create_app(memory_engine, auth=TokenAuth({**parse_tokens(TOKENS)}))) as public:
        assert public.get("/metrics").status_code == 200
        assert public.get("/api/me").status_code == 401  # only the metrics are public


def test_me_names_user_and_groups(client: TestClient) -> None:
    assert client.get("/api/me", headers=as_(ALICE)).json() == {
        "user": "alice", "groups": ["ops"], "admin": False, "auth_enabled": True}
    assert client.get("/api/me", headers=as_(ROOT)).json()["admin"] is True


def test_a_refused_start_is_403_and_audited(client: TestClient, app: Any) -> None:
    response = client.post("/api/workflows", json={"definition": "guarded"}, headers=as_(BOB))
    assert response.status_code == 403
    assert response.json()["message"] == ("user 'bob' may not create workflows of 'guarded' "
                                          "(needs one of the groups: ops)")
    (refused,) = refusals(app)
    assert refused.actor == "bob"
    assert refused.data["action"] == "create" and refused.data["definition"] == "guarded"
    assert tuple(refused.data["groups"]) == ("viewers",) and refused.data["workflow_id"] is None
    assert refused.data["request"] == "POST /api/workflows"
    assert client.get("/api/workflows", headers=as_(ALICE)).json()["items"] == []


def test_view_right_hides_and_refuses(client: TestClient, app: Any) -> None:
    guarded, opened = start(client, "guarded"), start(client, "open", CAROL)
    carol = client.get("/api/workflows", headers=as_(CAROL)).json()
    assert [w["workflow_id"] for w in carol["items"]] == [opened] and carol["hidden"] == 1
    assert len(client.get("/api/workflows", headers=as_(BOB)).json()["items"]) == 2
    for path in ("", "/history", "/stream"):
        assert client.get(f"/api/workflows/{guarded}{path}", headers=as_(CAROL)).status_code == 403
    jobs = client.get("/api/jobs", headers=as_(CAROL)).json()
    assert {j["workflow_id"] for j in jobs["items"]} == {opened} and jobs["hidden"] == 1
    job_id = client.get("/api/jobs", headers=as_(BOB), params={"workflow_id": guarded}).json()["items"][0]["job_id"]
    assert client.get(f"/api/jobs/{job_id}", headers=as_(CAROL)).status_code == 403
    assert [d["identifier"] for d in client.get("/api/definitions", headers=as_(CAROL)).json()["items"]] == ["open"]
    assert client.get("/api/definitions/guarded", headers=as_(CAROL)).status_code == 403
    assert {(r.actor, r.data["action"]) for r in refusals(app)} == {("carol", "view")}
    assert len(refusals(app)) == 5
    assert all(r.data["workflow_id"] == guarded for r in refusals(app)[:3])


def test_each_command_needs_its_right(client: TestClient, app: Any) -> None:
    wid = start(client, "guarded")
    for method, path in (("POST", "pause"), ("POST", "stop"), ("DELETE", ""), ("POST", "jobs/x/retry")):
        response = client.request(method, f"/api/workflows/{wid}/{path}".rstrip("/"), headers=as_(BOB))
        assert response.status_code == 403, path
    assert [r.data["action"] for r in refusals(app)] == ["update", "abort", "delete", "retry"]
    view = client.get(f"/api/workflows/{wid}", headers=as_(BOB)).json()
    assert view["workflow"]["status"] == "running" and view["can"] == ["view"]
    assert client.get(f"/api/workflows/{wid}", headers=as_(ALICE)).json()["can"] == [
        "view", "create", "retry", "abort", "update"]
    assert client.post(f"/api/workflows/{wid}/pause", headers=as_(ALICE)).status_code == 200
    assert client.delete(f"/api/workflows/{wid}", headers=as_(ALICE)).status_code == 403
    assert client.delete(f"/api/workflows/{wid}", headers=as_(ROOT)).status_code == 200
    history = client.get(f"/api/workflows/{wid}/history", headers=as_(ROOT)).json()["items"]
    assert [(e["event"], e["actor"]) for e in history[-2:]] == [("WorkflowPaused", "alice"), ("WorkflowDeleted", "root")]


def test_the_audit_log_is_for_admins(client: TestClient, app: Any) -> None:
    client.post("/api/workflows", json={"definition": "guarded"}, headers=as_(CAROL))
    assert client.get("/api/audit", headers=as_(ALICE)).status_code == 403
    page = client.get("/api/audit", headers=as_(ROOT), params={"event": "ActionRefused"}).json()
    assert [(e["actor"], e["data"]["action"]) for e in page["items"]] == [("carol", "create"), ("alice", "read the audit log")]
    one = client.get("/api/audit", headers=as_(ROOT), params={"limit": 1}).json()
    assert len(one["items"]) == 1 and one["next_after"] == one["items"][0]["notification_id"]
    assert client.get("/api/audit", headers=as_(ROOT), params={"actor": "nobody"}).json() == {
        "items": [], "next_after": None}
    too_far = client.get("/api/audit", headers=as_(ROOT), params={"after": str(2**63)})
    assert too_far.status_code == 422 and too_far.json()["field"] == "query.after"


def test_without_tokens_everyone_is_an_anonymous_admin_on_loopback_only(memory_engine: WorkflowEngine) -> None:
    with TestClient(create_app(memory_engine)) as c:
        assert c.get("/api/me").json() == {"user": "anonymous", "groups": [], "admin": True, "auth_enabled": False}
    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"):
        check_binding(host, TokenAuth())
    for host in ("0.0.0.0", "192.168.1.4", "example.org", "::"):
        with pytest.raises(AuthConfigError, match="without authentication"):
            check_binding(host, TokenAuth())
    check_binding("0.0.0.0", TokenAuth.with_tokens({ALICE: ("alice", ())}))


@pytest.mark.parametrize(("text", "message"), [
    ("short=alice", "shorter than 16"),
    (f"{ALICE}", "not TOKEN=USER"),
    (f"{ALICE}=", "not TOKEN=USER"),
    (f"{ALICE}=a; {ALICE}=b", "repeats a token"),
])
def test_bad_token_lists_say_which_entry_never_the_token(text: str, message: str) -> None:
    with pytest.raises(AuthConfigError, match=message) as error:
        parse_tokens(text)
    assert ALICE not in str(error.value)


def test_tokens_from_env_and_file(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text(f"# ops team\n{BOB}=bob:viewers,staff\n")
    auth = TokenAuth.from_env({"STEPFLOW_HTTP_TOKENS": f"{ALICE}=alice:boss", "STEPFLOW_HTTP_TOKENS_FILE": str(file),
                               "STEPFLOW_HTTP_ADMIN_GROUP": "boss"})
    alice, bob = auth.authenticate(f"Bearer {ALICE}"), auth.authenticate(f"bearer  {BOB} ")
    assert alice is not None and alice.admin and alice.user == "alice"
    assert bob is not None and bob.groups == ("viewers", "staff") and not bob.admin
    assert auth.authenticate(None) is None and auth.authenticate(f"Token {ALICE}") is None
    with pytest.raises(AuthConfigError, match="cannot read"):
        TokenAuth.from_env({"STEPFLOW_HTTP_TOKENS_FILE": str(tmp_path / "missing")})
    assert not TokenAuth.from_env({}).enabled
