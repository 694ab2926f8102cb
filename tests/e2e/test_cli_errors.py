"""Every way a user can get the command line wrong, or meet missing infrastructure, run as they
would: `python -m stepflow ...` in a fresh directory with an empty data directory.

Each case asserts the documented exit code (0 ok, 1 workflow failed or stopped, 2 bad input,
3 refused, 4 infrastructure unreachable), that the error is ONE line on stderr starting with
`stepflow: ` and saying what is wrong, and that no traceback is printed. The cases are those
of issue 15 (tracebacks, wrong codes, a closed pipe reported as an unreachable store...) and
their neighbours.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from pg_fixtures import PG_SERVER

ROOT = Path(__file__).resolve().parents[2]
MEDIA = ROOT / "examples" / "media" / "workflow.toml"
pytestmark = pytest.mark.e2e

_pg = urlparse(PG_SERVER)
PG_NO_DATABASE = _pg._replace(path="/stepflow_no_such_database").geturl()
PG_NO_SCHEMA = _pg._replace(query="schema=stepflow_no_such_schema").geturl()
PG_CLOSED_PORT = "postgresql://postgres@127.0.0.1:5999/test"
PG_NO_HOST = "postgresql://postgres@no-such-host.invalid:5432/test"
AMQP_CLOSED_PORT = "amqp://guest:guest@127.0.0.1:1/"


def env(home: Path, **extra: str) -> dict[str, str]:
    """This checkout's code; no stepflow settings from outside; `home` as the data directory."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("STEPFLOW_")}
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    out.update(STEPFLOW_HOME=str(home), **extra)
    return out


