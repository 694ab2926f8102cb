"""Unmodified Media Cloud AI workers (mcai-worker-sdk 2.1.1, the original Step Flow's real
worker SDK, a Rust core) run stepflow workflows beside a stepflow-SDK worker.

One stack per module, on a vhost of its own (the SDK's names cannot be prefixed): `stepflow
serve --http` with a token, then TWO mcai workers of `examples/mcai/worker.py` of different job
types (`job_upper`, `job_words`; started from that folder because the SDK reads
./pyproject.toml), then a `stepflow worker` for the example's stepflow step. The backend comes first: an mcai worker signs in over HTTP at
start and exits 1 if that fails. The tests run in file order and share the stack; the last one
ends a worker.

Spies are plain queues bound beside stepflow's: on `job_submit` (every order, to see the wire's
integer job ids and which parameters are sent), on `job_response` (progressions name the
instance that runs a job in `docker_container_id`, the SDK's only way to say it) and on
`direct_messaging` (every direct order with its headers, to see whom a stop reached).
What the SDK does on the wire: docs/research/mcai-worker-sdk-2.1.1.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import amqp_fixtures
import httpx
import pytest
from amqp_fixtures import AMQP_URL, ROOT, Proc, Rabbit, sqlite_store, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.rabbitmq]

MCAI = ROOT / "examples" / "mcai"
WORKFLOW = MCAI / "workflow.toml"
JOB_TYPE, WORDS = "job_upper", "job_words"  # the two mcai workers' AMQP_QUEUE
LABEL, VERSION = "upper_worker", "1.0.0"  # examples/mcai/pyproject.toml
TOKEN, USER = "mcai-e2e-token-0123456789", "mcai-bot"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FINAL = ("completed", "error", "stopped")


def _require_the_sdk() -> None:
    try:
        import mcai_worker_sdk
    except ImportError as error:
        pytest.fail(f"mcai-worker-sdk cannot be imported ({error}); install the test extra "
                    "(`pip install -c constraints.txt -e .[test]`, CPython <= 3.12 on Linux x86_64)", pytrace=False)
    assert mcai_worker_sdk.__version__ == "2.1.1", mcai_worker_sdk.__version__


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


def _reset_signals() -> None:
    """A child of a non-interactive shell inherits SIGINT ignored, and the SDK then never ends on
    it (research doc, section 7); give the worker the default dispositions."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


