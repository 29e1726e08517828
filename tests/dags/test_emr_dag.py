"""The EMR DAG run for real by Airflow (``dag.test``), with moto standing in for S3 and EMR.

moto never advances an EMR step, so each test decides the outcome of each step by name as
moto creates it (in-process), and writes what the jobs would have written to moto's S3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.emr import responses as emr_responses
from moto.emr.models import ElasticMapReduceBackend

from fruits_jobs import contract
from fruits_pipeline import config, node_env

BUCKET = "fruits-test-lake"
REGION = "eu-west-1"
NODE_ENV_KEY = (
    config.Settings(bucket=BUCKET)
    .node_env_uri(node_env.env_key((config.PROJECT_ROOT / config.LOCK_FILE).read_bytes()))
    .removeprefix(f"s3://{BUCKET}/")
)


def make_bucket(encrypted: bool = True) -> Any:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    if encrypted:
        s3.put_bucket_encryption(
            Bucket=BUCKET,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
        )
    s3.put_public_access_block(
        Bucket=BUCKET,
        PublicAccessBlockConfiguration=dict.fromkeys(
            ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"),
            True,
        ),
    )
    return s3


def write_outputs(s3: Any, batch: str, *, rows: int = 3) -> None:
    """What the two Spark steps write, per the contract."""
    root = "outputs"
    featurize = {"input": rows, "featurized": rows - 1, "quarantined": 1}
    fit = "20261120T010000Z-0123abcd"
    pca = {"fit": fit, "k": 2, "rows": rows - 1, "explained_variance": [0.6, 0.3]}
    csv = "path,label,pc_1,pc_2\n" + "".join(f"s3://x/L/{i}.jpg,L,0.{i},1.5\n" for i in range(2))
    objects = {
        contract.featurize_report_key(batch): json.dumps(featurize),
        contract.PCA_REPORT_KEY: json.dumps({**pca, "batches": [batch]}),
        f"{contract.fit_key(contract.PCA_CSV, fit)}/part-00000.csv": csv,
        f"{contract.fit_key(contract.PCA, fit)}/part-00000.parquet": "PAR1",
        f"{contract.fit_key(contract.PCA_MODEL, fit)}/metadata/part-00000": "{}",
        **{contract.plot_key(fit, name): "png" for name in contract.PCA_PLOTS},
    }
    for key, body in objects.items():
        s3.put_object(Bucket=BUCKET, Key=f"{root}/{key}", Body=body.encode())


@pytest.fixture
def emr_world(monkeypatch, aws_credentials, tmp_path):
    """moto S3 + EMR; step outcomes by step name; every RunJobFlow request recorded."""
    outcomes: dict[str, str] = {}
    requests: list[dict] = []
    add_steps = ElasticMapReduceBackend.add_job_flow_steps

    def add_steps_with_outcome(self, job_flow_id, steps):
        created = add_steps(self, job_flow_id, steps)
        for step in created:
            step.state = outcomes.get(step.name, "COMPLETED")
            if step.name == "fruits-pca" and step.state == "COMPLETED":
                write_outputs(boto3.client("s3", region_name=REGION), **outputs)
        return created

    run_job_flow = emr_responses.ElasticMapReduceResponse.run_job_flow

    def record(self):
        requests.append(self._get_params())
        return run_job_flow(self)

    monkeypatch.setattr(ElasticMapReduceBackend, "add_job_flow_steps", add_steps_with_outcome)
    monkeypatch.setattr(emr_responses.ElasticMapReduceResponse, "run_job_flow", record)
    outputs: dict[str, Any] = {"batch": "2026-11-20"}
    images = tmp_path / "landing" / "Kiwi"
    images.mkdir(parents=True)
    (images / "a.jpg").write_bytes(b"\xff\xd8 not really a jpeg, sync does not care")
    with mock_aws():
        s3 = make_bucket()
        # The bucket already holds this lock file's node environment: cluster_request only
        # checks for it (tests/pipeline/test_node_env.py covers its upload; the stand-in, its use).
        s3.put_object(Bucket=BUCKET, Key=NODE_ENV_KEY, Body=b"node environment")
        yield {
            "s3": s3,
            "emr": boto3.client("emr", region_name=REGION),
            "outcomes": outcomes,
            "outputs": outputs,
            "requests": requests,
            "source": str(images.parent),
        }


def run_emr_dag(load_dag, world, **settings):
    from datetime import datetime, timezone

    dag = load_dag(
        "fruits_emr",
        bucket=BUCKET,
        image_source=world["source"],
        weights="imagenet",
        step_poke_interval_s=1,
        **settings,
    )
    run = dag.test(logical_date=datetime(2026, 11, 20, tzinfo=timezone.utc))
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    return run, states


def only_cluster(world) -> dict:
    (cluster,) = world["emr"].list_clusters()["Clusters"]
    return world["emr"].describe_cluster(ClusterId=cluster["Id"])["Cluster"]


def test_success_sends_the_expected_cluster_and_steps_and_terminates(
    airflow_db, load_dag, emr_world
):
    run, states = run_emr_dag(load_dag, emr_world)
    assert run.state == "success", states
    assert states["watcher"] == "skipped" and states["terminate_cluster"] == "success"
    cluster = only_cluster(emr_world)
    assert cluster["Status"]["State"] == "TERMINATED"
    assert cluster["ReleaseLabel"].startswith("emr-7.")
    assert cluster["LogUri"] == f"s3://{BUCKET}/emr-logs/"
    assert {t["Key"]: t["Value"] for t in cluster["Tags"]} == {
        "project": "fruits",
        "batch": "2026-11-20",
        "owner": "data-platform",
        "for-use-with-amazon-emr-managed-policies": "true",
    }
    (request,) = emr_world["requests"]
    assert request["AutoTerminationPolicy"] == {"IdleTimeout": 3600}
    (bootstrap,) = request["BootstrapActions"]
    assert bootstrap["ScriptBootstrapAction"]["Path"].endswith("bootstrap/install_python_deps.sh")
    action = bootstrap["ScriptBootstrapAction"]
    emr_world["s3"].head_object(Bucket=BUCKET, Key=action["Path"].removeprefix(f"s3://{BUCKET}/"))
    assert action["Args"] == [f"s3://{BUCKET}/{NODE_ENV_KEY}"]  # the nodes' Python, as found
    steps = emr_world["emr"].list_steps(ClusterId=cluster["Id"])["Steps"]
    args = {s["Name"]: s["Config"]["Args"] for s in steps}
    featurize, pca = args["fruits-featurize"], args["fruits-pca"]
    assert featurize[:3] == ["spark-submit", "--deploy-mode", "cluster"]
    assert featurize[featurize.index("--images") + 1] == f"s3://{BUCKET}/raw/images"
    assert featurize[featurize.index("--batch-id") + 1] == "2026-11-20"
    assert "--skip-existing" in featurize
    assert featurize[featurize.index("--lake") + 1].startswith("1-")  # plan_work's digest
    assert "--expect-new" in featurize  # the plan saw a new photo: TensorFlow starts at once
    assert pca[pca.index("--features") + 1] == f"s3://{BUCKET}/outputs/features"
    assert pca[pca.index("--variance") + 1] == "0.9"
    listed = emr_world["s3"].list_objects_v2(Bucket=BUCKET, Prefix="raw/images/")["Contents"]
    assert [o["Key"] for o in listed] == ["raw/images/Kiwi/a.jpg"]


def test_a_failed_pca_step_still_terminates_and_fails_the_run(
    airflow_db, load_dag, emr_world, capfd
):
    """A failed featurize step runs for real on the stand-in; the PCA's sensor fails alike."""
    emr_world["outcomes"]["fruits-pca"] = "FAILED"
    run, states = run_emr_dag(load_dag, emr_world)
    assert run.state == "failed"
    cluster_id = only_cluster(emr_world)["Id"]
    assert f"step logs: s3://{BUCKET}/emr-logs/{cluster_id}/steps/s-" in capfd.readouterr().out
    assert states["featurize"] == "success" and states["pca"] == "failed"
    assert states["validate_outputs"] == "upstream_failed"
    assert states["terminate_cluster"] == "success" and states["watcher"] == "failed"
    assert only_cluster(emr_world)["Status"]["State"] == "TERMINATED"


