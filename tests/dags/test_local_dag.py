"""The local DAG run by Airflow (``dag.test``, SQLite) on real photos: real Spark, real Keras."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from fruits_jobs import contract
from tests.conftest import GROCERY, copy_images, labels, sample_images


def run_local(dag, day: int, **conf):
    run = dag.test(logical_date=datetime(2026, 11, day, tzinfo=timezone.utc), run_conf=conf)
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


def report(root: Path, name: str) -> dict:
    return json.loads((root / "outputs" / contract.REPORTS / name).read_text())


@pytest.fixture
def local_dag(load_dag, tmp_path, weights_file):
    return load_dag("fruits_local", local_root=tmp_path / "local", weights=weights_file)


def test_two_daily_batches_featurize_only_new_images_and_refit_on_all(local_dag, tmp_path):
    source = tmp_path / "landing"
    day1_labels, day2_labels = labels(GROCERY, 5)[:3], labels(GROCERY, 5)[3:]
    copy_images(sample_images(GROCERY, 4, day1_labels), source)
    (source / day1_labels[0] / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")

    run, states = run_local(local_dag, 20, image_source=str(source))
    assert run.state == "success", states
    day1 = report(tmp_path / "local", "featurize-2026-11-20.json")
    assert (day1["input"], day1["featurized"], day1["quarantined"]) == (13, 12, 1)
    assert report(tmp_path / "local", "pca.json")["rows"] == 12

    copy_images(sample_images(GROCERY, 4, day2_labels), source)
    run, states = run_local(local_dag, 21, image_source=str(source), k=5)
    assert run.state == "success", states
    day2 = report(tmp_path / "local", "featurize-2026-11-21.json")
    assert (day2["discovered"], day2["skipped_existing"], day2["featurized"]) == (21, 13, 8)
    pca = report(tmp_path / "local", "pca.json")
    assert (pca["rows"], pca["k"], pca["batches"]) == (20, 5, ["2026-11-20", "2026-11-21"])
    lake = tmp_path / "local" / "lake"
    assert len(list(lake.rglob("*.jpg"))) == 21
    csv_folder = contract.fit_key(contract.PCA_CSV, pca["fit"])
    (csv_file,) = (tmp_path / "local" / "outputs" / csv_folder).glob("*.csv")
    assert len(csv_file.read_text().splitlines()) == 21  # header + 20 images


def test_dry_run_checks_and_stops(local_dag, tmp_path):
    run, states = run_local(local_dag, 22, image_source=str(GROCERY), dry_run=True)
    assert run.state == "success"
    assert states["preflight"] == states["proceed"] == "success"
    assert {states[t] for t in ("sync_images", "featurize", "pca", "validate_outputs")} == {
        "skipped"
    }
    assert not (tmp_path / "local").exists()


def test_missing_source_fails_in_preflight(local_dag, tmp_path):
    run, states = run_local(local_dag, 23, image_source=str(tmp_path / "nowhere"))
    assert run.state == "failed" and states["preflight"] == "failed"
    assert states["featurize"] != "success"


def test_a_failed_job_is_named_by_its_first_error_line(tmp_path):
    from airflow.sdk.exceptions import AirflowException

    from fruits_pipeline.config import SAMPLE_IMAGES, Settings
    from fruits_pipeline.tasks import resolve_run, spark_submit_local

    fake = tmp_path / "weights.h5"
    fake.write_text("not weights")
    settings = Settings(local_root=str(tmp_path / "local"), weights=str(fake))
    (tmp_path / "local" / "lake").mkdir(parents=True)
    run = resolve_run(
        {"image_source": str(SAMPLE_IMAGES), "variance": 0.9}, None, datetime.now(timezone.utc)
    )
    with pytest.raises(AirflowException) as raised:
        spark_submit_local.function("featurize", run, settings)
    message = str(raised.value)
    assert message.startswith("spark-submit featurize exited 2: featurize: error: "), message
    assert str(fake) in message and "\n" not in message
