"""The fault and bad-input suite (tests/faults): crash points, worker and broker faults,
garbage on the inbound queues, two backends on one store, security basics.

Marker `faults` (registered here; pyproject.toml is not ours to edit). Counts are small by
default (CI, a few minutes); `--soak` or STEPFLOW_SOAK=1 multiplies them (x10, or the value
of STEPFLOW_SOAK when it is a number > 1) for manual runs. The figures each test produced
(kills survived, inputs sent, quarantined, lost, doubled) are printed at the end of the run
and written to $STEPFLOW_FAULT_FIGURES (a JSON file) when set.
"""

from __future__ import annotations

import json
import os

import fault_kit
import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", default=False,
                     help="fault suite: run the long version (counts x10, or x$STEPFLOW_SOAK)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: the fault-injection and bad-input suite (tests/faults)")
    env = os.environ.get("STEPFLOW_SOAK", "")
    if config.getoption("--soak", default=False) or env:
        fault_kit.SOAK = int(env) if env.isdigit() and int(env) > 1 else 10


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.faults)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not fault_kit.FIGURES:
        return
    terminalreporter.section("stepflow fault suite figures")
    for name, figures in fault_kit.FIGURES.items():
        terminalreporter.write_line(f"{name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    path = os.environ.get("STEPFLOW_FAULT_FIGURES")
    if path:
        with open(path, "w") as out:
            json.dump({"soak": fault_kit.SOAK, "figures": fault_kit.FIGURES}, out, indent=2)
