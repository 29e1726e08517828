"""Job 2 against numpy on the same matrix, its artefacts, and the feature quality it keeps."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from fruits_jobs import contract
from fruits_jobs.pca import main as pca_main
from tests.conftest import FRUITS360, GROCERY, needs_real_weights


def write_features(spark, output: Path, matrix, labels, batch: str, start: int = 0, commit=True):
    """A feature batch as featurize writes it: the data, then (``commit``) its report."""
    rows = [
        (f"file:/lake/{label}/{i}.jpg", label, 1, None, [float(v) for v in vec])
        for i, (label, vec) in enumerate(zip(labels, matrix, strict=True), start=start)
    ]
    schema = contract.FEATURES_SCHEMA.replace(f", {contract.BATCH} string", "")
    spark.createDataFrame(rows, schema).write.mode("overwrite").parquet(
        contract.batch_uri(str(output), contract.FEATURES, batch)
    )
    if commit:
        report = {"input": len(rows), "featurized": len(rows), "quarantined": 0}
        (output / contract.REPORTS).mkdir(exist_ok=True)
        Path(contract.featurize_report_uri(str(output), batch)).write_text(json.dumps(report))


def current(output: Path, dataset: str) -> Path:
    """The folder of ``dataset`` of the current fit, as ``_reports/pca.json`` names it."""
    fit = json.loads((output / contract.PCA_REPORT_KEY).read_text())["fit"]
    return output / contract.fit_key(dataset, fit)


def run_pca(output: Path, *size: str) -> int:
    return pca_main(["--features", str(output / "features"), "--output", str(output), *size])


@pytest.fixture(scope="module")
def matrix_run(spark, tmp_path_factory):
    """200 random rows of a low-rank-plus-noise 1280-d matrix over two batches, then --k 5.

    A third batch, written without its report (a featurize run that died), must be ignored.
    """
    rng = np.random.default_rng(7)
    matrix = (
        rng.normal(size=(200, 8)) @ rng.normal(size=(8, 1280)) * 3
        + rng.normal(size=(200, 1280)) * 0.1
        + 5.0
    )
    matrix = matrix.astype(np.float32)
    labels = [f"L{i % 4}" for i in range(200)]
    output = tmp_path_factory.mktemp("pca")
    write_features(spark, output, matrix[:120], labels[:120], "a")
    write_features(spark, output, matrix[120:], labels[120:], "b", start=120)
    write_features(spark, output, matrix[:30] * 9, labels[:30], "died", start=200, commit=False)
    assert run_pca(output, "--k", "5") == 0
    return output, matrix


def numpy_pca(matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    centred = matrix.astype(np.float64) - matrix.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:k].T, (s**2 / np.sum(s**2))[:k]


def test_scores_and_variance_match_numpy_up_to_sign(spark, matrix_run):
    output, matrix = matrix_run
    got = spark.read.parquet(str(current(output, contract.PCA))).toPandas()
    order = got.path.str.extract(r"/(\d+)\.jpg$")[0].astype(int).to_numpy()
    scores = np.stack(got.pca)[np.argsort(order)]
    expected, variance = numpy_pca(matrix, 5)
    signs = np.sign(np.sum(scores * expected, axis=0))
    np.testing.assert_allclose(
        scores * signs, expected, rtol=1e-3, atol=1e-2 * np.abs(expected).max()
    )
    report = json.loads((output / contract.REPORTS / "pca.json").read_text())
    np.testing.assert_allclose(report["explained_variance"], variance, atol=1e-5)
    assert report["rows"] == 200 and report["k"] == 5 and report["batches"] == ["a", "b"]
    assert report[contract.R_TARGET_VARIANCE] is None
    assert contract.check_pca_report(report, feature_rows=200) == []


def test_csv_matrix_has_header_and_every_row(matrix_run):
    output, _ = matrix_run
    (csv_file,) = current(output, contract.PCA_CSV).glob("part-*.csv")
    with csv_file.open() as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = list(reader)
    assert header == ["path", "label", "pc_1", "pc_2", "pc_3", "pc_4", "pc_5"]
    assert len(rows) == 200
    assert contract.check_csv_sample(header, rows, 5) == []


def test_saved_model_transforms_new_batches_like_the_fit(spark, matrix_run):
    from pyspark.ml import PipelineModel

    from fruits_jobs.pca import read_features

    output, _ = matrix_run
    model = PipelineModel.load(str(current(output, contract.PCA_MODEL)))
    new = read_features(spark, str(output / "features"), ["a", "b"])
    again = model.transform(new).orderBy("path")
    first = spark.read.parquet(str(current(output, contract.PCA))).orderBy("path")
    np.testing.assert_allclose(
        np.stack([r.scores.toArray() for r in again.collect()]),
        np.stack([r.pca for r in first.collect()]),
        rtol=1e-4,
        atol=1e-4,
    )


def test_plots_are_png(matrix_run):
    output, _ = matrix_run
    for name in contract.PCA_PLOTS:
        data = (current(output, contract.PLOTS) / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_variance_picks_the_smallest_k(spark, matrix_run):
    output, matrix = matrix_run
    target = 0.9
    _, variance = numpy_pca(matrix, 1280)
    expected_k = int(np.argmax(np.cumsum(variance) >= target) + 1)
    before = json.loads((output / contract.PCA_REPORT_KEY).read_text())["fit"]
    assert run_pca(output, "--variance", str(target)) == 0
    report = json.loads((output / contract.REPORTS / "pca.json").read_text())
    assert report["fit"] != before  # a new fit replaced the previous one, whose folders are gone
    for dataset in contract.FIT_DATASETS:
        assert [p.name for p in (output / dataset).iterdir() if p.is_dir()] == [report["fit"]]
    assert report["k"] == expected_k and report[contract.R_TARGET_VARIANCE] == target
    assert report[contract.R_FEATURES] == str(output / "features")
    timings = report[contract.R_TIMINGS]
    assert set(timings) == {"fit", "write", "total"}
    assert timings["total"] >= timings["fit"] + timings["write"] - 0.002
    assert report["cumulative_explained_variance"][-1] >= target
    assert expected_k == 1 or report["cumulative_explained_variance"][-2] < target


def test_k_above_the_data_exits_2_naming_the_limit(spark, matrix_run, capsys):
    output, _ = matrix_run
    assert run_pca(output, "--k", "5000") == 2
    assert "pca: error: --k 5000 exceeds 200, the most that 200 rows" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"), [(["--k", "0"], "must be >= 1"), (["--variance", "1.5"], "(0, 1]")]
)
def test_bad_sizes_are_refused_by_the_parser(matrix_run, capsys, args, message):
    output, _ = matrix_run
    with pytest.raises(SystemExit) as exit_info:
        run_pca(output, *args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_no_committed_features_exit_2(spark, tmp_path, capsys):
    write_features(spark, tmp_path, np.ones((3, 4)), ["L"] * 3, "died", commit=False)
    assert run_pca(tmp_path, "--k", "2") == 2
    assert "pca: error: no committed batch with features under " in capsys.readouterr().err
    assert not (tmp_path / contract.PCA_REPORT_KEY).exists()


def test_a_single_row_exits_2_and_leaves_no_fit(spark, tmp_path, capsys):
    write_features(spark, tmp_path, np.ones((1, 4)), ["L"], "one")
    assert run_pca(tmp_path, "--variance", "0.9") == 2
    error = capsys.readouterr().err
    assert "pca: error: a PCA needs at least 2 rows: the committed batches ['one'] hold 1" in error
    assert not (tmp_path / contract.PCA_REPORT_KEY).exists()


def test_rows_that_disagree_with_their_report_exit_2_and_leave_no_fit(spark, tmp_path, capsys):
    write_features(spark, tmp_path, np.eye(3, 4) + 1.0, ["L"] * 3, "short")
    report = Path(contract.featurize_report_uri(str(tmp_path), "short"))
    report.write_text(json.dumps({**json.loads(report.read_text()), "featurized": 4}))
    assert run_pca(tmp_path, "--k", "2") == 2
    error = capsys.readouterr().err
    assert "pca: error: the features of batches ['short'] hold 3 rows, their reports 4" in error
    assert not (tmp_path / contract.PCA_REPORT_KEY).exists()


def nearest_centroid_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Split each label's images in half at random (seeded); classify the held-out half.

    Random, not by file name: Fruits-360 names are frames of a rotation video, so name order
    would put whole viewing angles on one side only.
    """
    rng = np.random.default_rng(0)
    train, test = np.zeros(len(labels), bool), np.zeros(len(labels), bool)
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        train[idx[: len(idx) // 2]] = True
        test[idx[len(idx) // 2 :]] = True
    classes = np.unique(labels[train])
    centroids = np.stack([scores[train & (labels == c)].mean(axis=0) for c in classes])
    distances = ((scores[test, None, :] - centroids[None]) ** 2).sum(axis=2)
    return float(np.mean(classes[distances.argmin(axis=1)] == labels[test]))


@needs_real_weights
@pytest.mark.parametrize(
    ("images", "classes", "floor"), [(GROCERY, 28, 0.80), (FRUITS360 / "Training", 24, 0.93)]
)
def test_features_separate_real_fruit_classes(
    spark, weights_file, tmp_path, images, classes, floor
):
    """MobileNetV2 + PCA(100) + nearest centroid on real photos, far above chance (1/classes).

    Also checks the job's spectrum against numpy's on these real features: a JVM without
    native LAPACK once got every component past the second one wrong here, and 0.711.
    """
    from fruits_jobs.featurize import main as featurize_main

    assert (
        featurize_main(
            [
                "--images",
                str(images),
                "--output",
                str(tmp_path),
                "--weights",
                str(weights_file),
                "--batch-id",
                "q",
            ]
        )
        == 0
    )
    assert run_pca(tmp_path, "--k", "100") == 0
    rows = spark.read.parquet(str(current(tmp_path, contract.PCA))).orderBy("path").toPandas()
    labels = rows.label.to_numpy()
    assert len(np.unique(labels)) == classes
    accuracy = nearest_centroid_accuracy(np.stack(rows.pca), labels)
    features = spark.read.parquet(str(tmp_path / contract.FEATURES)).orderBy("path").toPandas()
    centred = np.stack(features.features).astype(np.float64)
    centred -= centred.mean(axis=0)
    spectrum = np.linalg.svd(centred, compute_uv=False) ** 2
    report = json.loads((tmp_path / contract.REPORTS / "pca.json").read_text())
    np.testing.assert_allclose(
        report[contract.R_EXPLAINED], (spectrum / spectrum.sum())[:100], rtol=1e-4, atol=1e-6
    )
    print(
        f"\nnearest-centroid accuracy on {images.parent.name}/{images.name}: {accuracy:.3f} "
        f"({len(rows)} images, {classes} labels, chance {1 / classes:.3f})"
    )
    assert accuracy >= floor