def test_preflight_refuses_an_unencrypted_bucket_and_starts_nothing(
    airflow_db, load_dag, emr_world
):
    emr_world["s3"].delete_bucket_encryption(Bucket=BUCKET)
    run, states = run_emr_dag(load_dag, emr_world)
    assert run.state == "failed" and states["preflight"] == "failed"
    assert emr_world["emr"].list_clusters()["Clusters"] == []


def test_cost_check_refuses_a_run_over_budget_once_synced_and_starts_nothing(
    airflow_db, load_dag, emr_world
):
    # One image: the planner's fixed start and bootstrap alone cost more than EUR 0.05.
    emr_world["s3"].delete_object(Bucket=BUCKET, Key=NODE_ENV_KEY)
    run, states = run_emr_dag(load_dag, emr_world, max_cost_eur="0.05")
    assert run.state == "failed" and states["sync_images"] == "success"
    assert states["cost_check"] == "failed" and states["create_cluster"] == "upstream_failed"
    assert emr_world["emr"].list_clusters()["Clusters"] == []
    listed = emr_world["s3"].list_objects_v2(Bucket=BUCKET, Prefix=NODE_ENV_KEY)
    assert listed["KeyCount"] == 0  # no cluster, so no node environment built or sent


ADD_STEPS_PROBE = """
import json, sys
import boto3
from moto import mock_aws
from airflow.dag_processing.dagbag import DagBag
from airflow.providers.amazon.aws.operators.emr import EmrAddStepsOperator
from airflow.providers.amazon.aws.sensors.emr import EmrStepSensor
from airflow.sdk.exceptions import TaskDeferred

dag = DagBag(dag_folder=sys.argv[1]).get_dag("fruits_emr")
report = {}
with mock_aws():
    emr = boto3.client("emr", region_name="eu-west-1")
    cluster = emr.run_job_flow(
        Name="probe", ReleaseLabel="emr-7.12.0", JobFlowRole="r", ServiceRole="s",
        Instances={"MasterInstanceType": "m5.xlarge", "InstanceCount": 1,
                   "KeepJobFlowAliveWhenNoSteps": True},
    )["JobFlowId"]
    for task in dag.tasks:
        if isinstance(task, EmrAddStepsOperator):
            task.job_flow_id = cluster
            task.steps = [{"Name": task.task_id, "ActionOnFailure": "CONTINUE",
                           "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["true"]}}]
            task.do_xcom_push = False  # no task instance to push to: the ids are returned
            try:
                returned = task.execute({})
            except TaskDeferred as deferred:
                returned = "deferred to " + type(deferred.trigger).__name__
            states = [s["Status"]["State"] for s in emr.list_steps(ClusterId=cluster)["Steps"]]
            report[task.task_id] = {"returned": returned, "step states": states}
        elif isinstance(task, EmrStepSensor):
            report[task.task_id] = {
                "deferrable": task.deferrable,
                "deferred budget": task.max_attempts * task.poke_interval,
                "poking budget": task.timeout,
            }
print(json.dumps(report))
"""