def stepflow(args: list[str], cwd: Path, home: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stepflow", *args], cwd=cwd, env=env(home, **extra),
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def place(tmp_path: Path) -> tuple[Path, Path]:
    """A working directory with a few bad files in it, and an empty data directory."""
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    (work / "workflow.yaml").write_text("identifier: x\nsteps: []\n")
    (work / "notes.sqlite").write_text("not a database\n")
    (work / "broken.py").write_text("worker = (\n")
    text = MEDIA.read_text()
    assert 'type = "integer"' in text
    (work / "int.toml").write_text(text.replace('type = "integer"', 'type = "int"', 1))
    return work, home


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def assert_one_clean_line(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    everything = result.stdout + result.stderr
    assert result.returncode == code, everything
    assert "Traceback (most recent call last)" not in everything, everything
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("stepflow: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# (id, argv, exit code, fragments of the one line on stderr); "{port}" is a port in use
CASES: list[tuple[str, list[str], int, tuple[str, ...]]] = [
    # an unreachable store: 4, whichever command (run used to print psycopg's traceback, exit 1)
    ("run-pg-closed-port", ["run", str(MEDIA), "--store", PG_CLOSED_PORT], 4,
     ("store unreachable:", "5999", "Connection refused")),
    ("workflows-pg-closed-port", ["workflows", "--store", PG_CLOSED_PORT], 4, ("store unreachable:",)),
    ("serve-pg-closed-port", ["serve", "--embedded", "--store", PG_CLOSED_PORT], 4, ("store unreachable:",)),
    ("run-pg-bad-host", ["run", str(MEDIA), "--store", PG_NO_HOST], 4,
     ("store unreachable:", "no-such-host.invalid")),
    # bad URLs: 2, before anything connects
    ("run-amqp-nonsense", ["run", str(MEDIA), "--amqp-url", "nonsense"], 2,
     ("--amqp-url='nonsense': not a RabbitMQ URL",)),
    ("serve-amqp-nonsense", ["serve", "--amqp-url", "nonsense"], 2, ("not a RabbitMQ URL",)),
    ("worker-amqp-nonsense", ["worker", "x:y", "--amqp-url", "nonsense"], 2, ("not a RabbitMQ URL",)),
    ("run-store-mysql", ["run", str(MEDIA), "--store", "mysql://u:pw@db/x"], 2,
     ("--store='mysql://u:***@db/x': unsupported store URL scheme 'mysql'", "sqlite:///")),
    ("workflows-store-mysql", ["workflows", "--store", "mysql://db/x"], 2, ("unsupported store URL scheme",)),
    ("store-a-file-name", ["workflows", "--store", "stepflow.sqlite"], 2, ("not a store URL",)),
    ("store-not-a-database", ["workflows", "--store", "sqlite:///notes.sqlite"], 4,
     ("store unusable: notes.sqlite is not a SQLite database",)),
    ("run-store-not-a-database", ["run", str(MEDIA), "--store", "sqlite:///notes.sqlite"], 4,
     ("is not a SQLite database",)),
    # a broker that is not there: 4
    ("run-amqp-closed-port", ["run", str(MEDIA), "--amqp-url", AMQP_CLOSED_PORT, "--store", "memory://"], 4,
     ("cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:1/",)),
    ("serve-amqp-closed-port", ["serve", "--amqp-url", AMQP_CLOSED_PORT, "--store", "memory://"], 4,
     ("cannot reach RabbitMQ",)),
    ("worker-amqp-closed-port", ["worker", f"{ROOT}/examples/media/workers.py:media", "--amqp-url",
                                 AMQP_CLOSED_PORT], 4, ("cannot reach RabbitMQ",)),
    # workers that cannot be loaded: 2
    ("run-worker-no-module", ["run", str(MEDIA), "--worker", "nosuchmod:w"], 2,
     ("cannot load worker nosuchmod:w", "No module named 'nosuchmod'")),
    ("run-worker-no-attribute", ["run", str(MEDIA), "--worker", f"{ROOT}/examples/media/workers.py:nope"], 2,
     ("cannot load worker",)),
    ("worker-no-module", ["worker", "nosuchmod:w"], 2, ("cannot load worker nosuchmod:w",)),
    ("worker-syntax-error", ["worker", "broken.py:worker"], 2, ("cannot load worker broken.py:worker", "line 1")),
    ("run-worker-syntax-error", ["run", str(MEDIA), "--worker", "broken.py:worker"], 2, ("was never closed",)),
    ("serve-workers-no-module", ["serve", "--embedded", "--store", "memory://", "--workers", "nosuchmod:w"], 2,
     ("No module named 'nosuchmod'",)),
    # serve --http on a port in use: said before the backend starts
    ("serve-http-port-taken", ["serve", "--embedded", "--store", "memory://", "--http", "127.0.0.1:{port}"], 4,
     ("cannot serve HTTP at 127.0.0.1:", "in use")),
    # refused words list the good ones
    ("workflows-status-bogus", ["workflows", "--status", "bogus"], 2,
     ("invalid choice: 'bogus'", "'running'", "'completed'", "'stopped'")),
    ("jobs-status-bogus", ["jobs", "--status", "bogus"], 2, ("invalid choice: 'bogus'", "'processing'")),
    ("definition-bad-type", ["run", "int.toml"], 2,
     ("Invalid enum value 'int'", "expected one of:", "integer", "array_of_strings", "$.parameters[2].type")),
    ("definition-yaml", ["run", "workflow.yaml"], 2, ("unsupported definition format '.yaml' (use .toml or .json)",)),
    ("definition-missing", ["run", "nowhere.toml"], 2, ("no such definition file: nowhere.toml",)),
    ("definition-directory", ["run", "."], 2, ("unsupported definition format",)),
    ("param-bad", ["run", str(MEDIA), "--param", "size_kib=lots"], 2, ("expected integer, got 'lots'",)),
    # usage errors: one line too, not argparse's usage block
    ("no-command", [], 2, ("the following arguments are required: COMMAND", "stepflow --help")),
    ("unknown-command", ["frobnicate"], 2, ("invalid choice: 'frobnicate'",)),
    ("unknown-flag", ["workflows", "--frobnicate"], 2, ("unrecognized arguments: --frobnicate",)),
    ("bad-time", ["audit", "--since", "yesterday-ish"], 2, ("not a time: 'yesterday-ish'",)),
    # a read command with no store where it looks: 2, and nothing created (see the test below)
    ("workflows-no-store", ["workflows"], 2, ("no store at ", "start a workflow first, or pass --store")),
    ("history-no-store", ["history", "abcd"], 2, ("no store at ",)),
]
PG_CASES: list[tuple[str, list[str], int, tuple[str, ...]]] = [
    ("run-pg-no-database", ["run", str(MEDIA), "--store", PG_NO_DATABASE], 4,
     ("store unreachable: PostgreSQL database 'stepflow_no_such_database' does not exist",)),
    ("workflows-pg-no-database", ["workflows", "--store", PG_NO_DATABASE], 4, ("does not exist",)),
    ("workflows-pg-no-schema", ["workflows", "--store", PG_NO_SCHEMA], 4,
     ("PostgreSQL schema 'stepflow_no_such_schema' does not exist", "CREATE SCHEMA")),
    ("run-pg-no-schema", ["run", str(MEDIA), "--store", PG_NO_SCHEMA], 4, ("schema 'stepflow_no_such_schema'",)),
]


@pytest.mark.parametrize(("argv", "code", "fragments"), [case[1:] for case in CASES], ids=[c[0] for c in CASES])
def test_a_bad_input_or_missing_part_is_one_line_and_its_exit_code(
        place: tuple[Path, Path], busy_port: int, argv: list[str], code: int, fragments: tuple[str, ...]) -> None:
    work, home = place
    result = stepflow([arg.replace("{port}", str(busy_port)) for arg in argv], work, home)
    assert_one_clean_line(result, code, *fragments)
    if "serve" in argv:
        assert "serving" not in result.stderr  # nothing started, nothing to stop


@pytest.mark.postgres
@pytest.mark.parametrize(("argv", "code", "fragments"), [case[1:] for case in PG_CASES],
                         ids=[c[0] for c in PG_CASES])
def test_a_missing_postgresql_database_or_schema_is_named(
        place: tuple[Path, Path], argv: list[str], code: int, fragments: tuple[str, ...]) -> None:
    work, home = place
    assert_one_clean_line(stepflow(argv, work, home), code, *fragments)


def test_read_commands_on_no_store_create_nothing(place: tuple[Path, Path]) -> None:
    work, home = place
    before = sorted(work.iterdir())
    for command in (["workflows"], ["show", "abcd"], ["jobs"], ["workers"], ["stats"], ["history", "abcd"],
                    ["audit"], ["replay", "--check"], ["stop", "abcd"], ["rebuild"], ["project", "--once"]):
        result = stepflow(command, work, home)
        assert_one_clean_line(result, 2, f"no store at {home / 'stepflow.sqlite'}")
    assert sorted(work.iterdir()) == before and list(home.iterdir()) == []


def test_run_creates_the_data_directory_and_read_commands_find_the_store_there(tmp_path: Path) -> None:
    home = tmp_path / "fresh" / "data"  # not there yet, as on a new machine
    first, elsewhere = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    elsewhere.mkdir()
    done = stepflow(["run", str(MEDIA), "--quiet"], first, home)
    assert done.returncode == 0, done.stderr
    assert (home / "stepflow.sqlite").exists() and list(first.iterdir()) == []
    listed = stepflow(["workflows", "--json"], elsewhere, home)  # another directory, the same store
    assert listed.returncode == 0 and '"status":"completed"' in listed.stdout, listed.stderr
    shown = stepflow(["config"], elsewhere, home).stdout.splitlines()  # where the data is, and why
    assert [line.split()[:3] for line in shown if line.split()[0] in ("home", "store")] == [
        ["home", str(home), "environment"], ["store", f"sqlite:///{home}/stepflow.sqlite", "default"]]


def _closed_pipe_run(argv: list[str], work: Path, home: Path) -> subprocess.CompletedProcess[str]:
    """`stepflow ... | head -0`: stdout is a pipe whose reader has gone before anything was read."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "stepflow", *argv], cwd=work, env=env(home),
                                stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    finally:
        os.close(write_end)
    return subprocess.CompletedProcess(result.args, result.returncode, "", result.stderr)


def test_a_closed_pipe_ends_quietly_with_exit_0(place: tuple[Path, Path]) -> None:
    work, home = place
    for _ in range(2):
        assert stepflow(["run", str(MEDIA), "--quiet"], work, home).returncode == 0
    # small output (written when the process ends) and large output (written as it goes)
    for argv in (["config"], ["--help"], ["workflows"], ["audit", "--json"], ["history", "--help"]):
        result = _closed_pipe_run(argv, work, home)
        assert (result.returncode, result.stderr) == (0, ""), (argv, result.stderr)
    # `run ... | head -1` still follows its workflow to the end: none is left running, unfollowed
    result = _closed_pipe_run(["run", str(MEDIA)], work, home)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    listed = stepflow(["workflows", "--json"], work, home).stdout.splitlines()
    assert len(listed) == 3 and all('"status":"completed"' in line for line in listed)
    big = stepflow(["audit", "--json"], work, home)
    assert len(big.stdout) > 2 * io.DEFAULT_BUFFER_SIZE  # more than stdout's buffer: a write fails mid-command
