"""Both DAGs parse cleanly, wire the stages in the documented order, and guard their inputs."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import warnings

import pytest

from tests.conftest import ROOT

EMR_ORDER = [
    ("preflight", "proceed"),
    ("proceed", "sync_images"),
    ("proceed", "upload_code"),
    ("sync_images", "plan_work"),
    ("upload_code", "plan_work"),
    ("plan_work", "cost_check"),
    ("cost_check", "has_work"),
    ("has_work", "cluster_request"),
    ("has_work", "featurize_step_spec"),
    ("has_work", "pca_step_spec"),
    ("cluster_request", "create_cluster"),
    ("create_cluster", "add_featurize_step"),
    ("add_featurize_step", "featurize"),
    ("featurize", "add_pca_step"),
    ("add_pca_step", "pca"),
    ("pca", "validate_outputs"),
    ("validate_outputs", "terminate_cluster"),
]
LOCAL_ORDER = [
    ("preflight", "proceed"),
    ("proceed", "sync_images"),
    ("sync_images", "plan_work"),
    ("plan_work", "has_work"),
    ("has_work", "featurize"),
    ("featurize", "pca"),
    ("pca", "validate_outputs"),
]


def test_dag_folder_imports_without_errors_or_warnings():
    from airflow.dag_processing.dagbag import DagBag

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == ["fruits_emr", "fruits_local"]
    ours = [w for w in caught if "/dags/" in w.filename or "/plugins/" in w.filename]
    assert ours == [], [str(w.message) for w in ours]


@pytest.mark.parametrize(
    ("dag_id", "order"), [("fruits_emr", EMR_ORDER), ("fruits_local", LOCAL_ORDER)]
)
def test_stages_run_in_the_documented_order(load_dag, dag_id, order):
    dag = load_dag(dag_id)
    for upstream, downstream in order:
        assert upstream in dag.get_task(downstream).upstream_task_ids, (upstream, downstream)
    dag.topological_sort()  # raises on a cycle
    assert dag.schedule == "@daily" and dag.catchup is False


def test_emr_teardown_always_runs_and_a_watcher_fails_the_run(load_dag):
    dag = load_dag("fruits_emr")
    assert dag.get_task("terminate_cluster").trigger_rule == "all_done"
    watcher = dag.get_task("watcher")
    assert watcher.trigger_rule == "one_failed"
    assert watcher.upstream_task_ids == set(dag.task_ids) - {"watcher"}
    assert [t.task_id for t in dag.tasks if not t.downstream_list] == ["watcher"]


def test_local_dag_has_no_cluster_or_aws_task(load_dag):
    dag = load_dag("fruits_local")
    kinds = {type(t).__module__ for t in dag.tasks}
    assert not any("amazon" in kind for kind in kinds), kinds
    assert "create_cluster" not in dag.task_ids


def test_outputs_are_declared_as_assets(load_dag):
    dag = load_dag("fruits_emr", bucket="lake-eu")
    uris = {a.uri for a in dag.get_task("validate_outputs").outlets}
    assert "s3://lake-eu/outputs/pca" in uris and "s3://lake-eu/outputs/features" in uris
    local = load_dag("fruits_local", local_root="/srv/fruits")
    uris = {a.uri for a in local.get_task("validate_outputs").outlets}
    assert "file:///srv/fruits/outputs/pca_csv" in uris


@pytest.mark.parametrize(
    ("conf", "field"),
    [
        ({"batch_id": "has/slash"}, "batch_id"),
        ({"k": 0}, "k"),
        ({"k": 5000}, "k"),
        ({"variance": 1.5}, "variance"),
        ({"variance": 0}, "variance"),
        ({"full_recompute": "yes"}, "full_recompute"),
        ({"image_source": ""}, "image_source"),
    ],
)
def test_trigger_form_refuses_bad_values(load_dag, conf, field):
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(load_dag("fruits_local").params)
    with pytest.raises(ParamValidationError, match=field):
        for name, value in conf.items():
            params[name] = value
        params.validate()


def test_trigger_form_accepts_good_values(load_dag):
    params = copy.deepcopy(load_dag("fruits_emr").params)
    for name, value in {"batch_id": "2026-11-24", "k": 50, "dry_run": True}.items():
        params[name] = value
    assert params.validate()["k"] == 50


def test_non_eu_region_is_refused_when_the_dag_is_parsed():
    """A fresh interpreter parses the DAG file with FRUITS_REGION=us-east-1."""
    code = (
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(ROOT / 'dags' / 'fruits_emr.py')!r})\n"
        "print(list(bag.import_errors.values())[0].splitlines()[-1])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "FRUITS_REGION": "us-east-1"},
        check=True,
    )
    assert "region 'us-east-1' is outside the EU" in result.stdout
    assert "GDPR" in result.stdout
