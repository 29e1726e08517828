"""fruits_local on Airflow as deployed, driven only through the REST API v2 (what the UI calls).

Real processes (api-server, scheduler, dag-processor, triggerer, LocalExecutor, PostgreSQL),
real spark-submit runs on the repository's Fruits-360 sample. The tests run in file order on
one stack, as a user would: look, unpause (the schedule runs), trigger, backfill.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from fruits_jobs import contract
from fruits_pipeline.config import SAMPLE_IMAGES
from fruits_pipeline.runs import BATCH_TIME_FORMAT

DAG = "fruits_local"
CLASSES = sorted(p.name for p in (SAMPLE_IMAGES / "Training").iterdir())
FORM = {"batch_id", "image_source", "k", "variance", "full_recompute", "dry_run"}


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


def trigger(deployed, **body) -> dict:
    response = deployed.api("POST", f"/api/v2/dags/{DAG}/dagRuns", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_both_dags_load_with_their_forms_and_no_import_error(deployed):
    listing = deployed.stack.wait_for_dags({"fruits_local", "fruits_emr"})
    assert {dag["dag_id"] for dag in listing["dags"]} == {"fruits_local", "fruits_emr"}
    assert deployed.api("GET", "/api/v2/importErrors").json()["total_entries"] == 0
    assert deployed.api("GET", "/api/v2/plugins/importErrors").json()["total_entries"] == 0
    for dag_id in ("fruits_local", "fruits_emr"):
        details = deployed.api("GET", f"/api/v2/dags/{dag_id}/details").json()
        assert set(details["params"]) == FORM, dag_id
        assert details["is_paused"] is True  # compose: DAGS_ARE_PAUSED_AT_CREATION


@pytest.fixture(scope="module")
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


def test_the_schedule_runs_the_due_batch_once_unpaused(deployed, scheduled):
    run, day, images = scheduled
    assert run["state"] == "success", deployed.explain(DAG, run["dag_run_id"])
    assert run["logical_date"].startswith(day)
    report = featurize_report(deployed, day)
    assert (report[contract.R_INPUT], report[contract.R_FEATURIZED]) == (images, images)


def test_the_scheduled_run_cleared_with_nothing_new_runs_no_spark(deployed, scheduled):
    """A user re-runs the scheduled day (Clear): its photos are all in committed batches and
    the fit covers them, so the run stops after plan_work, commits nothing and succeeds."""
    run, _, images = scheduled
    run_id = run["dag_run_id"]
    before = files(deployed.root / "outputs")
    path = f"/api/v2/dags/{DAG}/dagRuns/{run_id}/clear"
    assert deployed.api("POST", path, json={"dry_run": False}).is_success
    again = deployed.wait(DAG, run_id)
    states = deployed.task_states(DAG, run_id)
    assert again["state"] == "success", deployed.explain(DAG, run_id)
    assert states["plan_work"] == states["has_work"] == "success", states
    assert {states[t] for t in ("featurize", "pca", "validate_outputs")} == {"skipped"}
    reason = deployed.xcom(DAG, run_id, "plan_work")["reason"]
    assert reason.startswith(f"nothing new: the {images} images in the lake"), reason
    assert reason in deployed.task_log(DAG, run_id, "has_work", try_number=2)
    assert files(deployed.root / "outputs") == before  # nothing committed, written or deleted


@pytest.mark.parametrize(
    "conf", [{"k": "x"}, {"k": 0}, {"variance": 2}, {"batch_id": "a/b"}, {"batch_id": "a:b"}]
)
def test_a_bad_form_is_refused_with_400_and_creates_no_run(deployed, conf):
    before = len(deployed.runs(DAG))
    response = deployed.api(
        "POST", f"/api/v2/dags/{DAG}/dagRuns", json={"logical_date": None, "conf": conf}
    )
    assert response.status_code == 400, response.text
    assert len(deployed.runs(DAG)) == before


def files(root: Path) -> dict[str, int]:
    """Every file under ``root`` with its modification time (ns)."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_a_dry_run_checks_and_runs_no_spark(deployed, scheduled):
    before = files(deployed.root)
    run = deployed.wait(
        DAG, trigger(deployed, logical_date=None, conf={"dry_run": True})["dag_run_id"]
    )
    states = deployed.task_states(DAG, run["dag_run_id"])
    assert run["state"] == "success" and states["preflight"] == "success", states
    assert {states[t] for t in ("sync_images", "featurize", "pca", "validate_outputs")} == {
        "skipped"
    }
    assert files(deployed.root) == before  # nothing synced, written or deleted


