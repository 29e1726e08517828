"""Weights resolution and the per-worker model cache, on the real weights file."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import boto3
import h5py
import numpy as np
import pandas as pd
import pytest
from moto import mock_aws

from fruits_jobs import model
from fruits_jobs.featurize import featurize_batches
from tests.conftest import GROCERY, sample_images


def test_s3_weights_are_downloaded_once_to_a_local_file(weights_file, monkeypatch):
    """moto stands in for S3."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(
            Bucket="lake", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        s3.upload_file(str(weights_file), "lake", f"code/v1/weights/{weights_file.name}")
        local = model.resolve_weights(f"s3://lake/code/v1/weights/{weights_file.name}", 1.0, 224)
        assert model.sha256_of(local) == model.sha256_of(weights_file)
        with pytest.raises(model.WeightsError, match="cannot download weights s3://lake/absent"):
            model.resolve_weights("s3://lake/absent.h5", 1.0, 224)


def test_local_and_file_uri_weights_resolve_to_the_same_file(weights_file):
    assert model.resolve_weights(str(weights_file), 1.0, 224) == weights_file
    assert model.resolve_weights(weights_file.as_uri(), 1.0, 224) == weights_file


def test_each_python_worker_builds_the_model_once_across_partitions(spark, weights_file):
    """12 partitions on local[2]: the workers Spark reuses build one model each, not one a task."""
    arrays = model.read_weights(weights_file, 1.0, 96)
    spec = model.ModelSpec(1.0, 96, "worker-reuse-test")
    broadcast = spark.sparkContext.broadcast(arrays)
    contents = [p.read_bytes() for p in sample_images(GROCERY, 4)[:24]]
    images = spark.createDataFrame([(c,) for c in contents], "content binary").repartition(12)

    def probe(frames):
        before = model.model_builds()  # a reused worker may hold other tests' models
        for frame in frames:
            out = list(featurize_batches(iter([frame.content]), spec, broadcast))
            yield pd.DataFrame(
                {
                    "pid": [os.getpid()],
                    "before": [before],
                    "after": [model.model_builds()],
                    "threads": [intra_op_threads()],
                    "n": [len(out[0])],
                }
            )

    schema = "pid long, before long, after long, threads long, n long"
    rows = images.mapInPandas(probe, schema).collect()
    assert sum(r.n for r in rows) == 24 and len(rows) >= 12
    builds = {
        pid: max(r.after for r in rows if r.pid == pid)
        - min(r.before for r in rows if r.pid == pid)
        for pid in {r.pid for r in rows}
    }
    assert len(builds) < len(rows), "every task got a fresh worker: nothing to reuse"
    assert set(builds.values()) == {1}, builds
    # Each worker runs TensorFlow on its task's one core, not on every core of the machine.
    assert {r.threads for r in rows} == {1}
    broadcast.unpersist()


def intra_op_threads() -> int:
    import tensorflow as tf

    return tf.config.threading.get_intra_op_parallelism_threads()


def test_driver_reads_a_weights_file_once_per_content_and_shape(weights_file):
    spec = model.ModelSpec(1.0, 96, model.sha256_of(weights_file))
    first = model.driver_weights(spec, weights_file)
    assert model.driver_weights(spec, weights_file) is first
    other = model.driver_weights(model.ModelSpec(1.0, 128, spec.weights_sha256), weights_file)
    assert other is not first
    assert [a.shape for a in other] == [a.shape for a in first]  # same network, other input


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory) -> tuple[Path, Path, list]:
    """A seeded headless MobileNetV2 and one with its top, saved in Keras' HDF5 layout."""
    import keras

    folder = tmp_path_factory.mktemp("hdf5")
    keras.utils.set_random_seed(7)
    headless = model.build_model(1.0, 96)
    headless.save(folder / "headless.h5")  # legacy full-model HDF5: model_weights/layer_names
    with_top = keras.applications.MobileNetV2(input_shape=(96, 96, 3), weights=None)
    with_top.save(folder / "top.h5")
    return folder / "headless.h5", folder / "top.h5", headless.get_weights()


