"""One Airflow as deployed for the tests of this folder: PostgreSQL + api-server, scheduler,
dag-processor, triggerer (LocalExecutor), configured by docker-compose.yaml; driven over REST.

The same stack serves both DAGs: ``fruits_local`` on a folder lake, ``fruits_emr`` on the
session's local EMR stand-in (its connection and bucket are in the stack's environment).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Frame, Page, expect, sync_playwright

from fruits_jobs import contract
from fruits_pipeline.config import SAMPLE_IMAGES
from local_emr.server import connection_uri
from scripts.airflow_stack import AirflowStack, free_port
from tests.conftest import REGION, ROOT

FINISHED = {"success", "failed"}
EMR_BUCKET = "fruits-deployed-lake"
"""The bucket of ``fruits_emr`` runs on the deployed stack (``test_rest_emr_faults.BUCKET``)."""
DAG = "fruits_local"
CLASSES = sorted(p.name for p in (SAMPLE_IMAGES / "Training").iterdir())
CHROMIUM = "/usr/bin/chromium"
"""Debian's Chromium: Playwright cannot download its own browser here."""
SCREENSHOTS = ROOT / "out" / "test-screenshots"
"""Where a failing step's screenshot goes (``out/`` is git-ignored)."""
UI_S = 30_000
"""Milliseconds the UI gets to show a page or a change."""


