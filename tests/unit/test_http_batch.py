"""`POST /api/workflows:batch` through the real app: all checked first, one commit, the ids in order."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from starlette.testclient import TestClient

from stepflow.adapters.http.app import create_app
from stepflow.adapters.http.auth import TokenAuth, parse_tokens
from stepflow.adapters.http.catalog import DefinitionCatalog
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import build_definition

ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789"
TOKENS = f"{ALICE}=alice:ops; {BOB}=bob:viewers"
PIPELINE = {
    "identifier": "pipeline", "version": "1.2.0",
    "parameters": [{"id": "size", "type": "integer", "default": 3}],
    "steps": [{"id": "fetch", "job_type": "fetch", "parameters": {"size": "{workflow.size}"}}],
}
GUARDED = {"identifier": "guarded", "steps": [{"id": "only", "job_type": "work"}],
           "rights": {"view": ["ops", "viewers"], "create": ["ops"]}}
URL = "/api/workflows:batch"


@pytest.fixture(autouse=True)
def plain_logging() -> None:
    structlog.reset_defaults()


@pytest.fixture
def app(memory_engine: WorkflowEngine) -> Any:
    catalog = DefinitionCatalog([build_definition(PIPELINE), build_definition(GUARDED)])
    return create_app(memory_engine, catalog=catalog, auth=TokenAuth({**parse_tokens(TOKENS)}))


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def as_(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def stored_starts(app: Any) -> list[str]:
    engine: WorkflowEngine = app.state.services.engine
    return [str(e.originator_id) for _, e in engine.notifications(0, 10_000, topics=["WorkflowStarted"])]


def test_a_batch_starts_every_workflow_in_order_and_the_views_show_them(client: TestClient, app: Any) -> None:
    starts = [{"definition": "pipeline", "parameters": {"size": i}, "labels": [f"n{i}"]} for i in range(1, 6)]
    starts.append({"definition": "guarded"})
    response = client.post(URL, json={"starts": starts}, headers=as_(ALICE))

    assert response.status_code == 201, response.text
    body = response.json()
    ids = [item["workflow_id"] for item in body["items"]]
    assert ids == stored_starts(app) and len(set(ids)) == 6
    assert [item["definition"] for item in body["items"]] == ["pipeline"] * 5 + ["guarded"]
    assert all(item["notification_id"] == body["notification_id"] for item in body["items"])
    engine: WorkflowEngine = app.state.services.engine
    assert [engine.workflow_state(uuid.UUID(w)).parameters["size"] for w in ids[:5]] == [1, 2, 3, 4, 5]
    assert engine.workflow_state(uuid.UUID(ids[5])).started_by == "alice"
    # read your writes: the listing shows them once the views have the answer's position
    listed = client.get(f"/api/workflows?limit=10&after={body['notification_id']}", headers=as_(ALICE)).json()["items"]
    assert {w["workflow_id"] for w in listed} == set(ids)


@pytest.mark.parametrize(
    ("starts", "status", "field"),
    [
        ([{"definition": "pipeline"}, {"definition": "pipeline", "parameters": {"size": "big"}}], 422,
         "$.starts[1].parameters.size"),
        ([{"definition": "pipeline"}, {"definition": "pipeline", "parameters": {"colour": 1}}], 422,
         "$.starts[1].parameters.colour"),
        ([{"definition": "pipeline"}, {"definition": "nothing"}], 404, "$.starts[1].definition"),
        ([{"definition": "pipeline", "version": "9"}], 404, "$.starts[0].version"),
        ([{"definition": "pipeline"}, {"definition": "pipeline", "extra": 1}], 422, "$.starts[1]"),
        ([], 422, "$.starts"),
    ],
)
def test_one_bad_start_stores_none(client: TestClient, app: Any, starts: list[Any], status: int, field: str) -> None:
    response = client.post(URL, json={"starts": starts}, headers=as_(ALICE))
    assert response.status_code == status, response.text
    assert response.json()["field"].startswith(field)
    assert stored_starts(app) == []


def test_bad_bodies(client: TestClient, app: Any) -> None:
    assert client.post(URL, content=b"{not json", headers=as_(ALICE)).status_code == 400
    too_many = {"starts": [{"definition": "pipeline"}] * 1001}
    assert client.post(URL, json=too_many, headers=as_(ALICE)).status_code == 422
    assert client.post(URL, json={"starts": [{"definition": "pipeline"}]}).status_code == 401
    assert stored_starts(app) == []


def test_a_start_the_user_may_not_make_refuses_the_batch(client: TestClient, app: Any) -> None:
    response = client.post(URL, json={"starts": [{"definition": "pipeline"}, {"definition": "guarded"}]},
                           headers=as_(BOB))
    assert response.status_code == 403 and "guarded" in response.json()["message"]
    assert stored_starts(app) == []


def test_a_repeated_batch_with_its_key_starts_nothing_new(client: TestClient, app: Any) -> None:
    body = {"starts": [{"definition": "pipeline", "parameters": {"size": 1}}, {"definition": "pipeline"}]}
    first = client.post(URL, json=body, headers=as_(ALICE, **{"Idempotency-Key": "bulk-1"}))
    again = client.post(URL, json=body, headers=as_(ALICE, **{"Idempotency-Key": "bulk-1"}))
    assert first.status_code == again.status_code == 201
    ids = [i["workflow_id"] for i in first.json()["items"]]
    assert [i["workflow_id"] for i in again.json()["items"]] == ids
    assert stored_starts(app) == ids

    other = {"starts": [{"definition": "pipeline", "parameters": {"size": 2}}, {"definition": "pipeline"}]}
    clash = client.post(URL, json=other, headers=as_(ALICE, **{"Idempotency-Key": "bulk-1"}))
    assert clash.status_code == 409 and clash.json()["message"].startswith("start 0:")
    assert stored_starts(app) == ids
    too_long = client.post(URL, json=body, headers=as_(ALICE, **{"Idempotency-Key": "k" * 201}))
    assert too_long.status_code == 422 and too_long.json()["field"] == "header.Idempotency-Key"
