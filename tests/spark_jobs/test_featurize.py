"""Job 1 on real photos and on every kind of bad input, in one local SparkSession."""

from __future__ import annotations

import json
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from fruits_jobs import contract
from fruits_jobs.featurize import main, prepare_workers
from fruits_jobs.model import ModelSpec
from tests.conftest import FRUITS360, GROCERY, copy_images, labels, sample_images


def featurize(images: Path, output: Path, weights: Path, batch: str, *extra: str) -> int:
    return main(
        [
            "--images",
            str(images),
            "--output",
            str(output),
            "--weights",
            str(weights),
            "--batch-id",
            batch,
            "--batch-size",
            "8",
            *extra,
        ]
    )


def read_report(output: Path, batch: str) -> dict:
    return json.loads(Path(contract.featurize_report_uri(str(output), batch)).read_text())


@pytest.fixture(scope="module")
def tricky_run(spark, tricky_tree, weights_file, tmp_path_factory):
    output = tmp_path_factory.mktemp("out")
    assert featurize(tricky_tree["root"], output, weights_file, "b1") == 0
    return output


def test_every_input_is_accounted_for(spark, tricky_run, tricky_tree):
    report = read_report(tricky_run, "b1")
    n_good, n_bad = len(tricky_tree["good"]), len(tricky_tree["bad"])
    assert report["discovered"] == report["input"] == n_good + n_bad
    assert (report["featurized"], report["quarantined"]) == (n_good, n_bad)
    assert contract.check_counts(report) == []
    assert report["model"]["weights_sha256"] and report["images_per_s"] > 0
    assert report[contract.R_IMAGES] == str(tricky_tree["root"])
    assert not report[contract.R_SKIP_EXISTING] and not report[contract.R_FULL_RECOMPUTE]
    timings = report[contract.R_TIMINGS]
    assert set(timings) == {"weights", "listing", "featurize", "total"}
    laps = timings["listing"] + timings["weights"] + timings["featurize"]
    assert abs(timings["total"] - laps) <= 0.003


def test_quarantine_gives_each_bad_file_its_reason(spark, tricky_run, tricky_tree):
    rows = (
        spark.read.schema(contract.QUARANTINE_SCHEMA)
        .parquet(str(tricky_run / contract.QUARANTINE))
        .collect()
    )
    reasons = {Path(r.path).name: r.reason for r in rows}
    assert set(reasons) == set(tricky_tree["bad"])
    for name, prefix in tricky_tree["bad"].items():
        assert reasons[name].startswith(prefix + ": "), (name, reasons[name])
    assert {r.batch for r in rows} == {"b1"}
    # The report names them too, by path, for the UI's batch report (at most 100).
    sample = read_report(tricky_run, "b1")[contract.R_QUARANTINE_SAMPLE]
    expected = sorted((r.path, r.reason) for r in rows)[: contract.QUARANTINE_SAMPLE]
    assert [(x[contract.PATH], x[contract.REASON]) for x in sample] == expected


def test_features_have_labels_from_parent_folder_and_1280_dims(spark, tricky_run, tricky_tree):
    rows = (
        spark.read.schema(contract.FEATURES_SCHEMA)
        .parquet(str(tricky_run / contract.FEATURES))
        .collect()
    )
    assert {Path(r.path).name: r.label for r in rows} == tricky_tree["good"]
    assert "Training" not in {r.label for r in rows}
    for r in rows:
        assert len(r.features) == contract.FEATURE_DIM
        assert np.isfinite(r.features).all()


