"""docker-compose.yml and the Dockerfile say only what stepflow understands.

No Docker engine runs here, so the stack cannot be started in CI; instead every command in the
compose file is parsed by the real CLI parser (an unknown command or flag fails), every
`STEPFLOW_*` variable must be a real setting, every path must exist, and the backend must
serve its HTTP API and web view on a published port.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from stepflow.adapters.cli import build_parser
from stepflow.settings import SPECS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
STEPFLOW_SERVICES = {name: service for name, service in COMPOSE["services"].items()
                     if service.get("image", "").startswith("stepflow")}


def interpolated(value: str) -> str:
    """Compose's `${NAME:-default}`, with the defaults (what a laptop gets)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_the_stack_has_a_backend_and_workers() -> None:
    commands = {name: service["command"][0] for name, service in STEPFLOW_SERVICES.items()}
    assert "serve" in commands.values() and list(commands.values()).count("worker") >= 2


@pytest.mark.parametrize("name", sorted(STEPFLOW_SERVICES))
def test_every_command_parses_with_the_cli(name: str) -> None:
    command = [interpolated(part) for part in STEPFLOW_SERVICES[name]["command"]]
    try:
        args = build_parser().parse_args(command)
    except SystemExit as exit_:
        pytest.fail(f"{name}: `stepflow {' '.join(command)}` is refused by the CLI ({exit_})")
    assert args.command == command[0]
    for part in command:
        if part.startswith("examples/"):
            assert (ROOT / part.split(":")[0]).exists(), f"{name}: {part} does not exist"


@pytest.mark.parametrize("name", sorted(STEPFLOW_SERVICES))
def test_every_stepflow_variable_is_a_setting(name: str) -> None:
    known = {spec.env for spec in SPECS}
    environment: dict[str, Any] = STEPFLOW_SERVICES[name].get("environment", {})
    unknown = [key for key in environment if key.startswith("STEPFLOW_") and key not in known]
    assert unknown == []


def test_the_backend_serves_http_on_a_published_port() -> None:
    (backend,) = [s for s in STEPFLOW_SERVICES.values() if s["command"][0] == "serve"]
    command = backend["command"]
    address = command[command.index("--http") + 1]
    port = address.rsplit(":", 1)[1]
    assert f"{port}:{port}" in backend["ports"]
    assert "STEPFLOW_HTTP_TOKENS" in backend["environment"]  # the API refuses everyone without one
    assert "/healthz" in " ".join(backend["healthcheck"]["test"])


def test_the_dockerfile_copies_what_exists_and_installs_with_the_lock() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), line
    assert re.search(r"pip install -c constraints\.txt", dockerfile)
