"""The web view in a real browser: headless Chromium (Debian's package) driven by Selenium.

An embedded stepflow (backend, in-process broker, workers, SQLite, HTTP app on a free
loopback port) runs in a thread of its own. The browser signs in with a bearer token, starts
a workflow from the list page's form, follows its page while the DAG and the job statuses go
to completed (the first step waits for a gate the test opens, so the page is seen live), then
visits the workers and statistics pages. Screenshots are saved under tests/artifacts/.

Without Chromium this test fails, saying what to install (the README promises a suite that
fails, never skips); `.ci/run` installs `chromium` and `chromium-driver`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stepflow.adapters.embedded import EmbeddedRuntime
from stepflow.adapters.http.auth import TokenAuth
from stepflow.adapters.http.catalog import DefinitionCatalog
from stepflow.adapters.http.server import HttpService
from stepflow.adapters.persistence import open_engine
from stepflow.engine.definitions import build_definition
from stepflow.sdk import JobContext, Worker

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = os.environ.get("STEPFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("STEPFLOW_CHROMEDRIVER", "/usr/bin/chromedriver")
TOKEN = "browser-token-0123456789"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000")
DEFINITION = {
    "identifier": "browser-demo", "label": "Gate, fan-out render, finish", "version": "1.0.0",
    "parameters": [{"id": "frames", "type": "array_of_strings", "default": ["a", "b", "c"]}],
    "steps": [
        {"id": "prepare", "job_type": "gate", "label": "waits for the test"},
        {"id": "render", "job_type": "render", "parents": ["prepare"], "fan_out": "{workflow.frames}",
         "parameters": {"frame": "{item}"}},
        {"id": "finish", "job_type": "render", "parents": ["render"], "parameters": {"frame": "all"}},
    ],
    "rights": {"view": ["ops"], "create": ["ops"]},
}


def browser_or_fail(profile: Path) -> Any:
    problems = [f"{path} is missing" for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    try:
        from selenium import webdriver
    except ImportError:
        problems.append("the selenium package is not installed")
    if problems:
        message = ("browser test needs Debian's chromium and chromium-driver and pip's selenium: "
                   + "; ".join(problems) + " (apt-get install -y chromium chromium-driver)")
        pytest.fail(message)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))


def workers(gate: threading.Event) -> Worker:
    worker = Worker("browser-demo", version="1.0.0", heartbeat_s=0.5, prefetch=4)

    @worker.job("gate")
    async def wait_for_gate(params: dict, ctx: JobContext) -> dict:
        await ctx.progress(10, "waiting for the test")
        await asyncio.to_thread(gate.wait, 60)
        return {"opened": True}

    @worker.job("render")
    async def render(params: dict, ctx: JobContext) -> dict:
        for percent in (25, 50, 75):
            await ctx.progress(percent, f"frame {params['frame']}")
            await asyncio.sleep(0.1)
        return {"frame": params["frame"]}

    return worker


class Embedded:
    """stepflow in a thread with its own event loop; the test thread drives the browser."""

    def __init__(self, store: str) -> None:
        self.store = store
        self.gate = threading.Event()
        self.ready = threading.Event()
        self.url = ""
        self.error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # noqa: BLE001  reported to the test thread
            self.error = error
            self.ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        engine = open_engine(self.store)
        runtime = EmbeddedRuntime(engine, [workers(self.gate)], projections=True)
        assert runtime.read_side is not None
        http = HttpService(engine, "127.0.0.1:0", catalog=DefinitionCatalog([build_definition(DEFINITION)]),
                           auth=TokenAuth.with_tokens({TOKEN: ("tester", ("ops", "workers"))}), runner=runtime.read_side.runner)
        async with runtime:
            await http.start(runtime.backend)
            self.url = http.url
            self.ready.set()
            await self._stop.wait()
            await http.stop()
        engine.close()

    def stop(self) -> None:
        self.gate.set()
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(30)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Embedded]:
    embedded = Embedded(f"sqlite:///{tmp_path / 'web.sqlite'}")
    embedded.thread.start()
    assert embedded.ready.wait(30), "embedded stepflow did not start"
    if embedded.error is not None:
        raise embedded.error
    yield embedded
    embedded.stop()


def test_a_workflow_page_follows_the_run_to_completed(stack: Embedded, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    driver = browser_or_fail(tmp_path / "chromium-profile")
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    # live updates redraw the page under our feet: read it in one script call, retry stale reads
    wait = WebDriverWait(driver, 30, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,))

    def status_of(css: str) -> list[str]:
        return list(driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.dataset.status)", css))

    def text_of(css: str) -> str:
        return str(driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.textContent : ''",
                                         css))

    try:
        driver.get(stack.url + "/")
        wait.until(EC.visibility_of_element_located((By.ID, "token"))).send_keys(TOKEN)
        driver.find_element(By.ID, "token-save").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "who"), "tester (ops, workers)"))
        wait.until(lambda d: Select(d.find_element(By.ID, "start-definition")).options)
        assert '"frames"' in driver.find_element(By.ID, "start-parameters").get_attribute("value")
        driver.find_element(By.ID, "start-labels").send_keys("browser")
        driver.find_element(By.ID, "start-button").click()

        wait.until(EC.url_contains("/workflows/"))
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, '.dag-node[data-step="prepare"]')))
        assert driver.execute_script("return [...document.querySelectorAll('.dag-node')].map(e => e.dataset.step)") == [
            "prepare", "render", "finish"]
        assert len(driver.find_elements(By.CSS_SELECTOR, "#dag path.dag-edge")) == 2
        wait.until(lambda d: status_of('.job-row[data-step="prepare"]') == ["processing"])
        assert status_of("#workflow-status") == ["running"]
        assert status_of('.dag-node[data-step="render"]') == ["waiting"]
        driver.save_screenshot(str(ARTIFACTS / "web_workflow_running.png"))

        stack.gate.set()  # the first job completes; the fan-out runs; the page follows live
        wait.until(lambda d: status_of("#workflow-status") == ["completed"])
        wait.until(lambda d: status_of(".job-row") == ["completed"] * 5)
        assert status_of(".dag-node") == ["completed"] * 3
        assert "3/3 jobs" in text_of('.dag-node[data-step="render"]')
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#history li[data-event="WorkflowCompleted"]'))
        assert driver.find_elements(By.CSS_SELECTOR, '#actions button[data-action="delete"]')
        driver.save_screenshot(str(ARTIFACTS / "web_workflow.png"))

        driver.get(stack.url + "/")
        wait.until(lambda d: status_of(".workflow-row") == ["completed"])
        assert "100%" in text_of(".workflow-row .pct")
        driver.save_screenshot(str(ARTIFACTS / "web_list.png"))

        driver.get(stack.url + "/workers")
        wait.until(lambda d: status_of(".worker-row") == ["alive"])
        wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, '.worker-row button[data-action="pause"]'))).click()
        wait.until(lambda d: status_of(".worker-row") == ["paused"])
        wait.until(EC.text_to_be_present_in_element((By.ID, "message"), "Pause sent to"))
        assert "stop_consuming_jobs by tester" in text_of(".worker-row")
        assert driver.find_element(By.CSS_SELECTOR, '.worker-row button[data-action="pause"]').get_attribute("disabled")
        driver.save_screenshot(str(ARTIFACTS / "web_workers_paused.png"))
        wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, '.worker-row button[data-action="resume"]'))).click()
        wait.until(lambda d: status_of(".worker-row") == ["alive"])
        driver.save_screenshot(str(ARTIFACTS / "web_workers.png"))

        driver.get(stack.url + "/stats")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, 'rect.chart-bar[data-job-type="render"]'))
        assert set(driver.execute_script(
            "return [...document.querySelectorAll('rect.chart-bar')].map(e => e.dataset.jobType)")) == {"gate", "render"}
        assert text_of('#workflow-counts .count-card[data-status="completed"]') == "completed1"
        # the label is dark grey text on the card's white, never on a coloured fill
        assert driver.execute_script("const s = getComputedStyle(document.querySelector('#workflow-counts .count-card span'));"
                                     "return [s.color, s.backgroundColor]") == ["rgb(107, 115, 128)", "rgba(0, 0, 0, 0)"]
        # every value label sits beside its bar, never on it (dark text on a coloured bar was unreadable)
        assert driver.execute_script("""return [...document.querySelectorAll('#chart rect.chart-bar')].every(r =>
            { const t = r.nextElementSibling; return t.tagName === 'text' &&
              Number(t.getAttribute('x')) >= Number(r.getAttribute('x')) + Number(r.getAttribute('width')); })""")
        # the timeline chart: this hour's column holds the one workflow, completed; then the five jobs
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, 'rect.timeline-bar[data-status="completed"]'))
        counts = driver.execute_script(
            "return [...document.querySelectorAll('rect.timeline-bar')].map(e => [e.dataset.status, +e.dataset.count])")
        assert counts == [["completed", 1]]
        Select(driver.find_element(By.ID, "timeline-kind")).select_by_value("jobs")
        wait.until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('rect.timeline-bar')].map(e => +e.dataset.count)") == [5])
        assert {"gate", "render"} <= set(driver.execute_script(
            "return [...document.querySelectorAll('.duration-row td:nth-child(2)')].map(e => e.textContent)"))
        driver.save_screenshot(str(ARTIFACTS / "web_stats.png"))
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"
                  and "status of 401" not in entry["message"]]  # the calls before signing in
        assert errors == [], errors
    except Exception:
        driver.save_screenshot(str(ARTIFACTS / "web_failure.png"))
        raise
    finally:
        driver.quit()