def test_hdf5_weights_are_read_in_keras_order_without_tensorflow(saved_models):
    headless, _, expected = saved_models
    script = (
        "import sys, numpy as np; from fruits_jobs.model import read_weights; "
        "np.savez(sys.argv[2], *read_weights(sys.argv[1], 1.0, 224)); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    out = headless.with_suffix(".npz")
    subprocess.run([sys.executable, "-c", script, str(headless), str(out)], check=True)
    with np.load(out) as read:
        arrays = [read[f"arr_{i}"] for i in range(len(read.files))]
    assert len(arrays) == len(model.weight_shapes(1.0)) == len(expected) == 260
    assert all(np.array_equal(a, b) for a, b in zip(arrays, expected, strict=True))


def test_keras3_weights_files_are_read_through_keras(saved_models, tmp_path):
    """Keras 3's own ``.weights.h5`` (no ``layer_names``) is loaded into a net: same arrays."""
    _, _, expected = saved_models
    net = model.build_model(1.0, 96)
    net.set_weights(expected)
    path = tmp_path / "net.weights.h5"
    net.save_weights(path)
    arrays = model.read_weights(path, 1.0, 96)
    assert len(arrays) == len(expected)
    assert all(np.array_equal(a, b) for a, b in zip(arrays, expected, strict=True))


def test_hdf5_weights_of_another_net_or_width_are_refused(saved_models):
    headless, top, _ = saved_models
    with pytest.raises(model.WeightsError, match=r"262 weight arrays, a headless MobileNetV2"):
        model.read_weights(top, 1.0, 224)
    with pytest.raises(
        model.WeightsError, match=r"alpha=0.5.*Conv1\[0\] has shape \(3, 3, 3, 32\)"
    ):
        model.read_weights(headless, 0.5, 224)


def corrupt_weights(kind: str, weights_file: Path, folder: Path) -> Path:
    """A weights file broken the way ``kind`` says, as a user may pass one."""
    if kind == "truncated":
        path = folder / "truncated.h5"
        data = weights_file.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "not_hdf5":
        path = folder / "notes.h5"
        path.write_text("not weights")
    elif kind == "missing_layer":  # Keras' HDF5 layout naming a layer the file lacks
        path = folder / "missing_layer.h5"
        path.write_bytes(weights_file.read_bytes())
        with h5py.File(path, "a") as h5:
            del h5.get("model_weights", h5)["Conv1"]
    else:  # Keras 3 weights of another width: the shapes differ
        path = folder / "alpha_0.5.weights.h5"
        model.build_model(0.5, 96).save_weights(path)
    return path


@pytest.mark.filterwarnings("ignore:Skipping nested container:UserWarning")  # Keras 3's loader
@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("truncated", r"truncated file"),
        ("not_hdf5", r"file signature not found"),
        ("missing_layer", r"Unable to synchronously open object"),
        ("keras3_other_width", r"could not be loaded"),
    ],
)
def test_corrupt_or_wrong_weights_files_are_weights_errors(weights_file, tmp_path, kind, message):
    path = corrupt_weights(kind, weights_file, tmp_path)
    with pytest.raises(
        model.WeightsError, match=rf"is not MobileNetV2 weights \(alpha=1.0, no top\): .*{message}"
    ):
        model.read_weights(path, 1.0, 96)


def bug(*args, **kwargs):
    raise TypeError("a bug in our code")


@pytest.mark.parametrize("reader", ["hdf5", "keras", "s3"])
def test_a_bug_in_the_weights_reader_is_raised_as_itself(tmp_path, monkeypatch, reader):
    """Only what a bad file or a failed download raises becomes a WeightsError (exit 2)."""
    if reader == "s3":
        monkeypatch.setattr(boto3, "client", bug)
        with pytest.raises(TypeError, match="a bug in our code"):
            model.resolve_weights("s3://lake/weights.h5", 1.0, 224)
        return
    path = tmp_path / "weights.h5"
    with h5py.File(path, "w") as h5:  # with layer_names, h5py reads it; without, Keras
        h5["kernel"] = np.ones(3)
        if reader == "hdf5":
            h5.attrs["layer_names"] = [b"Conv1"]
    monkeypatch.setattr(model, "_hdf5_layers" if reader == "hdf5" else "build_model", bug)
    with pytest.raises(TypeError, match="a bug in our code"):
        model.read_weights(path, 1.0, 224)


def test_a_bug_reading_the_weights_ends_the_job_with_its_traceback(
    spark, weights_file, tmp_path, monkeypatch
):
    """Not exit 2 and one line: run_job turns only JobErrors into those."""
    from fruits_jobs.featurize import main

    monkeypatch.setattr(model, "_ARRAYS", {})  # this process may have read the file already
    monkeypatch.setattr(model, "_hdf5_layers", bug)
    args = ["--images", str(tmp_path), "--output", str(tmp_path / "out")]
    with pytest.raises(TypeError, match="a bug in our code"):
        main([*args, "--weights", str(weights_file)])


@pytest.mark.parametrize("alpha", sorted(model.FIRST_FILTERS))
def test_expected_weight_shapes_are_keras_own_for_each_width(alpha):
    assert model.weight_shapes(alpha) == [
        tuple(w.shape) for w in model.build_model(alpha, 96).weights
    ]