def test_a_rest_trigger_with_a_null_logical_date_and_a_conf_succeeds(deployed, scheduled, tmp_path):
    folder = tmp_path / "other-folder"
    images = land(folder, CLASSES[2:4], 0, 4)
    started = trigger(deployed, logical_date=None, conf={"image_source": str(folder), "k": 3})
    assert started["logical_date"] is None
    run = deployed.wait(DAG, started["dag_run_id"])
    run_id = run["dag_run_id"]
    assert run["state"] == "success", deployed.explain(DAG, run_id)
    queued = datetime.fromisoformat(run["run_after"])
    batch = queued.strftime(BATCH_TIME_FORMAT)  # README: "a run with no logical date"
    assert deployed.xcom(DAG, run_id, "preflight", "batch_id") == batch
    assert featurize_report(deployed, batch)[contract.R_FEATURIZED] == images
    summary = deployed.xcom(DAG, run_id, "validate_outputs")
    assert summary["batch"][contract.R_FEATURIZED] == images
    assert summary["pca"]["k"] == 3 and summary["pca"]["rows"] == summary["feature_rows"]
    for job in ("featurize", "pca"):  # the scheduled run's JVMs dumped their class archives
        log = deployed.task_log(DAG, run_id, job)
        assert "-XX:SharedArchiveFile=" in log, job
        assert "Unable to use shared archive" not in log, job  # the JVM took it
        # The jobs' own lines, without Spark's INFO entries or their plans' continuation lines.
        spark_info = re.search(r"^\d\d/\d\d/\d\d \S+ INFO |^\+- ", log, re.M)
        assert "INFO fruits_jobs." in log and not spark_info, spark_info


def test_a_failed_run_names_the_task_and_its_first_error(deployed, scheduled, tmp_path):
    missing = tmp_path / "no-such-folder"
    run = deployed.wait(
        DAG, trigger(deployed, logical_date=None, conf={"image_source": str(missing)})["dag_run_id"]
    )
    states = deployed.task_states(DAG, run["dag_run_id"])
    assert run["state"] == "failed" and states["preflight"] == "failed", states
    assert states["featurize"] != "success", states
    log = deployed.task_log(DAG, run["dag_run_id"], "preflight")
    assert f"preflight failed: image source is not a folder: {missing}" in log


def test_a_backfill_over_two_days_featurizes_each_days_new_images(deployed, scheduled):
    days = ["2026-10-01", "2026-10-02"]
    first = land(deployed.landing / days[0], CLASSES[4:6], 0, 3)
    second = land(deployed.landing / days[1], CLASSES[4:6], 3, 2)
    broken = deployed.landing / days[0] / CLASSES[4] / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 cut short")
    response = deployed.api(
        "POST",
        "/api/v2/backfills",
        json={
            "dag_id": DAG,
            "from_date": f"{days[0]}T00:00:00Z",
            "to_date": f"{days[1]}T00:00:00Z",
            "max_active_runs": 1,
        },
    )
    assert response.status_code == 200, response.text
    backfill = response.json()["id"]
    runs = []
    for _ in range(60):
        runs = [r for r in deployed.runs(DAG) if r["run_type"] == "backfill"]
        if len(runs) == 2:
            break
        time.sleep(2)
    assert len(runs) == 2, runs
    ended = sorted(
        (deployed.wait(DAG, r["dag_run_id"]) for r in runs), key=lambda r: r["logical_date"]
    )
    assert [r["state"] for r in ended] == ["success", "success"], [
        deployed.explain(DAG, r["dag_run_id"]) for r in ended
    ]
    assert [r["logical_date"][:10] for r in ended] == days
    day1, day2 = (featurize_report(deployed, day) for day in days)
    assert (day1[contract.R_FEATURIZED], day1[contract.R_QUARANTINED]) == (first, 1)
    assert day2[contract.R_FEATURIZED] == second  # only the second day's new images
    assert day2[contract.R_SKIPPED] == day2[contract.R_DISCOVERED] - second
    pca = deployed.xcom(DAG, ended[1]["dag_run_id"], "validate_outputs")
    assert pca["pca"]["rows"] == pca["feature_rows"] >= first + second  # PCA over all batches
    csv_folder = deployed.root / "outputs" / contract.fit_key(contract.PCA_CSV, pca["pca"]["fit"])
    (csv_file,) = csv_folder.glob("*.csv")
    assert len(csv_file.read_text().splitlines()) == 1 + pca["pca"]["rows"]
    for _ in range(30):  # the scheduler closes the backfill once its runs have ended
        if deployed.api("GET", f"/api/v2/backfills/{backfill}").json()["completed_at"]:
            break
        time.sleep(2)
    else:
        raise AssertionError(f"backfill {backfill} not completed after its runs ended")


