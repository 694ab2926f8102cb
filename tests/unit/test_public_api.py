"""The public API: what `from stepflow import ...` gives, and the old paths kept for one release.

Old paths warn with a `DeprecationWarning` naming the importing line and give the very same
objects; nothing inside the project uses them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import stepflow
import stepflow.sdk

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = ("Worker", "JobContext", "JobFailed", "EmbeddedRuntime", "open_engine", "load_definition")
OLD_PATH = re.compile(r"stepflow\.adapters\.worker\b|from stepflow\.adapters import [^\n]*\b(Worker|JobContext|JobFailed)\b")
ALLOWED_OLD_PATH = {  # the shim, the lazy re-export, this test and the doc's note on deprecated paths
    "stepflow/adapters/worker.py", "stepflow/adapters/__init__.py", "tests/unit/test_public_api.py", "docs/api.md"}


def test_the_public_names_import_from_stepflow() -> None:
    from stepflow import (
        EmbeddedRuntime,
        JobContext,
        JobFailed,
        Worker,
        load_definition,
        open_engine,
    )
    from stepflow.adapters.embedded import EmbeddedRuntime as Embedded
    from stepflow.adapters.persistence import open_engine as opener
    from stepflow.engine.definitions import load_definition as loader

    assert (Worker, JobContext, JobFailed) == (stepflow.sdk.Worker, stepflow.sdk.JobContext, stepflow.sdk.JobFailed)
    assert (EmbeddedRuntime, open_engine, load_definition) == (Embedded, opener, loader)
    assert set(PUBLIC) <= set(stepflow.__all__) <= set(dir(stepflow))
    for name in stepflow.__all__:
        assert getattr(stepflow, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        stepflow.Nope  # noqa: B018


def test_importing_stepflow_imports_neither_the_sdk_nor_the_adapters() -> None:
    """`stepflow --version` and `import stepflow` stay cheap: names are imported on first use."""
    code = "import sys, stepflow; stepflow.__version__; print(sorted(m for m in sys.modules if m.startswith('stepflow')))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=True)
    assert done.stdout.strip() == "['stepflow']"


def test_the_old_worker_module_warns_at_the_importing_line_and_gives_the_same_objects(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "stepflow.adapters.worker", raising=False)
    with pytest.warns(DeprecationWarning, match=r"stepflow\.adapters\.worker is deprecated") as warned:
        import stepflow.adapters.worker as old
    assert [w.filename for w in warned] == [__file__]
    assert (old.Worker, old.JobContext, old.JobFailed) == (
        stepflow.sdk.Worker, stepflow.sdk.JobContext, stepflow.sdk.JobFailed)
    assert old.read_order is stepflow.sdk.orders.read_order
    assert old.INVALID_ORDER == "invalid_order" and old.MAX_JOB_ID_BYTES == 200


def test_the_old_package_names_warn_and_give_the_same_objects() -> None:
    with pytest.warns(DeprecationWarning, match=r"stepflow\.adapters\.Worker is deprecated") as warned:
        from stepflow.adapters import Worker
    assert Worker is stepflow.sdk.Worker
    assert {w.filename for w in warned} == {__file__}
    with pytest.warns(DeprecationWarning, match="JobFailed"):
        from stepflow.adapters import JobFailed
    assert JobFailed is stepflow.sdk.JobFailed
    with pytest.raises(ImportError, match="cannot import name 'Nope'"):
        from stepflow.adapters import Nope  # noqa: F401


def test_nothing_in_the_project_imports_the_old_paths() -> None:
    users = []
    for folder in ("stepflow", "tests", "examples", "benchmarks", "docs"):
        for path in sorted((ROOT / folder).rglob("*.py")) + sorted((ROOT / folder).rglob("*.md")):
            relative = path.relative_to(ROOT).as_posix()
            if relative not in ALLOWED_OLD_PATH and OLD_PATH.search(path.read_text(encoding="utf-8")):
                users.append(relative)
    if OLD_PATH.search((ROOT / "README.md").read_text(encoding="utf-8")):
        users.append("README.md")
    assert users == []


def test_importing_every_module_and_example_worker_never_warns_of_an_old_path() -> None:
    code = """
import importlib, pkgutil, runpy, sys, warnings
warnings.filterwarnings("error", message=r"stepflow\\.adapters\\.", category=DeprecationWarning)
import stepflow
for module in pkgutil.walk_packages(stepflow.__path__, "stepflow."):
    if module.name not in ("stepflow.adapters.worker", "stepflow.__main__"):
        importlib.import_module(module.name)
for example in sys.argv[1:]:
    sys.path.insert(0, example.rpartition("/")[0])
    runpy.run_path(example, run_name="example")
print("ok")
"""
    examples = [str(p) for p in sorted((ROOT / "examples").rglob("*.py"))]
    done = subprocess.run([sys.executable, "-c", code, *examples], cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