class McaiWorker:
    """`python worker.py` from examples/mcai, as a Media Cloud AI user starts it."""

    def __init__(self, name: str, vhost: str, backend: str, log_dir: Path, queue: str = JOB_TYPE) -> None:
        self.name = name
        self.queue = queue
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STEPFLOW_", "AMQP_", "BACKEND_"))}
        env.update(AMQP_TLS="false", AMQP_HOSTNAME="127.0.0.1", AMQP_PORT="5672", AMQP_USERNAME="guest",
                   AMQP_PASSWORD="guest", AMQP_VHOST=vhost, AMQP_QUEUE=queue, BACKEND_HOSTNAME=backend,
                   BACKEND_USERNAME=USER, BACKEND_PASSWORD=TOKEN, RUST_LOG="info", PYTHONUNBUFFERED="1",
                   # an order it rejects comes back from job_delayed twice (5 s each), not six times
                   MESSAGE_TTL_LIMIT="1")
        self.popen = subprocess.Popen([sys.executable, "-u", "worker.py"], cwd=MCAI, env=env, stdout=self._log,
                                      stderr=subprocess.STDOUT,
                                      preexec_fn=_reset_signals)  # noqa: PLW1509  it only sets dispositions

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        """SIGTERM (it answers with worker_terminated and exits 0); SIGKILL if it hangs, as
        the SDK does after a lost channel (research doc, section 8)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()


def _text(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


@dataclass
class Spied:
    routing_key: str
    headers: dict[str, Any]
    body: Any


@dataclass
class Spy:
    """A queue bound beside the real ones; `seen()` drains it and returns all seen so far."""

    rabbit: Rabbit
    queue: str
    got: list[Spied] = field(default_factory=list)

    def seen(self) -> list[Spied]:
        for message in asyncio.run(self.rabbit.take_all(self.queue)):
            try:
                body = json.loads(message.body)
            except ValueError:
                body = message.body
            headers = {k: _text(v) for k, v in (message.headers or {}).items()}
            self.got.append(Spied(message.routing_key or "", headers, body))
        return self.got


@dataclass
class Stack:
    rabbit: Rabbit
    store: str
    url: str
    serve: Proc
    worker: Proc
    mcai: list[McaiWorker]
    orders: Spy
    responses: Spy
    direct: Spy
    http: httpx.Client
    vhost: str
    log_dir: Path
    started: list[Any]  # every process, stopped at the end (those a test adds too)

    def logs(self) -> str:
        parts = [f"--- {p.name} ---\n{p.log()[-3000:]}" for p in self.started if isinstance(p, Proc)]
        parts += [f"--- {w.name} (rc {w.popen.poll()}) ---\n{w.log()[-3000:]}" for w in self.mcai]
        return "\n".join(parts)

    def start(self, **parameters: Any) -> str:
        started = self.http.post("/api/workflows", json={"definition": "mcai-upper", "parameters": parameters})
        assert started.status_code == 201, started.text
        return str(started.json()["workflow_id"])

    def view(self, workflow_id: str) -> dict[str, Any]:
        got = self.http.get(f"/api/workflows/{workflow_id}")
        assert got.status_code == 200, got.text
        return dict(got.json())

    def wait_final(self, workflow_id: str, timeout: float = 40) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            view = self.view(workflow_id)
            return view if view["workflow"]["status"] in FINAL else None

        return dict(wait_until(final, timeout, f"workflow {workflow_id} to end",
                               lambda: json.dumps(self.view(workflow_id)["jobs"], indent=1) + self.logs()))

    def workers(self) -> list[dict[str, Any]]:
        got = self.http.get("/api/workers")
        assert got.status_code == 200, got.text
        return list(got.json()["items"])

    def mcai_workers(self) -> dict[str, dict[str, Any]]:
        return {w["instance_id"]: w for w in self.workers() if w["label"] == LABEL}

    def wire_orders(self, message: str, job_type: str = JOB_TYPE) -> list[Spied]:
        """Orders sent to an mcai job type with this `message` parameter."""
        return [o for o in self.orders.seen() if o.routing_key == job_type and isinstance(o.body, dict)
                and any(p.get("id") == "message" and p.get("value") == message for p in o.body.get("parameters", []))]

    def instance_of(self, wire_job_id: int) -> str | None:
        """The instance running a job, as its progressions say (`docker_container_id`)."""
        for r in self.responses.seen():
            if r.routing_key == "job_progression" and isinstance(r.body, dict) and r.body.get("job_id") == wire_job_id:
                return str(r.body["docker_container_id"])
        return None

    def running_on(self, workflow_id: str, message: str, step: str = "shout") -> tuple[int, str]:
        """(wire job id, instance) of the one order with this message, once it runs and the
        backend has stored its progressions (the worker's 10 comes after the SDK's 0, which
        names the instance)."""
        job_type = JOB_TYPE if step == "shout" else WORDS

        def running() -> tuple[int, str] | None:
            orders = self.wire_orders(message, job_type)
            instance = self.instance_of(orders[0].body["job_id"]) if len(orders) == 1 else None
            jobs = [j for j in self.view(workflow_id)["jobs"] if j["step_id"] == step]
            stored = [j["progression"] for j in jobs] == [10]
            return (orders[0].body["job_id"], instance) if instance and stored else None

        return wait_until(running, 20, f"the order {message!r} running on an mcai worker",  # type: ignore[no-any-return]
                          lambda: json.dumps(self.view(workflow_id)["jobs"]) + self.logs())


async def _bind_spies(channel: aio_pika.abc.AbstractChannel) -> None:
    """Copies of every order, answer and direct order. (The order spy takes every routing key,
    so no order of this vhost is unroutable: a test of JobUnroutable cannot use this stack.)"""
    for name, exchange, key, arguments in (("spy_orders", "job_submit", "#", None),
                                           ("spy_responses", "job_response", "#", None),
                                           ("spy_direct", "direct_messaging", "", {"x-match": "all"})):
        queue = await channel.declare_queue(name, durable=True)  # outlives a broker restart
        await queue.bind(exchange, routing_key=key, arguments=arguments)


def _http_url(serve: Proc) -> str:
    def url() -> str | None:
        assert serve.alive(), serve.log()
        match = re.search(r"url=(http://127\.0\.0\.1:\d+)", serve.log())
        return match.group(1) if match else None

    return str(wait_until(url, 30, "stepflow serve's HTTP address", serve.log))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    _require_the_sdk()
    amqp_fixtures._probe_rabbit(AMQP_URL)
    log_dir = tmp_path_factory.mktemp("mcai")
    vhost = f"mcai_e2e_{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    started: list[Any] = []
    http = httpx.Client(headers=AUTH, timeout=10)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        rabbit = Rabbit(f"{AMQP_URL.rstrip('/')}/{vhost}", "")
        store = sqlite_store(log_dir)
        env = rabbit.env(STEPFLOW_HTTP_TOKENS=f"{TOKEN}={USER}:ops,admin")
        undeclared = log_dir / "undeclared.toml"
        undeclared.write_text(UNDECLARED)
        serve = Proc("serve", ["serve", "--store", store, "--outbox-poll", "0.2", "--http", "127.0.0.1:0",
                               "--definitions", str(WORKFLOW), "--definitions", str(undeclared)], env, log_dir)
        started.append(serve)
        url = _http_url(serve)
        http.base_url = httpx.URL(url)
        wait_until(lambda: http.get("/readyz").status_code == 200, 30, "serve ready", serve.log)
        asyncio.run(rabbit.channel_do(_bind_spies))
        mcai = [McaiWorker("mcai-upper", vhost, f"{url}/api", log_dir, JOB_TYPE),
                McaiWorker("mcai-words", vhost, f"{url}/api", log_dir, WORDS)]
        started.extend(mcai)
        worker = Proc("worker", ["worker", f"{MCAI / 'workers.py'}:join", "--instance-id", "join-1",
                                 "--heartbeat", "1"], rabbit.env(), log_dir)
        started.append(worker)
        yield Stack(rabbit, store, url, serve, worker, mcai, Spy(rabbit, "spy_orders"),
                    Spy(rabbit, "spy_responses"), Spy(rabbit, "spy_direct"), http, vhost, log_dir, started)
    finally:
        http.close()
        for proc in reversed(started):  # the workers first, the backend last: it records their ends
            if isinstance(proc, Proc):
                proc.terminate(10)
            proc.close()
        rabbitmqctl("delete_vhost", vhost)


def mcai_worker(stack: Stack, name: str, queue: str) -> McaiWorker:
    """One more unmodified mcai worker in the stack (stopped at the end with the others)."""
    worker = McaiWorker(name, stack.vhost, f"{stack.url}/api", stack.log_dir, queue)
    stack.mcai.append(worker)
    stack.started.append(worker)
    return worker


def events(stack: Stack, workflow_id: str) -> list[Any]:
    from stepflow.adapters.persistence import open_engine

    engine = open_engine(stack.store)
    try:
        return list(engine.history(uuid.UUID(workflow_id)))
    finally:
        engine.close()


def test_a_both_mcai_workers_start_and_are_listed(stack: Stack) -> None:
    # the SDK consumes its job queue only after its HTTP start-up (sessions, step_flow, blacklist)
    for queue in (JOB_TYPE, WORDS):
        asyncio.run(stack.rabbit.wait_depth(queue, consumers=1, timeout=30))
    asyncio.run(stack.rabbit.wait_depth("mcai_join", consumers=1, timeout=30))
    assert all(w.popen.poll() is None for w in stack.mcai), stack.logs()
    listed = wait_until(lambda: len(stack.mcai_workers()) == 2 and stack.mcai_workers(), 20,
                        "both mcai workers in GET /api/workers", lambda: json.dumps(stack.workers()) + stack.logs())
    assert sorted((w["job_type"], w["version"], w["sdk_version"], w["status"]) for w in listed.values()) == [
        (JOB_TYPE, VERSION, "2.2.1", "alive"), (WORDS, VERSION, "2.2.1", "alive")], listed
    description = "Upper-cases a message: an unmodified Media Cloud AI worker serving stepflow"
    assert {w["description"] for w in listed.values()} == {description}
    cli = subprocess.run([sys.executable, "-m", "stepflow", "workers", "--json", "--store", stack.store],
                         env=stack.rabbit.env(), cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    in_cli = {row["instance_id"]: row for row in map(json.loads, cli.stdout.splitlines())}
    assert set(listed) <= set(in_cli) and {in_cli[i]["description"] for i in listed} == {description}, cli.stdout


def test_b_a_workflow_passes_outputs_across_two_mcai_job_types_and_a_stepflow_step(stack: Stack) -> None:
    workflow_id = stack.start(message="hello", words=["sleep1", "media", "cloud"])
    view = stack.wait_final(workflow_id)
    assert view["workflow"]["status"] == "completed", json.dumps(view["jobs"], indent=1) + stack.logs()
    history = events(stack, workflow_id)
    steps = {e.step_id: e.outputs for e in history if type(e).__name__ == "StepCompleted"}
    assert steps["shout"] == {"upper": "HELLO"}
    assert steps["each_word"] == {"upper": ["SLEEP1", "MEDIA", "CLOUD"]}
    assert steps["join"] == {"sentence": "HELLO: SLEEP1 MEDIA CLOUD", "count": 3}
    progressed = sum(1 for e in history if type(e).__name__ == "JobProgressed")
    assert progressed >= 5, progressed  # every job reports (an mcai job 0, 10 and 100; the join 50)

    by_type = {job_type: [o for o in stack.orders.seen() if o.routing_key == job_type and isinstance(o.body, dict)]
               for job_type in (JOB_TYPE, WORDS)}
    for order in (*by_type[JOB_TYPE], *by_type[WORDS]):  # as the SDK needs them: a u64 id, only declared parameters
        assert type(order.body["job_id"]) is int and 0 <= order.body["job_id"] < 2**64, order.body
        assert [p["id"] for p in order.body["parameters"]] == ["message"], order.body
    instances = {w["job_type"]: i for i, w in stack.mcai_workers().items()}
    assert stack.instance_of(stack.wire_orders("hello")[0].body["job_id"]) == instances[JOB_TYPE]
    assert stack.instance_of(stack.wire_orders("media", WORDS)[0].body["job_id"]) == instances[WORDS]


def test_c_an_mcai_job_that_raises_fails_its_step_with_the_workers_text(stack: Stack) -> None:
    workflow_id = stack.start(message="fail")
    view = stack.wait_final(workflow_id)
    assert view["workflow"]["status"] == "error", json.dumps(view, indent=1)
    shout = sorted((j for j in view["jobs"] if j["step_id"] == "shout"), key=lambda j: j["attempt"])
    assert [(j["attempt"], j["status"]) for j in shout] == [(1, "retrying"), (2, "error")], shout  # max_attempts 2
    text = "RuntimeError: cannot upper-case 'fail'"
    assert all(text in (j["error"] or "") for j in shout), shout
    shown = subprocess.run([sys.executable, "-m", "stepflow", "show", workflow_id, "--store", stack.store],
                           env=stack.rabbit.env(), cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert text in shown.stdout, shown.stdout + shown.stderr


def test_d_stepflow_stop_reaches_only_the_instance_running_the_job(stack: Stack) -> None:
    other_id = stack.start(message="go", words=["sleep6"])  # its each_word job runs on the job_words worker
    other_job, other_on = stack.running_on(other_id, "sleep6", step="each_word")
    stopped_id = stack.start(message="sleep30")
    stopped_job, stopped_on = stack.running_on(stopped_id, "sleep30")
    assert stopped_on != other_on

    stop = subprocess.run([sys.executable, "-m", "stepflow", "stop", stopped_id, "--reason", "e2e", "--store",
                           stack.store], env=stack.rabbit.env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert stack.wait_final(stopped_id, 20)["workflow"]["status"] == "stopped"

    def stop_orders() -> list[Spied]:
        return [d for d in stack.direct.seen() if isinstance(d.body, dict) and d.body.get("type") == "stop_process"]

    # stored by the CLI's process; the backend's outbox sends it at its next look at the log
    stops = wait_until(stop_orders, 10, "the stop order", stack.logs)
    assert [d.body for d in stops] == [{"type": "stop_process", "job_id": stopped_job, "parameters": []}], stops
    # x-match=any: a header the other worker also binds (broadcast, job_type, name, version) would reach it
    assert stops[0].headers.get("instance_id") == stopped_on, stops
    assert not {"broadcast", "job_type", "worker_name", "worker_version"} & set(stops[0].headers), stops

    def answered_stopped() -> list[Spied]:
        return [r for r in stack.responses.seen() if r.routing_key == "job_stopped"]

    wait_until(answered_stopped, 10, "the worker's job_stopped answer", stack.logs)  # is_stopped() was seen
    other = [j for j in stack.view(other_id)["jobs"] if j["step_id"] == "each_word"]
    assert [j["status"] for j in other] == ["processing"], other  # the other worker's job runs on
    ended = stack.wait_final(other_id)
    direct = [(d.headers, d.body) for d in stack.direct.seen()]
    assert ended["workflow"]["status"] == "completed", (
        f"{json.dumps(ended['jobs'], indent=1)}\ndirect orders: {direct}\n{stack.logs()}")
    assert [r.body["job_id"] for r in answered_stopped()] == [stopped_job]
    assert [d for d in stack.direct.seen() if isinstance(d.body, dict) and d.body.get("type") == "stop_process"
            ] == stops  # and no second stop
    assert other_job not in {r.body.get("job_id") for r in stack.responses.seen() if r.routing_key == "job_stopped"}


# A step that sends the mcai worker a parameter it does not declare: its JSON schema has
# additionalProperties: false, so the SDK rejects the order into job_delayed, and after its TTL
# limit answers job_error "Job TTL has been reached." (research doc, section 4.4).
UNDECLARED = """
identifier = "mcai-undeclared"
version = "1.0.0"

