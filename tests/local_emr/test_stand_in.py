"""The stand-in itself: what it refuses, how it rewrites a step, idle timeout, termination."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from fruits_pipeline import code_bundle, node_env, steps
from fruits_pipeline.cluster import job_flow_overrides
from fruits_pipeline.config import EMR_PYTHON, LOCK_FILE, NODE_ENVS, PROJECT_ROOT, Settings
from local_emr.runner import SparkEnv, StepRefusedError, last_error, local_command
from local_emr.server import LocalEmr, UnsafeEnvironmentError
from local_emr.staging import hadoop_confs, s3_uris
from tests.conftest import GROCERY, labels, sample_images, spark_processes
from tests.local_emr.conftest import REGION, wait_for

BUCKET = "fruits-stand-in-lake"
SETTINGS = Settings(bucket=BUCKET, region=REGION)
NODE_ENV = SETTINGS.node_env_uri(node_env.env_key((PROJECT_ROOT / LOCK_FILE).read_bytes()))
SPARK = SparkEnv(Path("/opt/spark"), "/venv/bin/python", "local-cluster[2,1,2048]")


@pytest.mark.parametrize(
    ("environ", "host", "named"),
    [
        ({"AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE"}, "127.0.0.1", "AWS_ACCESS_KEY_ID"),
        ({"AWS_SESSION_TOKEN": "FwoGZXIvYXdzE"}, "127.0.0.1", "AWS_SESSION_TOKEN"),
        ({"AWS_PROFILE": "prod"}, "127.0.0.1", "AWS_PROFILE"),
        ({"AWS_ACCESS_KEY_ID": "testing"}, "0.0.0.0", "0.0.0.0"),
        ({}, "192.0.2.2", "192.0.2.2"),
    ],
)
def test_refuses_real_credentials_and_non_loopback_addresses(environ, host, named):
    with pytest.raises(UnsafeEnvironmentError, match=named):
        LocalEmr(host=host, environ=environ)


def test_container_flag_opens_the_network_only_inside_a_container(monkeypatch, tmp_path):
    from local_emr import server

    monkeypatch.setattr(server, "CONTAINER_MARKS", (tmp_path / ".dockerenv",))
    with pytest.raises(UnsafeEnvironmentError, match="is not loopback"):
        LocalEmr(host="0.0.0.0", environ={}, container=True)
    (tmp_path / ".dockerenv").touch()
    LocalEmr(host="0.0.0.0", environ={}, container=True)
    with pytest.raises(UnsafeEnvironmentError, match="is not loopback"):
        LocalEmr(host="0.0.0.0", environ={})


def test_the_fixed_test_keys_on_loopback_are_accepted():
    LocalEmr(host="::1", environ={"AWS_ACCESS_KEY_ID": "testing"})
    LocalEmr(host="localhost", environ={})


def emr_step(job: str, code: str, args: list[str]) -> list[str]:
    return steps.emr_step(job, steps.emr_target(code, EMR_PYTHON), args)["HadoopJarStep"]["Args"]


def test_the_pipelines_step_runs_in_client_mode_with_its_s3_uris_and_this_python():
    code = f"s3://{BUCKET}/code/abc"
    args = emr_step(
        steps.FEATURIZE,
        code,
        steps.featurize_args(f"s3://{BUCKET}/raw/images", f"s3://{BUCKET}/outputs", "x", "b1"),
    )
    command = local_command(args, SPARK, EMR_PYTHON, {"spark.a": "1"})
    assert command[:5] == [
        "/opt/spark/bin/spark-submit",
        "--master",
        "local-cluster[2,1,2048]",
        "--deploy-mode",
        "client",
    ]
    assert "cluster" not in command and EMR_PYTHON not in " ".join(command)
    assert "spark.executorEnv.PYSPARK_PYTHON=/venv/bin/python" in command
    assert command[command.index("--py-files") + 1] == f"{code}/{steps.PACKAGE_ZIP}"
    tail = command[command.index(f"{code}/featurize.py") :]
    assert tail[1:] == args[args.index(f"{code}/featurize.py") + 1 :]  # job args unchanged
    assert s3_uris(args) == [
        (BUCKET, f"code/abc/{steps.PACKAGE_ZIP}"),
        (BUCKET, "code/abc/featurize.py"),
        (BUCKET, "raw/images"),
        (BUCKET, "outputs"),
    ]


def test_only_spark_submit_steps_run():
    with pytest.raises(StepRefusedError, match="spark-submit only"):
        local_command(["bash", "-c", "rm -rf /"], SPARK, None, {})
    with pytest.raises(StepRefusedError, match="no application file"):
        local_command(["spark-submit", "--deploy-mode", "cluster"], SPARK, None, {})


def test_buckets_are_mounted_as_s3_on_their_staging_folders(tmp_path):
    confs = hadoop_confs({"lake": tmp_path / "lake"})
    assert confs["spark.hadoop.fs.viewfs.mounttable.lake.linkFallback"] == (
        (tmp_path / "lake").as_uri()
    )
    assert confs["spark.hadoop.fs.s3.impl"].endswith("ViewFileSystemOverloadScheme")


def test_the_jobs_one_line_error_is_found_in_spark_submits_output():
    stdout = "2026-11-25 10:00:00,1 INFO fruits started\nfeaturize: error: no images under x\n"
    stderr = "26/11/25 10:00:01 ERROR Worker: Failed\n\tat org.apache.Foo\n"
    assert last_error(stdout, stderr) == "featurize: error: no images under x"
    assert last_error("Traceback...\nValueError: bad shape\n", stderr) == "ValueError: bad shape"
    assert last_error("", "Exception in thread main x\n\tat y\n") == "Exception in thread main x"


@pytest.fixture(scope="module")
def code(stand_in, lake, node_env_archive) -> str:
    """The code bundle (jobs, zip, bootstrap script) and the node environment in the bucket,
    as upload_code puts them."""
    bundle = code_bundle.code_bundle()
    uri = SETTINGS.code_uri(code_bundle.bundle_version(bundle))
    for key, data in bundle.items():
        lake.put_object(
            Bucket=BUCKET, Key=f"{uri.removeprefix(f's3://{BUCKET}/')}/{key}", Body=data
        )
    lake.upload_file(str(node_env_archive), BUCKET, NODE_ENV.removeprefix(f"s3://{BUCKET}/"))
    return uri


def start_cluster(stand_in, code: str, batch: str) -> str:
    """``RunJobFlow`` with the DAG's own request; the cluster id once it is WAITING."""
    emr = stand_in.client("emr")
    request = job_flow_overrides(SETTINGS, batch, code, NODE_ENV)
    cluster_id = emr.run_job_flow(**request)["JobFlowId"]
    state = wait_for(
        lambda: (
            (s := emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"])["State"]
            not in ("STARTING", "BOOTSTRAPPING")
            and s
        ),
        timeout=120,
    )
    assert state["State"] == "WAITING", state
    return cluster_id


def test_the_bucket_keeps_its_tls_only_policy_and_serves_objects(lake):
    policy = json.loads(lake.get_bucket_policy(Bucket=BUCKET)["Policy"])
    (statement,) = policy["Statement"]
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    lake.put_object(Bucket=BUCKET, Key="probe.txt", Body=b"ok")
    assert lake.get_object(Bucket=BUCKET, Key="probe.txt")["Body"].read() == b"ok"


def test_a_cluster_left_alone_ends_by_its_idle_timeout_and_takes_no_more_steps(
    stand_in, code, monkeypatch
):
    emr = stand_in.client("emr")
    monkeypatch.setattr(stand_in.control, "idle_scale", 3 / 3600)  # the DAG's 3600 s -> 3 s
    cluster_id = start_cluster(stand_in, code, "idle")
    status = wait_for(
        lambda: (
            (s := emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"])["State"]
            != "WAITING"
            and s
        ),
        timeout=30,
    )
    assert status["State"] == "TERMINATED"
    assert "IdleTimeout 3600 s" in status["StateChangeReason"]["Message"]
    timeline = status["Timeline"]
    assert (timeline["EndDateTime"] - timeline["ReadyDateTime"]).total_seconds() >= 3
    with pytest.raises(ClientError, match="may not be modified"):
        emr.add_job_flow_steps(
            JobFlowId=cluster_id,
            Steps=[steps.emr_step(steps.PCA, steps.emr_target(code, EMR_PYTHON), ["--k", "1"])],
        )


def test_terminating_a_running_step_cancels_it_and_stops_every_spark_process(stand_in, code, lake):
    emr = stand_in.client("emr")
    cluster_id = start_cluster(stand_in, code, "killed")
    args = steps.pca_args(f"s3://{BUCKET}/outputs", k=2)
    (step_id,) = emr.add_job_flow_steps(
        JobFlowId=cluster_id,
        Steps=[steps.emr_step(steps.PCA, steps.emr_target(code, EMR_PYTHON), args)],
    )["StepIds"]
    wait_for(lambda: spark_processes(stand_in.workdir), timeout=60)
    emr.terminate_job_flows(JobFlowIds=[cluster_id])
    cluster = wait_for(
        lambda: (
            (c := emr.describe_cluster(ClusterId=cluster_id)["Cluster"])["Status"]["State"]
            == "TERMINATED"
            and c
        ),
        timeout=60,
    )
    assert cluster["Status"]["StateChangeReason"]["Code"] == "USER_REQUEST"
    step = emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]
    assert step["Status"]["State"] == "CANCELLED"
    assert spark_processes(stand_in.workdir) == []


def shell_step(name: str, on_failure: str) -> dict:
    """A step the stand-in refuses to run (not spark-submit): it fails at once, no Spark."""
    return {
        "Name": name,
        "ActionOnFailure": on_failure,
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["bash", "-c", "true"]},
    }


