"""The distribution works once installed: build the sdist and the wheel, install the wheel
(not editable) into a fresh venv, and use it from a directory outside the checkout.

The wheel is built from the sdist (`python -m build`'s default), so a file missing from
either one fails here: the web view's static files, `py.typed`, the licence. The installed
command then runs the media demo, serves the web view embedded (`/`, a static asset,
`/openapi.json`) and tells its version. Dependencies come from the lock (constraints.txt).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
import tomllib
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VERSION = PROJECT["version"]
STATIC = sorted(p.name for p in (ROOT / "stepflow" / "adapters" / "http" / "static").iterdir() if p.is_file())
MEDIA = ROOT / "examples" / "media"


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path


@dataclass(frozen=True)
class Installed:
    bin: Path
    home: Path  # a directory outside the checkout to run from

    def env(self, **extra: str) -> dict[str, str]:
        """No PYTHONPATH and no checkout on the path: only what the wheel installed."""
        drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP")
        env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("STEPFLOW_")}
        env.update(PATH=os.pathsep.join([str(self.bin), env.get("PATH", "")]), PYTHONUNBUFFERED="1",
                   PYTHONDONTWRITEBYTECODE="1", STEPFLOW_LOG_FORMAT="console")
        env.update(extra)
        return env

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bin / argv[0]), *argv[1:]], cwd=self.home, env=self.env(),
                              capture_output=True, text=True, timeout=timeout, check=False)


def _check(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, f"{done.args} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    out = tmp_path_factory.mktemp("dist")
    _check(subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=300, check=False))
    (sdist,), (wheel,) = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    return Dist(sdist, wheel)


@pytest.fixture(scope="module")
def installed(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel-venv")
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(env_dir)
    home = base / "home"
    home.mkdir()
    target = Installed(env_dir / "bin", home)
    _check(subprocess.run([str(target.bin / "python"), "-m", "pip", "install", "-q", "-c",
                           str(ROOT / "constraints.txt"), str(dist.wheel)],
                          cwd=home, env=target.env(), capture_output=True, text=True, timeout=600, check=False))
    return target


def test_the_sdist_and_the_wheel_carry_every_file_read_at_run_time(dist: Dist) -> None:
    assert dist.wheel.name == f"stepflow_engine-{VERSION}-py3-none-any.whl"
    wheel_names = set(zipfile.ZipFile(dist.wheel).namelist())
    missing = [f"stepflow/adapters/http/static/{name}" for name in STATIC
               if f"stepflow/adapters/http/static/{name}" not in wheel_names]
    assert not missing, f"not in the wheel: {missing}"
    assert "stepflow/py.typed" in wheel_names
    assert f"stepflow_engine-{VERSION}.dist-info/licenses/LICENSE" in wheel_names

    with tarfile.open(dist.sdist) as sdist:
        sdist_names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for name in ("LICENSE", "README.md", "pyproject.toml", "stepflow/py.typed",
                 *(f"stepflow/adapters/http/static/{n}" for n in STATIC)):
        assert name in sdist_names, f"{name} is not in the sdist"


def test_twine_check_passes_on_the_sdist_and_the_wheel(dist: Dist) -> None:
    done = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(dist.sdist), str(dist.wheel)],
                          capture_output=True, text=True, timeout=120, check=False)
    _check(done)
    assert done.stdout.count("PASSED") == 2, done.stdout


def test_the_metadata_names_the_distribution_its_licence_and_readme(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as wheel:
        metadata = wheel.read(f"stepflow_engine-{VERSION}.dist-info/METADATA").decode()
        top_level = wheel.read(f"stepflow_engine-{VERSION}.dist-info/top_level.txt").decode().split()
    assert "Name: stepflow-engine\n" in metadata
    assert f"Version: {VERSION}\n" in metadata
    assert "License-Expression: MIT\n" in metadata
    assert "Description-Content-Type: text/markdown" in metadata
    assert "Classifier: Typing :: Typed" in metadata
    assert top_level == ["stepflow"]  # the import name


def test_the_installed_command_tells_its_version(installed: Installed) -> None:
    done = installed.run("stepflow", "--version")
    _check(done)
    line = done.stdout.strip()
    assert line.startswith(f"stepflow {VERSION} (stepflow-engine; "), line
    for library in ("eventsourcing", "aio-pika", "msgspec"):
        assert re.search(rf"\b{library} \d+\.\d+", line), line
    where = installed.run("python", "-c", "import stepflow; print(stepflow.__file__, stepflow.__version__)")
    _check(where)
    path, version = where.stdout.split()
    assert "site-packages" in path and not Path(path).is_relative_to(ROOT), path
    assert version == VERSION


def test_the_installed_command_runs_the_media_demo(installed: Installed) -> None:
    store = f"sqlite:///{installed.home / 'demo.sqlite'}"
    done = installed.run("stepflow", "run", str(MEDIA / "workflow.toml"), "--store", store, "--quiet",
                         "--timeout", "90")
    _check(done)
    assert ": completed" in done.stdout, done.stdout


def test_the_installed_command_serves_the_web_view(installed: Installed) -> None:
    log_path = installed.home / "serve.log"
    store = f"sqlite:///{installed.home / 'serve.sqlite'}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(installed.bin / "stepflow"), "serve", "--embedded", "--workers", f"{MEDIA / 'workers.py'}:media",
             "--definitions", str(MEDIA / "workflow.toml"), "--http", "127.0.0.1:0", "--store", store],
            cwd=installed.home, env=installed.env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        url = _wait_for_url(log_path, proc)
        with httpx.Client(base_url=url, timeout=10) as http:
            page = http.get("/")
            assert page.status_code == 200, page.text
            assert page.headers["content-type"].startswith("text/html")
            assert "<html" in page.text.lower()
            asset = http.get("/static/style.css")
            assert asset.status_code == 200 and asset.headers["content-type"].startswith("text/css")
            assert asset.content == (ROOT / "stepflow" / "adapters" / "http" / "static" / "style.css").read_bytes()
            script = http.get("/static/app.js")
            assert script.status_code == 200 and script.text.strip()
            spec = http.get("/openapi.json")
            assert spec.status_code == 200
            assert spec.json()["info"]["version"] == VERSION
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_path.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)


def _wait_for_url(log_path: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> str:
    """The address `serve` logs once it listens (`http_serving url=...`: port 0 picks one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        match = re.search(r"http_serving\b.*?\burl=(http://127\.0\.0\.1:\d+)", text)
        if match:
            return match.group(1)
        assert proc.poll() is None, f"serve exited {proc.returncode}:\n{text}"
        time.sleep(0.1)
    raise AssertionError(f"serve logged no http_serving line in {timeout:.0f} s:\n{log_path.read_text()}")
