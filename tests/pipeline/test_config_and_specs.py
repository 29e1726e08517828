"""Settings, the EU rule, the cost guard, and the cluster/step specs built from them."""

from __future__ import annotations

import doctest

import pytest

from fruits_jobs import contract
from fruits_pipeline import cluster, config, operators, planner, steps
from fruits_pipeline.config import RegionError, Settings
from fruits_pipeline.preflight import cost_problems


@pytest.mark.parametrize("module", [contract, config, operators, steps])
def test_docstring_examples_hold(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("region", ["us-east-1", "ap-south-1", "eu-west-9", ""])
def test_regions_outside_the_eu_are_refused_with_the_rule(region):
    with pytest.raises(RegionError, match=f"region '{region}' is outside the EU: .*GDPR"):
        Settings(region=region)


def test_settings_come_from_airflow_variables_before_plain_env():
    settings = Settings.from_env(
        {
            "AIRFLOW_VAR_FRUITS_BUCKET": "from-variable",
            "FRUITS_BUCKET": "from-env",
            "FRUITS_CORE_INSTANCE_COUNT": "4",
            "FRUITS_USE_SPOT": "true",
            "FRUITS_MAX_COST_EUR": "2.5",
        }
    )
    assert (settings.bucket, settings.core_instance_count) == ("from-variable", 4)
    assert settings.use_spot is True and settings.max_cost_eur == 2.5
    assert settings.region == "eu-west-1"


def test_hourly_cost_is_instances_times_prices_and_spot_saves_on_core_nodes():
    on_demand = Settings(core_instance_count=2)
    per_node = config.EC2_EUR_PER_HOUR["m5.xlarge"] + config.EMR_EUR_PER_HOUR["m5.xlarge"]
    assert on_demand.cluster_eur_per_hour() > 3 * per_node
    spot = Settings(core_instance_count=2, use_spot=True)
    saving = 2 * config.EC2_EUR_PER_HOUR["m5.xlarge"] * config.SPOT_DISCOUNT
    assert spot.cluster_eur_per_hour() == pytest.approx(on_demand.cluster_eur_per_hour() - saving)
    assert on_demand.cluster_eur_per_hour(spot=True) == spot.cluster_eur_per_hour()


def test_cost_counts_each_nodes_public_ipv4_address_and_ebs_volumes():
    # Public IPv4 bills USD 0.005/h per address (Amazon VPC pricing); EMR gives an EBS-only
    # m5.xlarge 64 GiB of data volumes besides the root volume (EMR Management Guide,
    # "Instance storage"). Together a few cents an hour for the default three nodes.
    small, big = Settings(root_volume_gib=15), Settings(root_volume_gib=100)
    per_node = config.EC2_EUR_PER_HOUR["m5.xlarge"] + config.EMR_EUR_PER_HOUR["m5.xlarge"]
    extras = small.cluster_eur_per_hour() - 3 * per_node
    ebs = 3 * (15 + 64) * config.EBS_EUR_PER_GIB_MONTH / config.HOURS_PER_MONTH
    assert extras == pytest.approx(3 * config.PUBLIC_IPV4_EUR_PER_HOUR + ebs, abs=1e-4)
    assert 0.02 < extras < 0.1
    more_root = 3 * 85 * config.EBS_EUR_PER_GIB_MONTH / config.HOURS_PER_MONTH
    assert big.cluster_eur_per_hour() - small.cluster_eur_per_hour() == pytest.approx(
        more_root, abs=1e-4
    )


def test_cost_guard_names_the_estimate_its_parts_and_the_limit():
    assert cost_problems(Settings(), images=1000) == []
    (problem,) = cost_problems(Settings(core_instance_count=20), images=50_000_000)
    assert "exceeds max_cost_eur 10.00" in problem and "on 21 x m5.xlarge" in problem
    assert "50000000 images on 79 vCPUs" in problem
    assert f"bootstrap {planner.BOOTSTRAP_S / 60:.1f} + " in problem


def test_unknown_instance_type_is_refused():
    with pytest.raises(ValueError, match=r"'x9\.huge' has no price"):
        Settings(core_instance_type="x9.huge")


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        # AutoTerminationPolicy.IdleTimeout: 60 to 604800 s (EMR API Reference).
        ("idle_timeout_s", 59, "idle_timeout_s must be 60..604800, got 59"),
        ("idle_timeout_s", 604801, "idle_timeout_s must be 60..604800, got 604801"),
        # EbsRootVolumeSize: 15 (the default since EMR 6.10.0) to 100 GiB (EMR Management
        # Guide, "Customizing the Amazon EBS root device volume").
        ("root_volume_gib", 10, "root_volume_gib must be 15..100, got 10"),
        ("root_volume_gib", 101, "root_volume_gib must be 15..100, got 101"),
    ],
)
def test_settings_emr_would_refuse_are_refused_at_once(setting, value, message):
    with pytest.raises(ValueError, match=message):
        Settings(**{setting: value})