def test_spark_features_equal_single_process_keras(spark, tricky_run, tricky_tree, weights_file):
    """Same images, plain Keras in this process: proves the broadcast weights are the file's."""
    import keras
    from keras.applications.mobilenet_v2 import preprocess_input

    features = spark.read.schema(contract.FEATURES_SCHEMA).parquet(
        str(tricky_run / contract.FEATURES)
    )
    rows = [r for r in features.collect() if Path(r.path).name in tricky_tree["photos"]]
    assert len(rows) == 4
    model = keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), include_top=False, weights=str(weights_file), pooling="avg"
    )
    batch = np.stack(
        [
            keras.utils.img_to_array(
                keras.utils.load_img(
                    r.path.removeprefix("file:"), target_size=(224, 224), interpolation="bilinear"
                )
            )
            for r in rows
        ]
    )
    expected = model.predict(preprocess_input(batch), verbose=0)
    got = np.array([r.features for r in rows], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert np.abs(expected).max() > 0.1  # a real signal, not zeros on both sides


def test_rerun_replaces_the_batch_and_is_deterministic(spark, tricky_tree, weights_file, tmp_path):
    assert featurize(tricky_tree["root"], tmp_path, weights_file, "b1") == 0
    first = spark.read.parquet(str(tmp_path / contract.FEATURES)).toPandas()
    assert featurize(tricky_tree["root"], tmp_path, weights_file, "b1") == 0
    second = spark.read.parquet(str(tmp_path / contract.FEATURES)).toPandas()
    quarantine = spark.read.parquet(str(tmp_path / contract.QUARANTINE)).count()
    assert len(second) == len(first) == second.path.nunique()
    assert quarantine == len(tricky_tree["bad"])
    first, second = (f.sort_values("path").reset_index(drop=True) for f in (first, second))
    np.testing.assert_array_equal(np.stack(first.features), np.stack(second.features))


def prepared(spark) -> int:
    """How many jobs of the session prepared Python workers (imported TensorFlow in them)."""
    from fruits_jobs.featurize import PREPARE_GROUP

    return len(spark.sparkContext.statusTracker().getJobIdsForGroup(PREPARE_GROUP))


def test_skip_existing_featurizes_only_new_images(spark, weights_file, tmp_path):
    planned = ("--skip-existing", "--expect-new")  # as the DAG runs it: its plan saw new photos
    images = tmp_path / "lake"
    first, second, third = labels(GROCERY, 3)
    copy_images(sample_images(GROCERY, 2, [first, second]), images)
    (images / first / "zero.jpg").write_bytes(b"")  # the scan skips it; the job must not
    assert featurize(images, tmp_path / "out", weights_file, "day1", "--skip-existing") == 0
    day1 = read_report(tmp_path / "out", "day1")
    assert (day1["discovered"], day1["featurized"], day1["quarantined"]) == (5, 4, 1)
    assert day1[contract.R_SKIP_EXISTING] and not day1[contract.R_FULL_RECOMPUTE]
    before_day2 = prepared(spark)
    assert featurize(images, tmp_path / "out", weights_file, "day2", "--skip-existing") == 0
    day2 = read_report(tmp_path / "out", "day2")
    assert (day2["discovered"], day2["skipped_existing"], day2["input"]) == (5, 5, 0)
    # Nothing new: committed at once, no worker prepared (no TensorFlow started for it).
    assert prepared(spark) == before_day2
    assert day2[contract.R_RELIES_ON] == ["day1"] and contract.R_LAKE not in day2
    # The DAG's plan saw new photos, the job's listing none (the lake changed back): the
    # preparation started with the session is stopped, and the batch committed empty.
    assert featurize(images, tmp_path / "out", weights_file, "day2b", *planned) == 0
    assert read_report(tmp_path / "out", "day2b")["input"] == 0
    assert prepared(spark) == before_day2 + 1
    copy_images(sample_images(GROCERY, 1, [third]), images)
    assert featurize(images, tmp_path / "out", weights_file, "day3", *planned) == 0
    day3 = read_report(tmp_path / "out", "day3")
    assert (day3["discovered"], day3["skipped_existing"], day3["featurized"]) == (6, 5, 1)
    assert day3[contract.R_RELIES_ON] == ["day1", "day2", "day2b"]
    assert prepared(spark) == before_day2 + 2
    features = spark.read.schema(contract.FEATURES_SCHEMA).parquet(str(tmp_path / "out/features"))
    assert features.count() == features.select("path").distinct().count() == 5
    assert featurize(images, tmp_path / "out", weights_file, "day4", "--full-recompute") == 0
    features = spark.read.schema(contract.FEATURES_SCHEMA).parquet(str(tmp_path / "out/features"))
    assert [r.batch for r in features.select("batch").distinct().collect()] == ["day4"]
    day4 = read_report(tmp_path / "out", "day4")
    assert features.count() == day4["featurized"] == 5 and day4[contract.R_FULL_RECOMPUTE]
    reports = sorted(p.name for p in (tmp_path / "out" / contract.REPORTS).iterdir())
    assert reports == ["featurize-day4.json"]  # earlier batches uncommitted, no temporary file


def test_a_running_batch_logs_its_progress(spark, weights_file, tmp_path, monkeypatch, caplog):
    """Every PROGRESS_S seconds: images done out of the new ones, rate, ETA (10 s; 0.2 here)."""
    from fruits_jobs import featurize as job

    monkeypatch.setattr(job.Progress.__init__, "__defaults__", (0.2,))
    images = tmp_path / "lake"
    copy_images(sample_images(GROCERY, 6, labels(GROCERY, 2)), images)
    with caplog.at_level("INFO", logger="fruits_jobs.featurize"):
        assert featurize(images, tmp_path / "out", weights_file, "b", "--skip-existing") == 0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("featurize: ")]
    assert lines, "no progress line"
    done = [
        int(re.match(r"featurize: about (\d+)/12 images \(\d+%\), [\d.]+ images/s, ETA ", line)[1])
        for line in lines
    ]
    assert done == sorted(done) and done[-1] <= 12
    assert "12 of the 12 images listed are new" in caplog.text