@pytest.mark.parametrize("alpha, side", [(1.0, 224), (0.5, 97)])
def test_the_folded_net_gives_keras_own_features(weights_file, alpha, side):
    """Net (batch norms folded into the convolutions) against Keras' MobileNetV2, real photos.

    At 224 with the test weights file (the real ImageNet weights when shared/ has them); at
    another width and an odd side (Keras pads stride-2 convolutions by hand there) with random
    batch-norm statistics, so that no folded scale is 1 and no bias 0. Folding reorders
    float32 arithmetic: within 1e-4 of the largest feature (measured: the real weights 3.2e-6;
    the seeded net of a bare clone, whose batch-norm variances come from a dozen photos,
    4.0e-5; the random statistics 2.2e-7), where a wrong layer, stride or padding is off by
    the features' own size.
    """
    from fruits_jobs.imaging import decode

    keras_net = model.build_model(alpha, side)
    if alpha == 1.0 and side == 224:
        arrays = model.read_weights(weights_file, alpha, side)
    else:
        rng = np.random.default_rng(11)
        arrays = [
            a if len(a.shape) > 1 else rng.uniform(0.5, 1.5, a.shape).astype(np.float32)
            for a in keras_net.get_weights()
        ]
    keras_net.set_weights(arrays)
    photos = sample_images(GROCERY, 2)[:12]  # the shipped sample's 6 labels give 12 too
    pixels = np.stack([decode(p.read_bytes(), side) for p in photos])
    expected = keras_net(pixels, training=False).numpy()
    net = model.Net.build(alpha, side)
    net.set_weights(arrays)
    got = net.features(pixels)
    assert got.shape == (12, 1280) and np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_imagenet_weights_come_from_keras_cache_or_fail_with_their_name(tmp_path, monkeypatch):
    """No network: a file already in the cache is used; an unreachable hub is a WeightsError."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / name).write_bytes(b"cached")
    assert model.resolve_weights("imagenet", 1.0, 224) == tmp_path / "models" / name
    monkeypatch.setattr(model, "KERAS_HUB", "http://127.0.0.1:9/")  # nothing listens there
    with pytest.raises(model.WeightsError, match=r"cannot download imagenet weights .*_0\.5_224"):
        model.resolve_weights("imagenet", 0.5, 224)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [name]  # no partial file


def test_imagenet_weights_without_a_writable_home_go_to_a_temporary_folder(tmp_path, monkeypatch):
    """A YARN driver in cluster mode has HOME=/home/, where it cannot create ~/.keras.

    Here HOME is a file (root may write anywhere, a file cannot hold a folder); the hub is
    a local folder, so no network: the weights land elsewhere; an unreachable hub is a
    WeightsError, not the OSError of the cache folder.
    """
    home = tmp_path / "home"
    home.write_text("not a folder")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("KERAS_HOME", raising=False)
    hub = tmp_path / "hub"
    hub.mkdir()
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    (hub / name).write_bytes(b"weights from the hub")
    monkeypatch.setattr(model, "KERAS_HUB", hub.as_uri() + "/")
    local = model.resolve_weights("imagenet", 1.0, 224)
    assert local.name == name and local.read_bytes() == b"weights from the hub"
    assert not local.is_relative_to(home)
    monkeypatch.setattr(model, "KERAS_HUB", "http://127.0.0.1:9/")  # nothing listens there
    with pytest.raises(model.WeightsError, match=r"cannot download imagenet weights .*_0\.5_224"):
        model.resolve_weights("imagenet", 0.5, 224)


def test_prepared_workers_are_the_ones_the_featurize_udf_gets(spark, weights_file):
    """The nets built ahead by prepare_workers wait in the workers that run the next UDF tasks."""
    from pyspark.sql.functions import pandas_udf

    from fruits_jobs.featurize import featurize_udf, prepare_workers

    spec = model.ModelSpec(1.0, 64, "prepare-test")
    shape = (spec.alpha, spec.image_size)

    @pandas_udf("string")
    def state(ids: pd.Series) -> pd.Series:
        ready = "model" if spec in model._MODELS else "bare" if shape in model._BARE else "none"
        return pd.Series([ready] * len(ids))

    def states() -> set[str]:
        slots = spark.sparkContext.defaultParallelism
        return {
            r[0] for r in spark.range(2 * slots, numPartitions=slots).select(state("id")).collect()
        }

    assert states() == {"none"}
    prepare_workers(spark, spec).join()
    assert states() == {"bare"}
    contents = [p.read_bytes() for p in sample_images(GROCERY, 2)[:8]]
    images = spark.createDataFrame([(c,) for c in contents], "content binary").repartition(2)
    arrays = spark.sparkContext.broadcast(model.read_weights(weights_file, 1.0, 64))
    rows = images.select(featurize_udf(spec, arrays)("content").alias("r")).collect()
    assert len(rows) == 8 and all(len(r.r.features) == 1280 for r in rows)
    assert states() == {"model"}
    arrays.unpersist()


def test_a_malformed_response_of_the_keras_hub_is_a_weights_error(tmp_path, monkeypatch):
    """``http.client`` raises such a response as an ``HTTPException``, not an ``OSError``."""

    class NotHttp(BaseHTTPRequestHandler):
        def do_GET(self):
            self.wfile.write(b"not HTTP\r\n")
            self.close_connection = True

    server = HTTPServer(("127.0.0.1", 0), NotHttp)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(model, "KERAS_HUB", f"http://127.0.0.1:{server.server_port}/")
    try:
        with pytest.raises(
            model.WeightsError, match=r"^cannot download imagenet weights .*_1\.0_224.*: not HTTP$"
        ):
            model.resolve_weights("imagenet", 1.0, 224)
    finally:
        server.shutdown()
        server.server_close()
    assert list((tmp_path / "models").iterdir()) == []  # no partial file