def test_cluster_request_is_eu_bounded_and_tagged():
    settings = Settings(bucket="lake", use_spot=True, idle_timeout_s=900)
    env = "s3://lake/code/node-env/python-0123456789ab.tar.gz"
    request = cluster.job_flow_overrides(settings, "2026-11-24", "s3://lake/code/abc", env)
    assert request["LogUri"] == "s3://lake/emr-logs/"
    assert request["AutoTerminationPolicy"] == {"IdleTimeout": 900}
    groups = {g["InstanceRole"]: g for g in request["Instances"]["InstanceGroups"]}
    assert groups["MASTER"]["Market"] == "ON_DEMAND" and groups["CORE"]["Market"] == "SPOT"
    assert request["BootstrapActions"][0]["ScriptBootstrapAction"] == {
        "Path": "s3://lake/code/abc/bootstrap/install_python_deps.sh",
        "Args": [env],
    }
    env = request["Configurations"][0]["Configurations"][0]["Properties"]
    assert env["PYSPARK_PYTHON"] == config.EMR_PYTHON


def test_cluster_request_has_the_managed_policy_tag_and_room_for_the_bootstrap():
    request = cluster.job_flow_overrides(
        Settings(bucket="lake"), "b1", "s3://lake/code/abc", "s3://lake/code/node-env/e.tar.gz"
    )
    # AmazonEMRServicePolicy_v2 creates instances, volumes and launch templates only for a
    # request tagged so (EMR Management Guide, "Tagging resources to use managed policies").
    tag = {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}
    assert tag in request["Tags"]
    # EMR's default root volume is 15 GiB; the node environment (1.9 GB unpacked, beside its
    # download) needs more.
    assert request["EbsRootVolumeSize"] == Settings().root_volume_gib > 15
    # The instance profile must be named as its role (fruits_pipeline.aws_bootstrap.Names).
    assert request["JobFlowRole"] == "fruits-emr-ec2-role"


def test_emr_and_local_targets_share_the_job_arguments():
    args = steps.featurize_args("/lake", "/out", "imagenet", "b1")
    local = steps.SparkTarget("/code", ("spark-submit", "--master", "local[*]"))
    emr = steps.emr_target("s3://lake/code/v1", "/usr/bin/python3.11")
    assert local.command("featurize", args)[-len(args) :] == args
    step = steps.emr_step("featurize", emr, args)
    command = step["HadoopJarStep"]["Args"]
    assert command[-len(args) - 1 :] == ["s3://lake/code/v1/featurize.py", *args]
    assert command[command.index("--py-files") + 1] == "s3://lake/code/v1/fruits_jobs.zip"
    assert step["ActionOnFailure"] == "CONTINUE"


def test_step_builders_refuse_ambiguous_or_bad_input():
    with pytest.raises(ValueError, match="exactly one of k or variance"):
        steps.pca_args("/out", k=3, variance=0.9)
    with pytest.raises(ValueError, match="invalid batch id 'a/b'"):
        steps.featurize_args("/lake", "/out", "imagenet", "a/b")
    with pytest.raises(ValueError, match="unknown job 'train'"):
        steps.SparkTarget("/code", ("spark-submit",)).command("train", [])
