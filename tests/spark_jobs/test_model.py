"""Weights resolution and the per-worker model cache, on the real weights file."""

from __future__ import annotations

import os

import boto3
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
    contents = [p.read_bytes() for p in sample_images(GROCERY, 1)[:24]]
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