[[steps]]
id = "shout"
job_type = "job_upper"
parameters = { message = "hi", colour = "red" }
timeout_s = 120
"""


def test_e_an_order_the_sdk_refuses_to_validate_ends_as_a_visible_job_error(stack: Stack) -> None:
    started = stack.http.post("/api/workflows", json={"definition": "mcai-undeclared"})
    assert started.status_code == 201, started.text
    workflow_id = str(started.json()["workflow_id"])
    view = stack.wait_final(workflow_id, 60)
    assert view["workflow"]["status"] == "error", json.dumps(view, indent=1)
    (job,) = view["jobs"]
    assert job["status"] == "error" and "Job TTL has been reached." in (job["error"] or ""), job


def test_f_an_mcai_worker_killed_mid_job_its_order_comes_back_and_the_workflow_completes(stack: Stack) -> None:
    workflow_id = stack.start(message="kill", words=["sleep4"])
    wire_id, running_on = stack.running_on(workflow_id, "sleep4", step="each_word")
    victim = next(w for w in stack.mcai if w.queue == WORDS and w.popen.poll() is None)
    victim.popen.kill()  # SIGKILL: no answer, the order goes back to the queue unacked
    victim.popen.wait(10)
    replacement = mcai_worker(stack, "mcai-words-2", WORDS)
    view = stack.wait_final(workflow_id, 60)  # the SDK delays a redelivered order by 5 s
    assert view["workflow"]["status"] == "completed", json.dumps(view["jobs"], indent=1) + stack.logs()
    ran_on = {r.body["docker_container_id"] for r in stack.responses.seen()
              if r.routing_key == "job_progression" and r.body.get("job_id") == wire_id}
    assert running_on in ran_on and len(ran_on) == 2, ran_on  # the killed worker, then the replacement
    assert replacement.popen.poll() is None, replacement.log()


def test_g_sigterm_an_mcai_worker_and_stepflows_own_worker_serves_its_job_type(stack: Stack) -> None:
    before = stack.mcai_workers()
    ended = next(w for w in reversed(stack.mcai) if w.queue == WORDS and w.popen.poll() is None)
    ended.popen.send_signal(signal.SIGTERM)
    assert ended.popen.wait(15) == 0, ended.log()

    def terminated() -> set[str]:
        return {i for i, w in stack.mcai_workers().items() if w["status"] == "terminated"}

    gone = wait_until(lambda: len(terminated()) >= 1 and terminated(), 15,
                      "a terminated mcai worker in GET /api/workers", lambda: json.dumps(stack.workers()) + stack.logs())
    assert gone <= set(before), gone
    upper = [i for i, w in stack.mcai_workers().items() if w["job_type"] == JOB_TYPE]
    assert [stack.mcai_workers()[i]["status"] != "terminated" for i in upper] == [True]

    # the same workflow, job_words now served by stepflow's SDK beside the mcai job_upper worker
    words = Proc("words", ["worker", f"{MCAI / 'workers.py'}:words", "--instance-id", "words-1", "--heartbeat", "1"],
                 stack.rabbit.env(), stack.log_dir)
    stack.started.append(words)
    workflow_id = stack.start(message="again", words=["stepflow", "sdk"])
    view = stack.wait_final(workflow_id)
    assert view["workflow"]["status"] == "completed", json.dumps(view["jobs"], indent=1) + stack.logs()
    history = events(stack, workflow_id)
    steps = {e.step_id: e.outputs for e in history if type(e).__name__ == "StepCompleted"}
    assert steps["join"] == {"sentence": "AGAIN: STEPFLOW SDK", "count": 2}
    workers = {e.step_id: set() for e in history if type(e).__name__ == "JobSubmitted"}
    jobs = {e.job_id: e.step_id for e in history if type(e).__name__ == "JobSubmitted"}
    for e in history:
        if type(e).__name__ == "JobProgressed" and e.worker:
            workers[jobs[e.job_id]].add(e.worker)
    assert workers["shout"] == set(upper) and workers["each_word"] == {"words-1"}, workers