@pytest.mark.parametrize("default_deferrable", ["true", "false"])
def test_add_step_returns_once_emr_accepted_the_step_deferrable_or_not(
    airflow_db, aws_credentials, default_deferrable
):
    """The add-step tasks return the step id at once; the sensors wait, 6 h, in both modes.

    The provider reads AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE when it is imported, so each
    configuration loads the DAG in a fresh interpreter. A deferrable EmrAddStepsOperator
    defers on EmrAddStepsTrigger until the step *finishes*, at most 60 x 30 s (amazon
    provider 9.39, operators/emr.py and triggers/emr.py): not a budget for a featurize step.
    """
    env = {**os.environ, "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": default_deferrable}
    dag_file = str(config.PROJECT_ROOT / "dags" / "fruits_emr.py")
    probe = subprocess.run(
        [sys.executable, "-c", ADD_STEPS_PROBE, dag_file],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    report = json.loads(probe.stdout.strip().splitlines()[-1])
    for job, pending in (("featurize", 1), ("pca", 2)):
        added = report[f"add_{job}_step"]
        assert added["returned"][0].startswith("s-"), added  # the step id, not a deferral
        assert len(added["step states"]) == pending  # accepted, not waited for
        assert report[job] == {
            "deferrable": default_deferrable == "true",
            "deferred budget": 6 * 3600,
            "poking budget": 6 * 3600,
        }


def test_a_cluster_emr_ended_with_errors_is_explained_by_the_sensor_and_the_teardown(
    airflow_db, load_dag, emr_world, monkeypatch, capfd
):
    """A request EMR refuses ends the cluster before any step runs: the task logs say why.

    moto launches whatever it is sent, so the cluster is ended as EMR (and the local
    stand-in's rules, local_emr.rules) ends a request it refuses: the step, accepted while the
    cluster was starting, is cancelled.
    """
    reason = "Service role fruits-emr-service-role has insufficient EC2 permissions"
    add_steps = ElasticMapReduceBackend.add_job_flow_steps

    def accept_then_refuse(self, job_flow_id, steps):
        created = add_steps(self, job_flow_id, steps)
        cluster = self.clusters[job_flow_id]
        cluster.state, cluster.last_state_change_reason = "TERMINATED_WITH_ERRORS", reason
        return created

    monkeypatch.setattr(ElasticMapReduceBackend, "add_job_flow_steps", accept_then_refuse)
    emr_world["outcomes"]["fruits-featurize"] = "CANCELLED"
    run, states = run_emr_dag(load_dag, emr_world)
    assert run.state == "failed" and states["featurize"] == "failed"
    assert states["terminate_cluster"] == "success" and states["watcher"] == "failed"
    cluster = only_cluster(emr_world)
    assert cluster["Status"]["State"] == "TERMINATED_WITH_ERRORS"  # not terminated again
    ended = f"cluster {cluster['Id']} ended TERMINATED_WITH_ERRORS: no code: {reason}"
    logged = capfd.readouterr().out
    assert f"step logs: s3://{BUCKET}/emr-logs/{cluster['Id']}/steps/s-" in logged
    assert logged.count(ended) >= 2  # the featurize sensor's error and the teardown's log


def test_second_sync_uploads_nothing(airflow_db, load_dag, emr_world):
    from fruits_pipeline.stores import open_store
    from fruits_pipeline.sync import sync

    source = open_store(emr_world["source"])
    lake = open_store(f"s3://{BUCKET}/raw/images", emr_world["s3"])
    assert sync(source, lake).copied == 1
    again = sync(source, lake)
    assert (again.copied, again.unchanged) == (0, 1)