def test_fruits360_attribution_travels_with_the_features(spark, weights_file, tmp_path):
    images = tmp_path / "fruits360"
    copy_images(sample_images(FRUITS360 / "Training", 1, ["Cherry 1", "Tomato 2"]), images)
    shutil.copy(FRUITS360 / "ATTRIBUTION.md", images)
    shutil.copy(FRUITS360 / "LICENSE", images)
    assert featurize(images, tmp_path / "out", weights_file, "f360") == 0
    report = read_report(tmp_path / "out", "f360")
    assert sorted(report["attribution"]) == [
        "_reports/attribution/f360/ATTRIBUTION.md",
        "_reports/attribution/f360/LICENSE",
    ]
    copied = (tmp_path / "out" / report["attribution"][0]).read_text()
    assert copied == (FRUITS360 / "ATTRIBUTION.md").read_text() and "CC BY-SA 4.0" in copied


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "images path does not exist: "),
        ("no_images", "no images found under "),
        ("bad_weights", "is not MobileNetV2 weights"),
        ("missing_weights", "weights file not found: "),
        ("truncated_weights", "is not MobileNetV2 weights (alpha=1.0, no top): Unable to "),
    ],
)
def test_bad_arguments_exit_2_with_one_line(spark, weights_file, tmp_path, capsys, case, message):
    images, weights = tmp_path / "images", weights_file
    if case == "no_images":
        (images / "Kiwi").mkdir(parents=True)
        (images / "Kiwi" / "notes.txt").write_text("no image here")
    elif case != "missing":
        copy_images(sample_images(GROCERY, 1)[:1], images)
    if case == "bad_weights":
        weights = tmp_path / "wrong.h5"
        shutil.copy(sample_images(GROCERY, 1)[0], weights)
    if case == "missing_weights":
        weights = tmp_path / "absent.h5"
    if case == "truncated_weights":
        weights = tmp_path / "truncated.h5"
        weights.write_bytes(weights_file.read_bytes()[:100_000])
    assert featurize(images, tmp_path / "out", weights, "b1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("featurize: error: ") and message in err[0], err


def test_model_is_built_once_per_process_across_batches(weights_file):
    import pandas as pd

    from fruits_jobs import model
    from fruits_jobs.featurize import featurize_batches

    arrays = model.read_weights(weights_file, 1.0, 96)
    spec = model.ModelSpec(1.0, 96, "test-once")
    images = sample_images(GROCERY, 1)[:6]
    batches = [pd.Series([p.read_bytes() for p in images[i : i + 2]]) for i in range(0, 6, 2)]
    before = model.model_builds()
    out = list(featurize_batches(iter(batches), spec, arrays))
    assert model.model_builds() == before + 1
    assert [len(o) for o in out] == [2, 2, 2]
    assert all(f.shape == (1280,) for o in out for f in o.features)


def test_preparing_workers_logs_a_failed_spark_job_but_raises_a_bug(spark, monkeypatch, caplog):
    """A failed task is left to the featurize job; a bug on the driver ends the thread loudly."""
    raised = []
    monkeypatch.setattr(threading, "excepthook", raised.append)
    prepare_workers(spark, ModelSpec(1.0, 8, "too-small")).join()  # MobileNetV2 refuses 8x8 images
    assert "preparing the Python workers failed: " in caplog.text and raised == []

    def bug(*args, **kwargs):
        raise TypeError("a bug in our code")

    monkeypatch.setattr(spark, "range", bug)
    prepare_workers(spark, ModelSpec(1.0, 96, "bug")).join()
    assert [(type(r.exc_value), str(r.exc_value)) for r in raised] == [
        (TypeError, "a bug in our code")
    ]
