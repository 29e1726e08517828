"""``fruits_emr`` run by Airflow (``dag.test``) against the local EMR stand-in, steps for real.

Each step's spark-submit runs on ``local-cluster`` (separate executor JVMs) from the code,
package zip and weights the DAG uploaded, over the images it synced; moto stands in for the
AWS API only. Runs share one stand-in and bucket, in the order a user would meet them.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fruits_jobs import contract, featurize, pca
from fruits_pipeline.steps import featurize_args, pca_args
from fruits_pipeline.stores import open_store
from fruits_pipeline.validation import validate
from tests.local_emr.conftest import add_images, ended, wait_for

pytestmark = pytest.mark.timeout(1200)

BUCKET = "fruits-emr-dag-lake"
OUTPUT = f"s3://{BUCKET}/outputs"
CDS_REFUSED = b"Unable to use shared archive"
"""The JVM's warning for a class archive that does not match its class path."""


def steps(emr: Any, cluster_id: str) -> dict[str, dict]:
    """The cluster's steps by name."""
    return {s["Name"]: s for s in emr.list_steps(ClusterId=cluster_id)["Steps"]}


def read(s3: Any, uri: str) -> bytes:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def matrix(text: str) -> tuple[list[str], dict[tuple[str, str], np.ndarray]]:
    """A PCA CSV as its header and scores keyed by (label, file name)."""
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    scores = {(r[1], r[0].rsplit("/", 1)[-1]): np.array(r[2:], dtype=float) for r in body}
    return header, scores


def csv_keys(keys: list[str], report: dict) -> list[str]:
    """The current fit's CSV part files among ``keys`` (all of them when fits are not named)."""
    fit = report.get("fit")
    return [k for k in keys if k.endswith(".csv") and (not fit or f"/{fit}/" in k)]


def s3_csv(s3: Any) -> str:
    """The current PCA CSV in the bucket."""
    report = json.loads(read(s3, f"{OUTPUT}/{contract.PCA_REPORT_KEY}"))
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"outputs/{contract.PCA_CSV}/")
    (key,) = csv_keys([o["Key"] for o in listed.get("Contents", [])], report)
    return read(s3, f"s3://{BUCKET}/{key}").decode()


def s3_matrix(s3: Any) -> tuple[list[str], dict]:
    return matrix(s3_csv(s3))


def csv_paths(s3: Any) -> list[str]:
    """The image paths the bucket's PCA CSV names (as the jobs wrote them)."""
    return [row[0] for row in list(csv.reader(io.StringIO(s3_csv(s3))))[1:]]


def local_matrix(output: Path) -> tuple[list[str], dict]:
    report = json.loads((output / contract.PCA_REPORT_KEY).read_text())
    keys = [str(p) for p in (output / contract.PCA_CSV).rglob("*.csv")]
    (path,) = csv_keys(keys, report)
    return matrix(Path(path).read_text())


def assert_equal_up_to_sign(ours: dict, theirs: dict) -> None:
    assert ours.keys() == theirs.keys()
    a = np.stack([ours[k] for k in sorted(ours)])
    b = np.stack([theirs[k] for k in sorted(ours)])
    signs = np.sign(np.sum(a * b, axis=0))  # each component may come out flipped
    np.testing.assert_allclose(a, b * signs, rtol=1e-3, atol=1e-3)


@pytest.fixture(scope="module")
def first_batch(dags, stand_in, lake) -> tuple[Any, dict[str, str], dict]:
    """The first batch's run (16 images): the run, its task states, its ended cluster."""
    run, states = dags.run("fruits_emr", 20)
    return run, states, ended(stand_in.client("emr"), "2026-11-20")


