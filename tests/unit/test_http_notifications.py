"""Notification steps and hooks, run by the backend against a local HTTP server."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec
import pytest
import structlog
from amqp_fixtures import eventually

from stepflow.adapters.embedded import EmbeddedRuntime
from stepflow.adapters.notify.notifications import (
    CallFailed,
    HttpAnswer,
    HttpCall,
    Notifier,
    build_call,
    perform,
)
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import build_definition
from stepflow.sdk import JobContext, Worker


@pytest.fixture(autouse=True)
def plain_logging() -> None:
    """A CLI test may have pointed structlog at a captured stream pytest has since closed."""
    structlog.reset_defaults()


class Received(msgspec.Struct):
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """Answers `status` for a path (a list: one status per call, the last repeats)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.statuses: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                with receiver.lock:
                    receiver.received.append(Received(method=self.command, path=self.path,
                                                      headers=dict(self.headers.items()), body=body))
                    plan = receiver.statuses.get(path, [200])
                    status = plan.pop(0) if len(plan) > 1 else plan[0]
                answer = f'{{"seen": {len(receiver.received)}}}'.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def to(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path.split("?", 1)[0] == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def engine() -> WorkflowEngine:
    return WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def work_worker() -> Worker:
    worker = Worker("work", heartbeat_s=0.05)

    @worker.job("work")
    async def work(params: dict, ctx: JobContext) -> dict:
        return {"size": 42}

    return worker


def notify_definition(url: str, *, retry: dict[str, Any] | None = None, **extra: Any) -> Any:
    return build_definition({
        "identifier": "notify",
        "parameters": [{"id": "who", "type": "string", "default": "ops"}],
        "steps": [
            {"id": "work", "job_type": "work"},
            {"id": "tell", "job_type": "notify", "mode": "notification", "parents": ["work"],
             "retry": retry or {"max_attempts": 1},
             "notification": {"url": url, "method": "PUT", "headers": {"X-Who": "{workflow.who}"},
                              "body": {"size": "{steps.work.outputs.size}"}}},
        ],
        **extra,
    })


def kinds(e: WorkflowEngine, wid: Any) -> Counter[str]:
    return Counter(type(x).__name__ for x in e.history(wid))


async def test_a_notification_step_calls_the_url_and_completes(receiver: Receiver) -> None:
    e = engine()
    async with EmbeddedRuntime(e, [work_worker()]) as runtime:
        wid = await runtime.start(notify_definition(receiver.url + "/hook/{workflow.who}"))
        state = await runtime.wait(wid, timeout=10)
    assert state.status == "completed"
    (call,) = receiver.to("/hook/ops")
    assert call.method == "PUT"
    assert call.headers["X-Who"] == "ops"
    assert call.headers["Content-Type"] == "application/json"
    assert msgspec.json.decode(call.body) == {"size": 42}
    assert state.steps["tell"].outputs == {"status": 200, "body": '{"seen": 1}'}
    (job,) = state.current_jobs("tell")
    assert job.worker == "notification" and job.execution_duration is not None


async def test_a_failing_call_retries_per_policy_then_succeeds(receiver: Receiver) -> None:
    receiver.statuses["/flaky"] = [503, 500, 200]
    e = engine()
    async with EmbeddedRuntime(e, [work_worker()]) as runtime:
        wid = await runtime.start(notify_definition(receiver.url + "/flaky",
                                                    retry={"max_attempts": 3, "backoff_s": 0.05}))
        state = await runtime.wait(wid, timeout=10)
    assert state.status == "completed"
    assert len(receiver.to("/flaky")) == 3
    counts = kinds(e, wid)
    assert counts["JobErrored"] == 2 and counts["JobRetryScheduled"] == 2
    errors = [j.error_kind for j in state.jobs.values() if j.step_id == "tell" and j.error_kind]
    assert errors == ["http_503", "http_500"]


async def test_exhausted_retries_fail_the_workflow_and_call_the_error_hook(receiver: Receiver) -> None:
    receiver.statuses["/down"] = [404]
    hooks = {"on_error": [{"url": receiver.url + "/err/{run.id}", "body": "{run.status}: {run.reason}"}],
             "on_completed": [{"url": receiver.url + "/ok"}]}
    e = engine()
    async with EmbeddedRuntime(e, [work_worker()], outbox_poll_s=0.05) as runtime:
        wid = await runtime.start(notify_definition(receiver.url + "/down", retry={"max_attempts": 2, "backoff_s": 0.01},
                                                    hooks=hooks))
        state = await runtime.wait(wid, timeout=10)
        await runtime.backend.hooks.flush()
    assert state.status == "error"
    assert len(receiver.to("/down")) == 2
    assert "answered 404" in (state.reason or "")
    (hook,) = receiver.to(f"/err/{wid}")
    assert hook.body.decode().startswith("error: step 'tell' failed")
    assert receiver.to("/ok") == []


async def test_completion_hook_gets_outputs_and_is_not_called_twice(receiver: Receiver) -> None:
    hooks = {"on_completed": [{"url": receiver.url + "/done?wf={run.id}", "method": "POST",
                               "body": {"size": "{steps.work.outputs.size}", "definition": "{run.definition}"}}]}
    definition = build_definition({"identifier": "h", "steps": [{"id": "work", "job_type": "work"}], "hooks": hooks})
    e = engine()
    async with EmbeddedRuntime(e, [work_worker()], outbox_poll_s=0.05) as runtime:
        wid = await runtime.start(definition)
        await runtime.wait(wid, timeout=10)
        await eventually(lambda: receiver.to("/done"), what="the completion hook's call")
        await runtime.backend.hooks.flush()
    (hook,) = receiver.to("/done")
    assert hook.path == f"/done?wf={wid}"
    assert msgspec.json.decode(hook.body) == {"size": 42, "definition": "h"}


async def test_hooks_start_at_the_end_of_an_existing_log(receiver: Receiver) -> None:
    from stepflow.engine import commands as cmd

    hooks = {"on_completed": [{"url": receiver.url + "/late"}]}
    definition = build_definition({"identifier": "h", "steps": [{"id": "work", "job_type": "work"}], "hooks": hooks})
    e = engine()
    old = e.start_workflow(definition)  # ended before any backend followed hooks
    (job,) = e.load(old).state.current_jobs("work")
    e.command(cmd.RecordCompleted(workflow_id=old, job_id=job.job_id))
    assert e.workflow_state(old).status == "completed"
    async with EmbeddedRuntime(e, [work_worker()], outbox_poll_s=0.05) as runtime:
        wid = await runtime.start(definition)
        await runtime.wait(wid, timeout=10)
        await runtime.backend.hooks.flush()
    assert len(receiver.to("/late")) == 1  # the new one only


@pytest.mark.parametrize(("request_", "kind", "text"), [
    ({"url": "file:///etc/passwd"}, "invalid_request", "not an http(s) URL"),
    ({"url": "http://x", "method": "BREW"}, "invalid_request", "unsupported method"),
    ({"url": "http://x", "headers": {"A": "b\r\nEvil: 1"}}, "invalid_request", "line break"),
    ({"url": "http://evil.example/"}, "invalid_request", "not in STEPFLOW_NOTIFICATION_HOSTS"),
])
def test_unusable_requests_are_refused(request_: dict[str, Any], kind: str, text: str) -> None:
    with pytest.raises(CallFailed) as error:
        build_call(request_, allowed_hosts={"x", "127.0.0.1"})
    assert error.value.kind == kind and text in str(error.value)


def test_bodies_are_sent_as_text_or_json() -> None:
    assert build_call({"url": "http://x", "body": "plain"}).body == b"plain"
    call = build_call({"url": "http://x", "body": [1, 2], "headers": {"content-type": "text/x"}})
    assert call.body == b"[1,2]" and call.headers == {"content-type": "text/x"}
    assert build_call({"url": "http://x", "method": "get"}).method == "GET"


def test_no_answer_is_a_network_error_and_redirects_are_not_followed(receiver: Receiver) -> None:
    receiver.statuses["/moved"] = [302]
    answer = perform(HttpCall(method="GET", url=receiver.url + "/moved"))
    assert answer.status == 302 and not answer.ok
    with pytest.raises(CallFailed) as error:
        perform(HttpCall(method="GET", url="http://127.0.0.1:9/", timeout_s=2))
    assert error.value.kind == "network"


async def test_hook_failures_are_retried_then_logged() -> None:
    seen: list[HttpCall] = []

    def transport(call: HttpCall) -> HttpAnswer:
        seen.append(call)
        return HttpAnswer(status=500)

    notifier = Notifier(transport=transport, hook_backoff_s=0.001)
    assert await notifier.call_hook({"url": "http://x/"}, workflow_id="w", when="on_error") is False
    assert len(seen) == 3 and notifier.stats["hooks_failed"] == 1


async def test_two_flushes_at_once_call_a_workflow_hook_once() -> None:
    """The follower's own loop and a caller may flush together: one reads, the other waits."""
    from stepflow.adapters.notify.hooks import HookFollower
    from stepflow.engine import commands as cmd

    seen: list[HttpCall] = []

    def transport(call: HttpCall) -> HttpAnswer:
        seen.append(call)
        return HttpAnswer(status=200)

    async def in_store(fn: Any, *args: Any) -> Any:
        await asyncio.sleep(0)  # a thread hop: the other flush gets a turn
        return fn(*args)

    e = engine()
    hooks = HookFollower(e, Notifier(transport=transport, allowed_hosts={"x"}), in_store=in_store)
    await hooks.prepare()  # the position: the end of the (empty) log
    definition = build_definition({"identifier": "h", "steps": [{"id": "work", "job_type": "work"}],
                                   "hooks": {"on_completed": [{"url": "http://x/done"}]}})
    wid = e.start_workflow(definition)
    (job,) = e.load(wid).state.current_jobs("work")
    e.command(cmd.RecordCompleted(workflow_id=wid, job_id=job.job_id))
    assert sum(await asyncio.gather(hooks.flush(), hooks.flush())) == 1
    assert len(seen) == 1 and await hooks.flush() == 0


async def test_a_stop_that_comes_with_a_wake_up_still_ends_the_hook_loop() -> None:
    """As for the outbox: woken and cancelled in the same tick, the loop ends."""
    from stepflow.adapters.notify.hooks import HookFollower

    async def in_store(fn: Any, *args: Any) -> Any:
        return fn(*args)

    hooks = HookFollower(engine(), Notifier(allowed_hosts=()), poll_s=60, in_store=in_store)
    loop = asyncio.create_task(hooks.run())
    # prepared, and so waiting for a wake-up (it goes from one to the other without a pause)
    await eventually(lambda: hooks.reader is not None, what="the hook loop to wait")
    hooks.wake()
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(loop, 5)


async def test_commits_that_call_no_hook_are_passed_over_without_reading_the_log(tmp_path: Any) -> None:
    """Every inbound batch wakes the hooks: this process's commits that end no workflow with
    hooks are passed over from memory, and the log is read only for one that may call a hook,
    or after another writer's commit (a gap)."""
    from stepflow.adapters.notify.hooks import HookFollower
    from stepflow.engine import commands as cmd

    seen: list[HttpCall] = []

    def transport(call: HttpCall) -> HttpAnswer:
        seen.append(call)
        return HttpAnswer(status=200)

    async def in_store(fn: Any, *args: Any) -> Any:
        return fn(*args)

    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "store.sqlite")}
    e = WorkflowEngine(env=env)
    hooks = HookFollower(e, Notifier(transport=transport, allowed_hosts={"x"}), in_store=in_store)
    e.on_saved = hooks.stored
    await hooks.prepare()
    plain = build_definition({"identifier": "p", "steps": [{"id": "work", "job_type": "work"}]})
    hooked = build_definition({"identifier": "h", "steps": [{"id": "work", "job_type": "work"}],
                               "hooks": {"on_completed": [{"url": "http://x/done/{run.id}"}]}})

    def run(definition: Any, on: WorkflowEngine = e) -> Any:
        wid = on.start_workflow(definition)
        (job,) = on.load(wid).state.current_jobs("work")
        on.command(cmd.RecordCompleted(workflow_id=wid, job_id=job.job_id))
        return wid

    for _ in range(3):
        run(plain)
        assert await hooks.flush(read_log=False) == 0
    assert hooks.log_reads == 0 and hooks.position == e.max_notification_id()
    wid = run(hooked)
    assert await hooks.flush(read_log=False) == 1 and hooks.log_reads == 1  # may call: read
    assert [c.url for c in seen] == [f"http://x/done/{wid}"]
    other = WorkflowEngine(env=env)  # another writer on the same store
    theirs = run(hooked, other)
    run(plain)  # ours no longer follows on from what was scanned: a gap, so the log is read
    assert await hooks.flush(read_log=False) == 1 and hooks.log_reads > 1
    assert [c.url for c in seen][-1] == f"http://x/done/{theirs}"
    assert hooks.position == e.max_notification_id()
