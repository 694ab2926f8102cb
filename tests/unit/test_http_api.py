"""The HTTP API through a test client: every workflow, job, definition, worker and stats route,
with good and bad input. The app runs without a backend here: commands are recorded in the
store and worker answers are given to the engine directly."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from starlette.testclient import TestClient

from stepflow.adapters.http.app import create_app
from stepflow.adapters.http.catalog import DefinitionCatalog
from stepflow.engine import commands as cmd
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import build_definition
from stepflow.projections import WorkersView

PIPELINE = {
    "identifier": "pipeline", "version": "1.2.0", "label": "Two steps",
    "parameters": [{"id": "size", "type": "integer", "default": 3}, {"id": "name", "type": "string", "required": False}],
    "steps": [{"id": "fetch", "job_type": "fetch", "parameters": {"size": "{workflow.size}"}},
              {"id": "store", "job_type": "store", "parents": ["fetch"], "label": "Keep it"}],
}
NOTIFY = {
    "identifier": "notify",
    "steps": [{"id": "tell", "job_type": "notify", "mode": "notification",
               "notification": {"url": "http://127.0.0.1:9/x", "headers": {"Authorization": "Bearer secret"}}}],
    "hooks": {"on_error": [{"url": "http://127.0.0.1:9/e", "headers": {"X-Api-Key": "k3y"}}]},
}


@pytest.fixture(autouse=True)
def plain_logging() -> None:
    structlog.reset_defaults()


@pytest.fixture
def app(memory_engine: WorkflowEngine) -> Any:
    older = build_definition({**PIPELINE, "version": "1.0.0"})
    catalog = DefinitionCatalog([older, build_definition(PIPELINE), build_definition(NOTIFY)])
    return create_app(memory_engine, catalog=catalog)


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def catch_up(app: Any) -> None:
    s = app.state.services
    assert s.runner.wait(s.engine.max_notification_id(), timeout=5)


def start(client: TestClient, *, seen: bool = True, **body: Any) -> str:
    """Start a pipeline; `seen`: then wait, as a client would, until the views show it (a
    start answers after its commit)."""
    response = client.post("/api/workflows", json={"definition": "pipeline", **body})
    assert response.status_code == 201, response.text
    if seen:
        after = {"after": response.json()["notification_id"], "limit": 1}
        assert client.get("/api/workflows", params=after).status_code == 200
    return str(response.json()["workflow_id"])


def answer(app: Any, workflow_id: str, step: str, *, error: str | None = None) -> None:
    engine: WorkflowEngine = app.state.services.engine
    wid = uuid.UUID(workflow_id)
    for job in engine.workflow_state(wid).current_jobs(step):
        if error is None:
            command: cmd.Command = cmd.RecordCompleted(workflow_id=wid, job_id=job.job_id, outputs={"n": 1},
                                                       execution_duration=0.25)
        else:
            command = cmd.RecordError(workflow_id=wid, job_id=job.job_id, message=error, kind="boom")
        engine.command(command)
    catch_up(app)


def test_start_then_show_with_steps_jobs_and_graph(client: TestClient, app: Any) -> None:
    response = client.post("/api/workflows", json={"definition": "pipeline", "parameters": {"size": 5},
                                                   "labels": ["nightly"]})
    assert response.status_code == 201
    started = response.json()
    assert started["definition"] == "pipeline" and started["version"] == "1.2.0"
    assert response.headers["location"] == f"/api/workflows/{started['workflow_id']}"
    view = client.get(f"/api/workflows/{started['workflow_id']}").json()
    assert view["workflow"]["status"] == "running" and view["workflow"]["labels"] == ["nightly"]
    assert view["workflow"]["parameters"] == {"size": 5}
    assert [(s["step_id"], s["status"], s["parents"], s["label"]) for s in view["steps"]] == [
        ("fetch", "processing", [], ""), ("store", "waiting", ["fetch"], "Keep it")]
    assert [(j["step_id"], j["status"]) for j in view["jobs"]] == [("fetch", "queued")]
    assert view["can"] == ["view", "create", "retry", "abort", "delete", "update"]
    answer(app, started["workflow_id"], "fetch")
    answer(app, started["workflow_id"], "store")
    done = client.get(f"/api/workflows/{started['workflow_id']}").json()
    assert done["workflow"]["status"] == "completed" and done["workflow"]["progress"] == 100.0


def test_a_start_is_answered_after_its_commit_and_read_back_with_after(client: TestClient, app: Any) -> None:
    # A start answers after its commit, not after the views (issue #14): its page shows it at
    # once (it waits for the views when the log has it), and a listing shows it with
    # `?after=` the position the start returned. The runner here passes only when hurried (its
    # wake-ups dropped, its poll an hour away), so a listing that did not wait could not show it.
    s = app.state.services
    s.runner.poll_interval = 3600
    assert s.runner.wait(s.engine.max_notification_id(), timeout=5)  # its next idle wait is the hour
    s.runner.wake = lambda: None
    started = [client.post("/api/workflows", json={"definition": "pipeline"}).json() for _ in range(3)]
    batch = client.post("/api/workflows:batch", json={"starts": [{"definition": "pipeline"}] * 2}).json()
    ids = {item["workflow_id"] for item in [*started, *batch["items"]]}
    assert not ids & {w["workflow_id"] for w in client.get("/api/workflows").json()["items"]}
    page = client.get(f"/api/workflows/{started[0]['workflow_id']}")
    assert page.status_code == 200 and page.json()["workflow"]["status"] == "running"
    listed = client.get("/api/workflows", params={"after": batch["notification_id"]}).json()["items"]
    assert ids <= {w["workflow_id"] for w in listed}
    jobs = client.get("/api/jobs", params={"after": batch["notification_id"]}).json()["items"]
    assert ids <= {j["workflow_id"] for j in jobs}


def test_after_past_the_end_of_the_log_waits_for_its_end(client: TestClient, app: Any) -> None:
    s = app.state.services
    s.runner.poll_interval = 3600
    assert s.runner.wait(s.engine.max_notification_id(), timeout=5)
    s.runner.wake = lambda: None  # passes only when hurried
    wid = start(client, seen=False)
    end = s.engine.max_notification_id()
    for path in ("/api/workflows", "/api/jobs"):
        response = client.get(path, params={"after": end + 1000})
        assert response.status_code == 200 and wid in {item["workflow_id"] for item in response.json()["items"]}
        assert client.get(path, params={"after": "-1"}).status_code == 422


def test_an_older_version_can_be_started_by_name(client: TestClient) -> None:
    response = client.post("/api/workflows", json={"definition": "pipeline", "version": "1.0.0"})
    assert response.status_code == 201 and response.json()["version"] == "1.0.0"


@pytest.mark.parametrize(("body", "status", "field", "text"), [
    ({"definition": "nope"}, 404, "$.definition", "no stored definition 'nope'"),
    ({"definition": "pipeline", "version": "9.9.9"}, 404, "$.version", "no version '9.9.9'"),
    ({"definition": "pipeline", "parameters": {"size": "big"}}, 422, "$.parameters.size", "expected integer"),
    ({"definition": "pipeline", "parameters": {"colour": 1}}, 422, "$.parameters.colour", "unknown parameter"),
    ({"definition": "pipeline", "labels": [1]}, 422, "$.labels[0]", "Expected `str`"),
    ({"definition": "pipeline", "extra": True}, 422, "$", "unknown field `extra`"),
    ({"definition": ""}, 422, "$.definition", "length >= 1"),
    ({}, 422, "$", "missing required field `definition`"),
    ([], 422, "$", "Expected `object`"),
])
def test_bad_starts_name_the_field(client: TestClient, body: Any, status: int, field: str, text: str) -> None:
    response = client.post("/api/workflows", json=body)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["status"] == status and error["field"] == field and text in error["message"]
    assert client.get("/api/workflows").json()["items"] == []


def test_not_json_empty_and_oversized_bodies(client: TestClient) -> None:
    assert client.post("/api/workflows", content=b"{nope").json()["error"] == "bad_request"
    empty = client.post("/api/workflows", content=b"")
    assert empty.status_code == 422 and empty.json()["message"] == "a JSON body is required"
    huge = client.post("/api/workflows", content=b" " * 1_048_577 + b"{}")
    assert huge.status_code == 413


def test_a_repeated_idempotency_key_starts_one_workflow(client: TestClient) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = client.post("/api/workflows", json={"definition": "pipeline"}, headers=headers).json()
    second = client.post("/api/workflows", json={"definition": "pipeline"}, headers=headers).json()
    assert first["workflow_id"] == second["workflow_id"]
    assert second["notification_id"] >= first["notification_id"]  # the retry's position holds the first start
    assert len(client.get("/api/workflows", params={"after": second["notification_id"]}).json()["items"]) == 1
    long_key = client.post("/api/workflows", json={"definition": "pipeline"}, headers={"Idempotency-Key": "k" * 201})
    assert long_key.status_code == 422 and long_key.json()["field"] == "header.Idempotency-Key"


def test_list_filters_and_pages(client: TestClient, app: Any) -> None:
    ids = [start(client, labels=[f"batch{i % 2}"]) for i in range(5)]
    answer(app, ids[0], "fetch")
    answer(app, ids[0], "store")
    client.post("/api/workflows", json={"definition": "notify"})
    catch_up(app)
    page = client.get("/api/workflows", params={"status": "completed"}).json()
    assert [w["workflow_id"] for w in page["items"]] == [ids[0]]
    running = client.get("/api/workflows", params={"status": "running,paused", "definition": "pipeline"}).json()
    assert [w["workflow_id"] for w in running["items"]] == ids[:0:-1]
    assert {w["workflow_id"] for w in client.get("/api/workflows", params={"label": "batch1"}).json()["items"]} == {
        ids[1], ids[3]}
    first = client.get("/api/workflows", params={"limit": 2, "definition": "pipeline"}).json()
    assert [w["workflow_id"] for w in first["items"]] == [ids[4], ids[3]] and first["next_cursor"]
    second = client.get("/api/workflows", params={"limit": 2, "cursor": first["next_cursor"],
                                                  "definition": "pipeline"}).json()
    assert [w["workflow_id"] for w in second["items"]] == [ids[2], ids[1]]
    oldest = client.get("/api/workflows", params={"order": "oldest", "limit": 1}).json()
    assert oldest["items"][0]["workflow_id"] == ids[0]


@pytest.mark.parametrize(("query", "field"), [
    ({"status": "sleeping"}, "query.status"), ({"limit": "0"}, "query.limit"), ({"limit": "x"}, "query.limit"),
    ({"limit": "501"}, "query.limit"), ({"cursor": "abc"}, "query.cursor"), ({"order": "random"}, "query.order"),
])
def test_bad_list_queries_name_the_parameter(client: TestClient, query: dict[str, str], field: str) -> None:
    response = client.get("/api/workflows", params=query)
    assert response.status_code == 422 and response.json()["field"] == field


def test_a_parameter_given_twice_is_refused(client: TestClient) -> None:
    response = client.get("/api/workflows?limit=1&limit=2")
    assert response.status_code == 422 and response.json()["field"] == "query.limit"


def test_unknown_and_malformed_workflow_ids(client: TestClient) -> None:
    unknown = client.get(f"/api/workflows/{uuid.uuid4()}")
    assert unknown.status_code == 404 and unknown.json()["field"] == "path.workflow_id"
    bad = client.get("/api/workflows/not-a-uuid")
    assert bad.status_code == 422 and bad.json()["field"] == "path.workflow_id"
    for path in ("history", "stream"):
        assert client.get(f"/api/workflows/{uuid.uuid4()}/{path}").status_code == 404
    assert client.post(f"/api/workflows/{uuid.uuid4()}/pause").status_code == 404
    assert client.delete("/api/workflows/zzz").status_code == 422


def test_history_lists_events_in_order(client: TestClient, app: Any) -> None:
    wid = start(client)
    answer(app, wid, "fetch")
    history = client.get(f"/api/workflows/{wid}/history").json()
    assert history["workflow_id"] == wid
    events = [e["event"] for e in history["items"]]
    assert events[:2] == ["WorkflowStarted", "JobSubmitted"] and "StepCompleted" in events
    assert history["items"][0]["actor"] == "anonymous"


def test_pause_resume_stop_delete(client: TestClient, app: Any) -> None:
    wid = start(client)
    assert client.post(f"/api/workflows/{wid}/pause").json()["command"] == "PauseWorkflow"
    assert client.get(f"/api/workflows/{wid}").json()["workflow"]["status"] == "paused"
    assert client.post(f"/api/workflows/{wid}/pause").status_code == 200  # already paused: nothing to do
    assert client.post(f"/api/workflows/{wid}/resume").status_code == 200
    assert client.get(f"/api/workflows/{wid}").json()["workflow"]["status"] == "running"
    stop = client.post(f"/api/workflows/{wid}/stop", json={"reason": "wrong input"})
    assert stop.status_code == 200
    view = client.get(f"/api/workflows/{wid}").json()
    assert view["workflow"]["status"] == "stopped" and view["workflow"]["reason"] == "wrong input"
    refused = client.post(f"/api/workflows/{wid}/pause")
    assert refused.status_code == 409 and "stopped" in refused.json()["message"]
    bad_reason = client.post(f"/api/workflows/{wid}/stop", json={"reason": 5})
    assert bad_reason.status_code == 422 and bad_reason.json()["field"] == "$.reason"
    assert client.delete(f"/api/workflows/{wid}").json()["command"] == "DeleteWorkflow"
    assert client.get("/api/workflows").json()["items"] == []
    assert client.get("/api/workflows", params={"status": "deleted"}).json()["items"][0]["workflow_id"] == wid


def test_stop_takes_no_body_too(client: TestClient) -> None:
    wid = start(client)
    assert client.post(f"/api/workflows/{wid}/stop").status_code == 200


def test_retry_a_failed_job(client: TestClient, app: Any) -> None:
    wid = start(client)
    answer(app, wid, "fetch", error="disk full")
    view = client.get(f"/api/workflows/{wid}").json()
    assert view["workflow"]["status"] == "error"
    (failed,) = view["jobs"]
    assert failed["status"] == "error" and failed["error"] == "disk full" and failed["error_kind"] == "boom"
    retried = client.post(f"/api/workflows/{wid}/jobs/{failed['job_id']}/retry")
    assert retried.status_code == 200 and retried.json()["job_id"] == failed["job_id"]
    view = client.get(f"/api/workflows/{wid}").json()
    assert view["workflow"]["status"] == "running" and len(view["jobs"]) == 2
    again = client.post(f"/api/workflows/{wid}/jobs/{failed['job_id']}/retry")
    assert again.status_code == 409 and "already retried" in again.json()["message"]
    unknown = client.post(f"/api/workflows/{wid}/jobs/nope/retry")
    assert unknown.status_code == 404 and unknown.json()["field"] == "path.job_id"


def test_jobs_listing_and_one_job(client: TestClient, app: Any) -> None:
    first, second = start(client), start(client)
    answer(app, first, "fetch")
    everything = client.get("/api/jobs").json()["items"]
    assert len(everything) == 3
    completed = client.get("/api/jobs", params={"status": "completed"}).json()["items"]
    assert [(j["workflow_id"], j["step_id"]) for j in completed] == [(first, "fetch")]
    assert len(client.get("/api/jobs", params={"job_type": "store"}).json()["items"]) == 1
    mine = client.get("/api/jobs", params={"workflow_id": second}).json()["items"]
    assert [j["step_id"] for j in mine] == ["fetch"]
    paged = client.get("/api/jobs", params={"limit": 2}).json()
    assert len(paged["items"]) == 2 and paged["next_cursor"]
    job = client.get(f"/api/jobs/{completed[0]['job_id']}").json()
    assert job["status"] == "completed" and job["duration_s"] == 0.25
    assert client.get("/api/jobs/unknown").status_code == 404
    assert client.get("/api/jobs", params={"status": "lost"}).json()["field"] == "query.status"
    assert client.get("/api/jobs", params={"workflow_id": "x"}).json()["field"] == "query.workflow_id"


def test_definitions_with_versions_and_redacted_headers(client: TestClient) -> None:
    listing = client.get("/api/definitions").json()["items"]
    assert [(d["identifier"], d["version"], d["versions"]) for d in listing] == [
        ("notify", "1.0.0", ["1.0.0"]), ("pipeline", "1.2.0", ["1.0.0", "1.2.0"])]
    assert listing[1]["parameters"][0] == {"id": "size", "type": "integer", "label": "", "default": 3, "required": True}
    one = client.get("/api/definitions/pipeline", params={"version": "1.0.0"}).json()
    assert one["definition"]["version"] == "1.0.0" and one["can"][0] == "view"
    notify = client.get("/api/definitions/notify").json()["definition"]
    assert notify["steps"][0]["notification"]["headers"] == {"Authorization": "<redacted>"}
    assert notify["hooks"]["on_error"][0]["headers"] == {"X-Api-Key": "<redacted>"}
    assert client.get("/api/definitions/nope").json()["field"] == "path.identifier"
    assert client.get("/api/definitions/pipeline", params={"version": "3.0.0"}).json()["field"] == "query.version"


def test_workers_and_stats(client: TestClient, app: Any) -> None:
    WorkersView(app.state.services.store).record_heartbeat("w-1", "fetch", at=datetime.now(UTC), label="fetcher",
                                                           version="2.0.0")
    workers = client.get("/api/workers").json()["items"]
    assert [(w["instance_id"], w["job_type"], w["status"]) for w in workers] == [("w-1", "fetch", "alive")]
    wid = start(client)
    answer(app, wid, "fetch")
    stats = client.get("/api/stats").json()
    assert stats["workflows"] == {"running": 1}
    fetch = next(t for t in stats["job_types"] if t["job_type"] == "fetch")
    assert fetch["completed"] == 1 and fetch["duration_max_s"] == pytest.approx(0.25)
    assert [t["job_type"] for t in client.get("/api/stats", params={"job_type": "store"}).json()["job_types"]] == [
        "store"]


def test_stream_sends_the_workflow_and_ends_with_it(client: TestClient, app: Any) -> None:
    wid = start(client)
    answer(app, wid, "fetch")
    answer(app, wid, "store")
    response = client.get(f"/api/workflows/{wid}/stream")
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = [c for c in response.text.split("\n\n") if c]
    assert len(chunks) == 1 and chunks[0].startswith("event: workflow\ndata: {")
    assert '"status":"completed"' in chunks[0]


def test_unknown_routes_and_methods_answer_json(client: TestClient) -> None:
    missing = client.get("/api/nothing")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    wrong = client.put("/api/workflows")
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"


def test_pages_and_static_files(client: TestClient) -> None:
    for path in ("/", f"/workflows/{uuid.uuid4()}", "/workers", "/stats"):
        page = client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "list.js", "workflow.js", "workers.js", "stats.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    assert client.get("/static/nope.js").status_code == 404


def test_stats_timeline(client: TestClient) -> None:
    start(client)
    line = client.get("/api/stats/timeline", params={"bin": "minute"}).json()
    assert line["bin"] == "minute" and len(line["bins"]) in (60, 61)
    assert sum(b["workflows"].get("running", 0) for b in line["bins"]) == 1
    assert sum(b["jobs"].get("queued", 0) for b in line["bins"]) == 1
    day = client.get("/api/stats/timeline", params={"bin": "day", "since": "2024-05-01T00:00:00Z",
                                                    "until": "2024-05-03T00:00:00"}).json()
    assert [b["start"] for b in day["bins"]] == ["2024-05-01T00:00:00Z", "2024-05-02T00:00:00Z"]
    cut = client.get("/api/stats/timeline", params={"bin": "minute", "since": "2020-01-01T00:00:00Z",
                                                    "until": "2024-01-01T00:00:00Z"}).json()
    assert len(cut["bins"]) == 1500 and cut["since"] == "2023-12-30T23:00:00Z"  # the last 1,500 minutes: 25 h
    reversed_range = client.get("/api/stats/timeline", params={"since": "2024-01-02T00:00:00Z",
                                                               "until": "2024-01-01T00:00:00Z"}).json()
    assert reversed_range["bins"] == []
    assert client.get("/api/stats/timeline", params={"until": "yesterday"}).json()["field"] == "query.until"
    # a bare number would pass as seconds since 1970 without the check (schemathesis found it)
    epoch = client.get("/api/stats/timeline", params={"until": "124"})
    assert epoch.status_code == 422 and epoch.json()["field"] == "query.until"
    bad = client.get("/api/stats/timeline", params={"bin": "week"})
    assert bad.status_code == 422 and bad.json()["field"] == "query.bin"


def test_an_unknown_status_lists_the_valid_ones(client: TestClient) -> None:
    from stepflow.engine.statuses import JOB_STATUSES, WORKFLOW_STATUSES

    bad = client.get("/api/workflows", params={"status": "running,nope"})
    assert bad.status_code == 422 and bad.json()["field"] == "query.status"
    message = bad.json()["message"]
    assert message.startswith("unknown workflow status 'nope'; valid: " + ", ".join(WORKFLOW_STATUSES))
    assert "regex" not in message and "^(" not in message
    jobs = client.get("/api/jobs", params={"status": "done"}).json()
    assert jobs["message"].startswith("unknown job status 'done'; valid: " + ", ".join(JOB_STATUSES))
    assert client.get("/api/workflows", params={"status": "running,completed"}).status_code == 200


def test_an_idempotency_key_reused_with_another_body_is_a_conflict(client: TestClient) -> None:
    headers = {"Idempotency-Key": "order-43"}
    first = client.post("/api/workflows", json={"definition": "pipeline", "parameters": {"size": 3}}, headers=headers)
    assert first.status_code == 201
    # the same request (the default spelled out or not) is the same workflow
    again = client.post("/api/workflows", json={"definition": "pipeline"}, headers=headers)
    assert again.status_code == 201 and again.json()["workflow_id"] == first.json()["workflow_id"]
    for body in ({"definition": "pipeline", "parameters": {"size": 4}}, {"definition": "pipeline", "labels": ["x"]},
                 {"definition": "pipeline", "version": "1.0.0"}):
        clash = client.post("/api/workflows", json=body, headers=headers)
        assert clash.status_code == 409, body
        assert clash.json()["field"] == "header.Idempotency-Key"
        assert "already used for another request" in clash.json()["message"]
        assert first.json()["workflow_id"] in clash.json()["message"]