def test_first_batch_runs_for_real_and_matches_the_local_jobs(
    first_batch, stand_in, lake, images, weights, spark, tmp_path
):
    run, states, cluster = first_batch
    assert run.state == "success", states
    assert cluster["Status"]["State"] == "TERMINATED"
    assert cluster["Status"]["StateChangeReason"]["Code"] == "USER_REQUEST"
    done = steps(stand_in.client("emr"), cluster["Id"])
    assert {s["Status"]["State"] for s in done.values()} == {"COMPLETED"}
    findings = validate(open_store(OUTPUT, lake), "2026-11-20")
    assert findings.ok, findings
    for step in done.values():  # EMR's log layout, gzipped
        folder = f"{cluster['LogUri']}{cluster['Id']}/steps/{step['Id']}/"
        stderr = gzip.decompress(read(lake, folder + "stderr.gz"))
        assert b"spark" in stderr.lower()
        assert CDS_REFUSED not in stderr  # the driver mapped its class archive, or dumped it
        stdout = gzip.decompress(read(lake, folder + "stdout.gz")).decode()
        assert " INFO fruits_jobs." in stdout  # the job's own lines; no other INFO entry
        assert not [
            line for line in stdout.splitlines() if " INFO " in line and "fruits_jobs." not in line
        ]
    log_bucket, _, log_prefix = cluster["LogUri"].removeprefix("s3://").partition("/")
    containers = f"{log_prefix}{cluster['Id']}/containers/"
    listed = lake.list_objects_v2(Bucket=log_bucket, Prefix=containers)["Contents"]
    executor_logs = {
        tuple(o["Key"].removeprefix(containers).split("/")[:2]): gzip.decompress(
            read(lake, f"s3://{log_bucket}/{o['Key']}")
        )
        for o in listed
        if o["Key"].endswith("/stderr.gz")
    }
    assert not [name for name, text in executor_logs.items() if CDS_REFUSED in text]
    # (application, executor) of each executor log that shows a task run
    ran = {name for name, text in executor_logs.items() if b"Finished task" in text}
    assert len({app for app, _ in ran}) == len(done), ran  # one application a step
    assert len(ran) >= len(done) + 1, ran  # and more than one executor at work

    header, scores = s3_matrix(lake)
    assert len(scores) == 16
    # The same jobs with the same arguments on this machine's Spark (the session's), as
    # fruits_local runs them: the same matrix.
    output = str(tmp_path / "outputs")
    assert featurize.main(featurize_args(str(images), output, str(weights), "2026-11-20")) == 0
    assert pca.main(pca_args(output, variance=0.9)) == 0
    local_header, local_scores = local_matrix(tmp_path / "outputs")
    assert header == local_header  # same k
    assert_equal_up_to_sign(scores, local_scores)


