"""A 3-node RabbitMQ cluster on this machine, for the tests that stop a node mid-run.

Started from the installed `rabbitmq-server` (the Debian package), next to the shared broker
on 5672 and never touching it:

- each node has its own name (`sf1@localhost`...), AMQP and distribution ports (free ones,
  asked of the OS), data and log directories under one temporary directory, and a config
  file of its own: the machine's /etc/rabbitmq/rabbitmq.conf binds 5672, and its
  rabbitmq-env.conf names the shared node, so neither is read;
- the scripts are run directly (/usr/lib/rabbitmq/bin), as the current user: the
  /usr/sbin wrappers switch to the `rabbitmq` user and drop the environment, hence the
  nodes' names and ports;
- one Erlang cookie for the three nodes and their `rabbitmqctl`: HOME is the temporary
  directory, which holds `.erlang.cookie`;
- no plugins (an empty enabled-plugins list): management and prometheus would fight for
  the shared broker's ports, and the test needs neither;
- nodes 2 and 3 join node 1 (`stop_app`, `join_cluster`, `start_app`); every wait is on a
  condition (`await_startup`, `await_online_nodes`), none is a sleep.

Torn down even when the test fails: each node is stopped (`rabbitmqctl stop`), and what is
left of it (the launching shell, beam, erl_child_setup: one process group per node, started
in its own session) is killed by that group's id; then the directory is removed.

Start-up takes 13-22 s on two cores (measured: `Cluster.start_s`, printed by the cluster test).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BIN = Path("/usr/lib/rabbitmq/bin")
HOST = "127.0.0.1"
NODES = 3
CTL_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Node:
    """One RabbitMQ node of the test cluster."""

    name: str  # sf1@localhost
    port: int
    dist_port: int
    base: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{self.port}/"

    @property
    def log_dir(self) -> Path:
        return self.base / "log"


@dataclass
class Cluster:
    """The running cluster: its nodes, their URLs, and `rabbitmqctl` aimed at one of them."""

    base: Path
    nodes: list[Node] = field(default_factory=list)
    start_s: float = 0.0

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def amqp_url(self) -> str:
        """The setting's form: every node's URL, comma-separated."""
        return ",".join(self.urls)

    def env(self, node: Node | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env["HOME"] = str(self.base)  # .erlang.cookie
        env["RABBITMQ_CONF_ENV_FILE"] = str(self.base / "rabbitmq-env.conf")
        if node is not None:
            env.update(
                RABBITMQ_NODENAME=node.name,
                RABBITMQ_NODE_IP_ADDRESS=HOST,
                RABBITMQ_NODE_PORT=str(node.port),
                RABBITMQ_DIST_PORT=str(node.dist_port),
                RABBITMQ_MNESIA_BASE=str(node.base / "mnesia"),
                RABBITMQ_LOG_BASE=str(node.log_dir),
                RABBITMQ_PID_FILE=str(node.base / "beam.pid"),
                RABBITMQ_CONFIG_FILE=str(node.base / "rabbitmq.conf"),
                RABBITMQ_ADVANCED_CONFIG_FILE=str(node.base / "advanced.config"),
                RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
                RABBITMQ_PLUGINS_EXPAND_DIR=str(node.base / "plugins-expand"),
            )
        return env

    def ctl(self, node: Node, *args: str, timeout: float = CTL_TIMEOUT_S, check: bool = True) -> str:
        """`rabbitmqctl -n NODE ARGS`; its stdout. Raises with the output on failure."""
        done = subprocess.run([str(BIN / "rabbitmqctl"), "-n", node.name, *args], check=False, env=self.env(),
                              capture_output=True, text=True, timeout=timeout, cwd=self.base)
        if check and done.returncode != 0:
            raise AssertionError(f"rabbitmqctl -n {node.name} {' '.join(args)} -> {done.returncode}\n"
                                 f"{done.stdout}\n{done.stderr}\n{self.log_tail(node)}")
        return done.stdout

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name.split("@")[0] == name.split("@")[0])

    def node_of_port(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def connection_names(self, node: Node) -> list[str]:
        """The client-given names of the AMQP connections this node holds."""
        out = self.ctl(node, "list_connections", "client_properties", "-q", "--no-table-headers", "--local")
        return [line for line in out.splitlines() if line.strip()]

    def log_tail(self, node: Node, chars: int = 3000) -> str:
        texts = [p.read_text(errors="replace")[-chars:] for p in sorted(node.log_dir.glob("*.log"))]
        return f"--- {node.name} logs ---\n" + "\n".join(texts)

    def queue_types(self, node: Node, prefix: str) -> dict[str, str]:
        """name -> type (quorum, classic) of the queues whose name starts with `prefix`."""
        out = self.ctl(node, "list_queues", "name", "type", "-q", "--no-table-headers")
        pairs = (line.split("\t") for line in out.splitlines() if line.startswith(prefix))
        return {name.strip(): kind.strip() for name, kind in pairs}

    # --- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        started = time.monotonic()
        (self.base / ".erlang.cookie").write_text("STEPFLOWTESTCLUSTERCOOKIE")
        (self.base / ".erlang.cookie").chmod(0o400)
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq-env.conf").write_text("")
        for n in range(1, NODES + 1):
            node = Node(f"sf{n}@localhost", free_port(), free_port(), self.base / f"sf{n}")
            node.log_dir.mkdir(parents=True)
            (node.base / "rabbitmq.conf").write_text(
                f"listeners.tcp.local = {HOST}:{node.port}\n")
            (node.base / "advanced.config").write_text("[].\n")
            self.nodes.append(node)
        for node in self.nodes:  # the three boot at the same time
            self.launch(node)
        for node in self.nodes:
            self.await_up(node)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first.name)
            self.ctl(node, "start_app")
        self.ctl(first, "await_online_nodes", str(NODES), "--timeout", str(CTL_TIMEOUT_S))
        self.start_s = time.monotonic() - started

    def launch(self, node: Node) -> None:
        out = (node.log_dir / "stdout.txt").open("ab")
        node.proc = subprocess.Popen([str(BIN / "rabbitmq-server")], env=self.env(node), cwd=self.base,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()

    def await_up(self, node: Node) -> None:
        """The node booted and its app runs: `rabbitmqctl wait PIDFILE` waits for the pid file
        (the VM is up), then for the app (`await_startup` needs a node that already answers)."""
        if node.proc is not None and node.proc.poll() is not None:
            raise AssertionError(f"{node.name} exited with {node.proc.returncode}\n{self.log_tail(node)}")
        self.ctl(node, "wait", str(node.base / "beam.pid"), "--timeout", str(CTL_TIMEOUT_S))

    def stop_app(self, node: Node) -> None:
        """The node leaves service (its clients are disconnected); its Erlang VM stays."""
        self.ctl(node, "stop_app")

    def start_app(self, node: Node) -> None:
        self.ctl(node, "start_app")
        self.ctl(node, "await_startup", "--timeout", str(CTL_TIMEOUT_S))

    def kill(self, node: Node) -> None:
        """A crash: SIGKILL to the node's Erlang VM (its pid file's), nothing runs on the way
        out; the kernel drops its clients' TCP connections. Returns once the node is gone."""
        assert node.proc is not None
        os.kill(int((node.base / "beam.pid").read_text().strip()), signal.SIGKILL)
        node.proc.wait(60)  # the launching shell waits for beam, then exits
        (node.base / "beam.pid").unlink(missing_ok=True)

    def running(self, node: Node) -> bool:
        """Its VM is up and its app runs."""
        if node.proc is None or node.proc.poll() is not None:
            return False
        status = subprocess.run([str(BIN / "rabbitmqctl"), "-n", node.name, "await_startup", "--timeout", "1"],
                                check=False, env=self.env(), capture_output=True, timeout=60, cwd=self.base)
        return status.returncode == 0

    def revive(self, node: Node) -> None:
        """The node back in the cluster, whether its app was stopped or its VM killed (it
        rejoins by itself: its data directory knows the cluster)."""
        if node.proc is not None and node.proc.poll() is not None:
            self.launch(node)
            self.await_up(node)
        else:
            self.start_app(node)
        self.ctl(self.nodes[0] if node is not self.nodes[0] else self.nodes[-1], "await_online_nodes",
                 str(len(self.nodes)), "--timeout", str(CTL_TIMEOUT_S))

    def close(self) -> None:
        for node in self.nodes:
            if node.proc is None:
                continue
            if node.proc.poll() is None:
                self.ctl(node, "stop", timeout=60, check=False)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.proc.wait(30)
            # whatever is left of this node (shell, beam, erl_child_setup): its own group only
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(node.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.proc.wait(10)
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def running_cluster() -> Iterator[Cluster]:
    if not (BIN / "rabbitmq-server").exists():
        pytest.fail(f"no RabbitMQ installed at {BIN}: the cluster test needs the rabbitmq-server package",
                    pytrace=False)
    # short: the node names and socket paths stay well inside Erlang's and the OS's limits
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="sfcluster-")))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def rabbit_cluster() -> Iterator[Cluster]:
    """Three joined RabbitMQ nodes on free ports, for the tests of one module; gone afterwards."""
    with running_cluster() as cluster:
        yield cluster
