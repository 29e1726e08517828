"""fruits_local on Airflow as deployed, driven only through the REST API v2 (what the UI calls).

Real processes (api-server, scheduler, dag-processor, triggerer, LocalExecutor, PostgreSQL),
real spark-submit runs on the repository's Fruits-360 sample. The tests run in file order on
one stack, as a user would: look, unpause (the schedule runs), trigger, backfill.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest

from fruits_jobs import contract
from fruits_pipeline.runs import BATCH_TIME_FORMAT
from tests.running_airflow.conftest import CLASSES, DAG, featurize_report, land

FORM = {"batch_id", "image_source", "k", "variance", "full_recompute", "dry_run"}


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
    # The scheduled day's landing folder by name: the default, landing/{ds}, is the run's own
    # day, which has no folder when the suite runs across midnight (UTC).
    landing = str(deployed.landing / scheduled[1])
    conf = {"dry_run": True, "image_source": landing}
    run = deployed.wait(DAG, trigger(deployed, logical_date=None, conf=conf)["dag_run_id"])
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