class Deployed:
    """The running stack plus what the tests need to drive it like a user."""

    def __init__(self, stack: AirflowStack, root: Path) -> None:
        self.stack = stack
        self.root = root  # FRUITS_LOCAL_ROOT of every run: lake/ and outputs/
        self.landing = root.parent / "landing"  # the default image source is landing/{ds}

    def api(self, method: str, path: str, **kwargs: Any):
        return self.stack.api(method, path, **kwargs)

    def runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100}).json()[
            "dag_runs"
        ]

    def wait(self, dag_id: str, run_id: str, timeout: float = 600) -> dict:
        """Poll the run until it ends; a failed one reports each failed task's log tail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json()
            if run["state"] in FINISHED:
                return run
            time.sleep(2)
        raise AssertionError(f"{run_id} still {run['state']} after {timeout:.0f} s")

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        return {ti["task_id"]: ti["state"] for ti in self.api("GET", path).json()["task_instances"]}

    def explain(self, dag_id: str, run_id: str) -> str:
        """Task states, and the log tail of each failed task: the assertion message."""
        states = self.task_states(dag_id, run_id)
        failed = [t for t, state in states.items() if state == "failed"]
        tails = [
            f"--- {task}:\n" + "\n".join(self.task_log(dag_id, run_id, task).splitlines()[-15:])
            for task in failed
        ]
        return "\n".join([str(states), *tails])

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        content = self.api("GET", path, params={"full_content": True}).json()["content"]
        lines = []
        for line in content:
            lines.append(str(line.get("event", "")) if isinstance(line, dict) else str(line))
            for error in line.get("error_detail") or [] if isinstance(line, dict) else []:
                lines.append(f"{error.get('exc_type')}: {error.get('exc_value')}")
        return "\n".join(lines)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.api("GET", path, params={"deserialize": True}).json()["value"]


@pytest.fixture(scope="package")
def deployed(weights_file: Path, stand_in: Any, node_env_archive: Path) -> Iterator[Deployed]:
    """Started once for this folder's tests; every process and PostgreSQL stop after them.

    The node environment is built before (``fruits_emr``'s first ``upload_code`` sends it)."""
    # Not under pytest's tmp folder: it is private to root, and PostgreSQL runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="fruits-deployed-"))
    base.chmod(0o755)
    root = base / "local"
    env = {
        "FRUITS_LOCAL_ROOT": str(root),
        "FRUITS_WEIGHTS": str(weights_file),
        "FRUITS_IMAGE_SOURCE": str(base / "landing" / "{ds}"),
        "AIRFLOW_CONN_AWS_DEFAULT": connection_uri(stand_in.endpoint, REGION),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "FRUITS_BUCKET": EMR_BUCKET,
        "FRUITS_STEP_POKE_INTERVAL_S": "3",
    }
    started = time.monotonic()
    try:
        with AirflowStack(base / "airflow_home", port=free_port(), extra_env=env) as stack:
            print(f"deployed Airflow healthy in {time.monotonic() - started:.1f} s")
            yield Deployed(stack, root)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def land(folder: Path, classes: list[str], first: int, count: int) -> int:
    """Copy images ``first..first+count`` of each class into ``folder/<Class>/``."""
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for image in sorted((SAMPLE_IMAGES / "Training" / name).glob("*.jpg"))[
            first : first + count
        ]:
            shutil.copy2(image, folder / name / image.name)
    return len(classes) * count


def featurize_report(deployed, batch: str) -> dict:
    return json.loads(
        (deployed.root / "outputs" / contract.featurize_report_key(batch)).read_text()
    )


@pytest.fixture(scope="package")
def scheduled(deployed) -> tuple[dict, str, int]:
    """Unpause the DAG, as a user does in the UI: the scheduler itself runs the batch due now.

    Every test that triggers a run needs the DAG unpaused (runs of a paused DAG stay queued).
    """
    # Airflow 3's @daily is a cron trigger: the run due now is today 00:00's, named by it.
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    images = land(deployed.landing / day, CLASSES[:2], 0, 3)
    response = deployed.api("PATCH", f"/api/v2/dags/{DAG}", json={"is_paused": False})
    assert response.status_code == 200, response.text
    for _ in range(90):
        runs = [r for r in deployed.runs(DAG) if r["run_type"] == "scheduled"]
        if runs:
            return deployed.wait(DAG, runs[0]["dag_run_id"]), day, images
        time.sleep(2)
    raise AssertionError("the scheduler created no run after the DAG was unpaused")


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One Chromium for the tests of this folder."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@contextmanager
def signed_in(browser: Browser, stack: AirflowStack) -> Iterator[Page]:
    """A page of a new browser context, logged in to ``stack`` through its login page."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    user, password = stack.login
    try:
        with kept_on_failure(page, "login"):
            page.goto(f"{stack.url}/auth/login")
            page.get_by_role("textbox", name=re.compile("username", re.I)).fill(user)
            page.get_by_label(re.compile("password", re.I)).fill(password)
            page.get_by_role("button", name=re.compile("sign in|log in|submit", re.I)).click()
            page.wait_for_url(lambda url: "/login" not in url, timeout=UI_S)
        yield page
    finally:
        context.close()


@contextmanager
def kept_on_failure(page: Page, step: str) -> Iterator[None]:
    """On any failure inside, save a screenshot and name it in the failure message."""
    try:
        yield
    except Exception as err:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOTS / f"{step}-{time.strftime('%Y%m%dT%H%M%S')}.png"
        page.screenshot(path=str(shot), full_page=True)
        raise AssertionError(f"{step}: {err}\nscreenshot: {shot}") from err


def report_frame(page: Page, url: str, dag_id: str, run_id: str) -> Frame:
    """The run's page, then its "Batch report" tab: the frame that holds the report."""
    page.goto(f"{url}/dags/{dag_id}/runs/{run_id}")
    page.get_by_role("tab", name="Batch report").or_(page.get_by_text("Batch report")).first.click()
    frame = page.frame_locator("iframe").first
    expect(frame.locator("h1")).to_contain_text(run_id, timeout=UI_S)
    return next(f for f in page.frames if "/fruits/report/" in f.url)


def row(frame: Frame, label: str) -> str:
    """The text of the report's table cell labelled ``label``."""
    return frame.locator(f"tr:has(th:text-is('{label}')) td").inner_text()


def plot_widths(frame: Frame) -> list[int]:
    """The natural width of each image of the report (0: not loaded)."""
    return frame.locator("img").evaluate_all("images => images.map(i => i.naturalWidth)")