def report_page(dag_id: str, run_id: str) -> str:
    """The path of a run's batch report (the plugin's app, mounted by the api-server)."""
    return f"/fruits/report/{dag_id}/{quote(run_id, safe='')}"


def test_every_run_has_its_batch_report_tab(deployed, scheduled):
    """The runs the tests above made, each on its "Batch report" tab, as a user opens it."""
    (plugin,) = [
        p
        for p in deployed.api("GET", "/api/v2/plugins").json()["plugins"]
        if p["name"] == "fruits_batch_report"
    ]
    (view,) = plugin["external_views"]
    assert (view["name"], view["destination"]) == ("Batch report", "dag_run")
    assert view["href"] == "fruits/report/{DAG_ID}/{RUN_ID}"
    runs = deployed.runs(DAG)
    day1 = next(
        r for r in runs if r["run_type"] == "backfill" and r["logical_date"][:10] == "2026-10-01"
    )
    page = deployed.api("GET", report_page(DAG, day1["dag_run_id"]))
    assert page.status_code == 200, page.text
    featurize = featurize_report(deployed, "2026-10-01")
    for label, key in (
        ("photos in", contract.R_INPUT),
        ("featurized", contract.R_FEATURIZED),
        ("quarantined", contract.R_QUARANTINED),
        ("already featurized", contract.R_SKIPPED),
    ):
        assert f"<tr><th>{label}</th><td>{featurize[key]}</td></tr>" in page.text, label
    (broken,) = featurize[contract.R_QUARANTINE_SAMPLE]
    assert broken[contract.PATH].endswith("/broken.jpg"), broken
    shown = f"{html.escape(broken[contract.PATH])}</code>: {html.escape(broken[contract.REASON])}"
    assert shown in page.text
    assert page.text.count("data:image/png;base64,") == 2
    task = f"/api/v2/dags/{DAG}/dagRuns/{day1['dag_run_id']}/taskInstances/validate_outputs"
    links = deployed.api("GET", f"{task}/links").json()
    assert links == {"Outputs": f"file://{deployed.root / 'outputs'}/"}, links
    # The scheduled day re-run with nothing new: the decision, as plan_work logged it.
    run_id = scheduled[0]["dag_run_id"]
    work = deployed.xcom(DAG, run_id, "plan_work")
    page = deployed.api("GET", report_page(DAG, run_id)).text
    assert not work["anything"] and "<h2>Nothing new</h2>" in page
    assert html.escape(work["reason"]) in page
    # A run that failed in its preflight: what it did, not an error page.
    failed = next(r for r in runs if r["state"] == "failed")
    page = deployed.api("GET", report_page(DAG, failed["dag_run_id"]))
    assert page.status_code == 200 and "No batch" in page.text
    assert "<tr><th>preflight</th><td>failed</td></tr>" in page.text
    # Anonymous: 401. Ids that name no run, or try to name a path: 404, nothing read.
    anonymous = httpx.get(deployed.stack.url + report_page(DAG, day1["dag_run_id"]), timeout=30)
    assert anonymous.status_code == 401, anonymous.text
    for path in (
        report_page(DAG, ".."),
        report_page(DAG, "%2e%2e"),
        f"/fruits/report/{DAG}/%2e%2e%2f%2e%2e",
        report_page("example_dag", day1["dag_run_id"]),
    ):
        assert deployed.api("GET", path).status_code == 404, path