def outputs(s3: Any) -> dict[str, str]:
    """Every object under the bucket's output root, with its ETag."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="outputs/")
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


def test_the_same_photos_again_start_no_cluster_and_change_nothing(
    first_batch, dags, stand_in, lake
):
    emr = stand_in.client("emr")
    clusters = emr.list_clusters()["Clusters"]
    before = outputs(lake)
    run, states = dags.run("fruits_emr", 21)
    assert run.state == "success", states
    assert states["plan_work"] == states["cost_check"] == states["has_work"] == "success"
    skipped = {task for task, state in states.items() if state == "skipped"}
    assert skipped == {
        "cluster_request",
        "create_cluster",
        "featurize_step_spec",
        "add_featurize_step",
        "featurize",
        "pca_step_spec",
        "add_pca_step",
        "pca",
        "validate_outputs",
        "terminate_cluster",
        "watcher",
    }, states
    assert emr.list_clusters()["Clusters"] == clusters  # no RunJobFlow call
    assert outputs(lake) == before  # no batch committed, nothing written or deleted
    work = run.get_task_instance("plan_work").xcom_pull(task_ids="plan_work")
    assert work["reason"].startswith("nothing new: the 16 images in the lake"), work
    assert run.get_task_instance("cost_check").xcom_pull(task_ids="cost_check")["eur"] == 0


def test_corrupt_weights_fail_featurize_with_its_error_in_the_step_logs(
    first_batch, dags, stand_in, lake, images, capfd
):
    emr = stand_in.client("emr")
    add_images(images, per_label=1, skip=8)  # new photos: the run has work to do
    uploaded = [
        o["Key"]
        for o in lake.list_objects_v2(Bucket=BUCKET, Prefix="code/")["Contents"]
        if "/weights/" in o["Key"]
    ]
    assert uploaded, "the first run uploads the weights"
    originals = {key: read(lake, f"s3://{BUCKET}/{key}") for key in uploaded}
    try:
        for key in uploaded:  # upload_code sees the object there and does not replace it
            lake.put_object(Bucket=BUCKET, Key=key, Body=b"\x89HDF\r\n not weights any more")
        run, states = dags.run("fruits_emr", 22)
    finally:
        for key, body in originals.items():
            lake.put_object(Bucket=BUCKET, Key=key, Body=body)
    assert run.state == "failed"
    assert states["featurize"] == "failed" and states["terminate_cluster"] == "success"
    assert states["watcher"] == "failed"
    cluster = ended(emr, "2026-11-22")
    assert cluster["Status"]["State"] == "TERMINATED"
    step = steps(emr, cluster["Id"])["fruits-featurize"]
    assert step["Status"]["State"] == "FAILED"
    folder = f"{cluster['LogUri']}{cluster['Id']}/steps/{step['Id']}/"
    assert f"step logs: {folder}" in capfd.readouterr().out
    details = step["Status"]["FailureDetails"]
    assert details["LogFile"] == folder + "stderr.gz"
    assert details["Message"].startswith("featurize: error: ")
    assert "is not MobileNetV2 weights" in details["Message"]
    # The job prints it on the Python driver's stderr (which spark-submit merges into its
    # stdout) and on the driver JVM's stderr, beside Spark's log.
    for log_file in ("stderr.gz", "stdout.gz"):
        assert details["Message"] in gzip.decompress(read(lake, folder + log_file)).decode()
    assert f"outputs/{contract.featurize_report_key('2026-11-22')}" not in outputs(lake)


def test_the_run_after_a_failed_one_featurizes_what_it_left_and_a_lost_output_fails_it(
    first_batch, dags, stand_in, lake, capfd
):
    """No new photo lands after the failed run: the next run still has work, featurizes only
    the photos that run left and refits the PCA over every batch; both steps succeed, but a
    plot of the new fit never reaches S3 (lost on the node), so the validation fails the run."""
    emr = stand_in.client("emr")
    listed = lake.list_objects_v2(Bucket=BUCKET, Prefix="raw/images/")["Contents"]
    added = sum(contract.is_image_key(o["Key"]) for o in listed) - 16  # the first batch's
    assert added > 0
    plots = f"outputs/{contract.PLOTS}/"
    listed = lake.list_objects_v2(Bucket=BUCKET, Prefix=plots).get("Contents", [])
    old_fits = {o["Key"].removeprefix(plots).split("/")[0] for o in listed}
    lost: list[Path] = []

    def lose_the_new_fits_scatter_plot() -> list[Path]:
        staged = f"clusters/*/s3/{BUCKET}/{plots}*/{contract.PCA_PLOTS[1]}"  # see Stage
        try:
            for path in stand_in.workdir.glob(staged):
                pointer = path.parents[2] / Path(contract.PCA_REPORT_KEY).name  # _reports/pca.json
                if path.parent.name not in old_fits and path.parent.name in pointer.read_text():
                    # The fit is committed, so the job writes nothing more; the step has not
                    # ended, so its files have not gone to S3 yet.
                    path.unlink()
                    lost.append(path)
        except FileNotFoundError:  # no pca.json yet, or an ended cluster's folder removed
            pass
        return lost

    saboteur = threading.Thread(
        target=lambda: wait_for(lose_the_new_fits_scatter_plot, timeout=600, every=0.05),
        daemon=True,
    )
    saboteur.start()
    run, states = dags.run("fruits_emr", 25)
    saboteur.join(timeout=5)
    assert lost, "the new fit's plot was never seen in the staged bucket"
    assert run.state == "failed"
    assert states["featurize"] == states["pca"] == "success"
    assert states["validate_outputs"] == "failed" and states["terminate_cluster"] == "success"
    assert states["watcher"] == "failed"
    fit = lost[0].parent.name
    missing = f"s3://{BUCKET}/outputs/{contract.plot_key(fit, contract.PCA_PLOTS[1])} is absent"
    assert missing in capfd.readouterr().out  # the task log names the missing object
    cluster = ended(emr, "2026-11-25")
    assert cluster["Status"]["State"] == "TERMINATED"
    assert {s["Status"]["State"] for s in steps(emr, cluster["Id"]).values()} == {"COMPLETED"}
    # Only the new photos were featurized; the fit covers every batch (16 photos before).
    report = json.loads(read(lake, f"{OUTPUT}/{contract.featurize_report_key('2026-11-25')}"))
    assert (report[contract.R_INPUT], report[contract.R_SKIPPED]) == (added, 16)
    pca = json.loads(read(lake, f"{OUTPUT}/{contract.PCA_REPORT_KEY}"))
    assert pca[contract.R_FIT] == fit and pca[contract.R_ROWS] == 16 + added
    assert len(s3_matrix(lake)[1]) == 16 + added
    assert all(path.startswith(f"s3://{BUCKET}/raw/images/") for path in csv_paths(lake))


def test_a_cluster_that_cannot_bootstrap_ends_with_errors_and_runs_nothing(
    dags, stand_in, lake, images
):
    emr = stand_in.client("emr")
    add_images(images, per_label=1, skip=9)  # new photos: the run has work to do
    deleted: list[str] = []

    def delete_the_script_once_the_cluster_starts() -> None:
        starting = wait_for(
            lambda: emr.list_clusters(ClusterStates=["STARTING"])["Clusters"], every=0.02
        )
        request = stand_in.control.clusters[starting[0]["Id"]].request
        path = request["BootstrapActions"][0]["ScriptBootstrapAction"]["Path"]
        lake.delete_object(Bucket=BUCKET, Key=path.removeprefix(f"s3://{BUCKET}/"))
        deleted.append(path)

    saboteur = threading.Thread(target=delete_the_script_once_the_cluster_starts, daemon=True)
    saboteur.start()
    run, states = dags.run("fruits_emr", 24)
    saboteur.join(timeout=5)
    assert deleted
    assert run.state == "failed" and states["terminate_cluster"] == "success"
    cluster = ended(emr, "2026-11-24")
    assert cluster["Status"]["State"] == "TERMINATED_WITH_ERRORS"
    reason = cluster["Status"]["StateChangeReason"]
    assert reason["Code"] == "BOOTSTRAP_FAILURE" and deleted[0] in reason["Message"]
    assert {s["Status"]["State"] for s in steps(emr, cluster["Id"]).values()} <= {"CANCELLED"}