@pytest.mark.parametrize(
    ("on_failure", "cluster_state"),
    [
        ("CONTINUE", "WAITING"),
        ("CANCEL_AND_WAIT", "WAITING"),
        ("TERMINATE_CLUSTER", "TERMINATED_WITH_ERRORS"),
    ],
)
def test_steps_run_in_order_and_a_failure_follows_its_action(
    stand_in, code, lake, on_failure, cluster_state
):
    emr = stand_in.client("emr")
    cluster_id = start_cluster(stand_in, code, f"on-failure-{on_failure.lower()}")
    first, second = emr.add_job_flow_steps(
        JobFlowId=cluster_id,
        Steps=[shell_step("first", on_failure), shell_step("second", "CONTINUE")],
    )["StepIds"]
    settled = {"FAILED", "CANCELLED", "COMPLETED"}
    wait_for(
        lambda: (
            emr.describe_step(ClusterId=cluster_id, StepId=second)["Step"]["Status"]["State"]
            in settled
        )
    )
    cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert cluster["Status"]["State"] == cluster_state
    failed = emr.describe_step(ClusterId=cluster_id, StepId=first)["Step"]["Status"]
    assert failed["State"] == "FAILED"
    assert "spark-submit only" in failed["FailureDetails"]["Message"]
    log = failed["FailureDetails"]["LogFile"]
    assert log == f"{cluster['LogUri']}{cluster_id}/steps/{first}/stderr.gz"
    body = lake.get_object(Bucket=BUCKET, Key=log.removeprefix(f"s3://{BUCKET}/"))["Body"]
    assert b"spark-submit only" in gzip.decompress(body.read())
    later = emr.describe_step(ClusterId=cluster_id, StepId=second)["Step"]["Status"]
    if on_failure == "CONTINUE":  # it ran after the first, and failed the same way
        assert later["State"] == "FAILED" and "FailureDetails" in later
        assert later["Timeline"]["StartDateTime"] >= failed["Timeline"]["EndDateTime"]
    else:
        assert later["State"] == "CANCELLED"
    if cluster_state == "TERMINATED_WITH_ERRORS":
        assert cluster["Status"]["StateChangeReason"]["Code"] == "STEP_FAILURE"
    else:
        emr.terminate_job_flows(JobFlowIds=[cluster_id])


def test_a_request_emr_would_refuse_ends_the_cluster_with_its_validation_error(stand_in, code):
    emr = stand_in.client("emr")
    request = job_flow_overrides(SETTINGS, "refused", code, NODE_ENV)
    request["ReleaseLabel"] = "emr-5.36.0"
    cluster_id = emr.run_job_flow(**request)["JobFlowId"]
    status = wait_for(
        lambda: (
            (s := emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"])["State"]
            not in ("STARTING", "BOOTSTRAPPING")
            and s
        ),
        timeout=30,
    )
    assert status["State"] == "TERMINATED_WITH_ERRORS"
    assert status["StateChangeReason"]["Code"] == "VALIDATION_ERROR"
    assert "emr-5.36.0" in status["StateChangeReason"]["Message"]


def test_the_steps_import_from_the_node_environment_only(stand_in, code, lake, weights_file):
    """A node environment without TensorFlow: the cluster bootstraps (the stand-in unpacks,
    as the nodes would), and the featurize step fails on its executors' import of
    TensorFlow, which the project's venv has: their Python is the archive's, not the venv's."""
    lean = node_env.ensure(
        Path(NODE_ENVS).expanduser(),
        PROJECT_ROOT / LOCK_FILE,
        tuple(p for p in node_env.PACKAGES if p != "tensorflow-cpu"),
    )
    uri = SETTINGS.node_env_uri(lean.name.removesuffix(".tar.gz"))
    lake.upload_file(str(lean), BUCKET, uri.removeprefix(f"s3://{BUCKET}/"))
    for photo in sample_images(GROCERY, 2, labels(GROCERY, 1)):
        lake.upload_file(str(photo), BUCKET, f"raw/images/{photo.parent.name}/{photo.name}")
    emr = stand_in.client("emr")
    cluster_id = emr.run_job_flow(**job_flow_overrides(SETTINGS, "no-tf", code, uri))["JobFlowId"]
    weights = f"s3://{BUCKET}/code/weights/mobilenet.h5"
    lake.upload_file(str(weights_file), BUCKET, weights.removeprefix(f"s3://{BUCKET}/"))
    args = steps.featurize_args(SETTINGS.raw_images_uri, SETTINGS.output_uri, weights, "no-tf")
    (step_id,) = emr.add_job_flow_steps(
        JobFlowId=cluster_id,
        Steps=[steps.emr_step(steps.FEATURIZE, steps.emr_target(code, EMR_PYTHON), args)],
    )["StepIds"]
    step = wait_for(
        lambda: (
            (s := emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"])["Status"][
                "State"
            ]
            in ("FAILED", "COMPLETED")
            and s
        ),
        timeout=300,
    )
    emr.terminate_job_flows(JobFlowIds=[cluster_id])
    assert step["Status"]["State"] == "FAILED"
    log = step["Status"]["FailureDetails"]["LogFile"]
    body = lake.get_object(Bucket=BUCKET, Key=log.removeprefix(f"s3://{BUCKET}/"))["Body"]
    assert "No module named 'tensorflow'" in gzip.decompress(body.read()).decode()
