"""``make aws-bootstrap`` / ``aws-teardown`` against moto's S3, IAM and EC2 (AWS is unreachable)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from fruits_pipeline import aws_bootstrap
from fruits_pipeline.aws_bootstrap import EMR_SERVICE_POLICY, Bootstrap, Names
from fruits_pipeline.cluster import EMR_MANAGED_POLICY_TAG
from fruits_pipeline.config import Settings

BUCKET = "fruits-bootstrap-test"
NAMES = Names(BUCKET)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    # moto only knows AWS managed policies (AmazonEMRServicePolicy_v2) when asked to load them.
    with mock_aws(config={"iam": {"load_aws_managed_policies": True}}):
        yield {name: boto3.client(name, region_name="eu-west-1") for name in ("s3", "iam", "ec2")}


def state(aws: dict[str, Any]) -> dict[str, Any]:
    """Everything ``up`` manages, read back through the AWS APIs."""
    s3, iam = aws["s3"], aws["iam"]
    roles = {}
    for role in (NAMES.service_role, NAMES.ec2_role):
        roles[role] = {
            "trust": iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"],
            "inline": iam.get_role_policy(RoleName=role, PolicyName=role)["PolicyDocument"],
            "managed": sorted(
                p["PolicyArn"]
                for p in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
            ),
        }
    profile = iam.get_instance_profile(InstanceProfileName=NAMES.instance_profile)
    tags = aws["ec2"].describe_tags(
        Filters=[{"Name": "key", "Values": [EMR_MANAGED_POLICY_TAG["Key"]]}]
    )
    return {
        "location": s3.get_bucket_location(Bucket=BUCKET)["LocationConstraint"],
        "encryption": s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"],
        "public": s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"],
        "policy": json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"]),
        "lifecycle": s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"],
        "roles": roles,
        "profile": [r["RoleName"] for r in profile["InstanceProfile"]["Roles"]],
        "tagged": sorted(t["ResourceId"] for t in tags["Tags"]),
    }


def test_up_creates_an_encrypted_private_tls_only_bucket_with_log_expiry(aws):
    outcomes = Bootstrap(NAMES).up()
    assert set(outcomes.values()) <= {"created", "updated"}, outcomes
    got = state(aws)
    assert got["location"] == "eu-west-1"
    rule = got["encryption"]["Rules"][0]["ApplyServerSideEncryptionByDefault"]
    assert rule["SSEAlgorithm"] == "AES256"
    assert got["public"] == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    (deny,) = got["policy"]["Statement"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    logs = next(r for r in got["lifecycle"] if r["ID"] == "expire-emr-logs")
    assert logs["Expiration"] == {"Days": 30} and logs["Filter"] == {"Prefix": "emr-logs/"}


def test_up_scopes_the_node_role_to_the_bucket_and_the_service_role_to_our_node_role(aws):
    Bootstrap(NAMES).up()
    roles = state(aws)["roles"]
    node = roles[NAMES.ec2_role]
    assert node["managed"] == []
    assert node["trust"]["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    resources = [s["Resource"] for s in node["inline"]["Statement"]]
    assert resources == [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"]
    actions = {a for s in node["inline"]["Statement"] for a in s["Action"]}
    assert not any(a.endswith("*") for a in actions), actions
    # EMRFS writes big objects in parts and lists them (EMR Management Guide, "Creating a
    # service role for cluster EC2 instances with least-privilege permissions").
    assert {"s3:ListBucketMultipartUploads", "s3:ListMultipartUploadParts"} <= actions
    service = roles[NAMES.service_role]
    assert service["managed"] == [EMR_SERVICE_POLICY]
    (pass_role,) = service["inline"]["Statement"]
    node_arn = aws["iam"].get_role(RoleName=NAMES.ec2_role)["Role"]["Arn"]
    assert pass_role["Action"] == "iam:PassRole" and pass_role["Resource"] == node_arn
    assert state(aws)["profile"] == [NAMES.ec2_role]


def default_vpc(aws: dict[str, Any]) -> str:
    vpcs = aws["ec2"].describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])
    return vpcs["Vpcs"][0]["VpcId"]


def old_emr_security_groups(aws: dict[str, Any]) -> list[str]:
    """The untagged groups EMR left in the default VPC before AmazonEMRServicePolicy_v2."""
    return [
        aws["ec2"].create_security_group(
            GroupName=name, Description=f"{name} (EMR, 2019)", VpcId=default_vpc(aws)
        )["GroupId"]
        for name in ("ElasticMapReduce-master", "ElasticMapReduce-slave")
    ]


def test_up_tags_the_default_network_for_the_emr_managed_policy(aws):
    # AmazonEMRServicePolicy_v2 (statement CreateInTaggedNetwork) launches only into subnets
    # and security groups tagged for-use-with-amazon-emr-managed-policies=true.
    groups = old_emr_security_groups(aws)
    other = aws["ec2"].create_security_group(
        GroupName="web", Description="not EMR's", VpcId=default_vpc(aws)
    )["GroupId"]
    Bootstrap(NAMES).up()
    vpc = default_vpc(aws)
    subnets = aws["ec2"].describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])
    expected = sorted([vpc, *(s["SubnetId"] for s in subnets["Subnets"]), *groups])
    assert len(expected) > 3
    assert state(aws)["tagged"] == expected
    assert other not in state(aws)["tagged"]


def test_instance_profile_is_named_as_its_role(aws):
    # EMR Management Guide, "Customize IAM roles with Amazon EMR": the EC2 instance profile
    # and its role must share one name, or RunJobFlow fails with an invalid instance profile.
    Bootstrap(NAMES).up()
    profile = aws["iam"].get_instance_profile(InstanceProfileName=NAMES.instance_profile)
    (role,) = profile["InstanceProfile"]["Roles"]
    assert role["RoleName"] == profile["InstanceProfile"]["InstanceProfileName"]
    assert Settings().job_flow_role == role["RoleName"]


def first_version_account(aws: dict[str, Any]) -> None:
    """What the first ``make aws-bootstrap`` left: profile ``fruits-emr-ec2-profile``, a node
    policy without the multipart listings, EMR's old security groups untagged."""
    Bootstrap(NAMES).up()
    iam, role, legacy = aws["iam"], NAMES.ec2_role, NAMES.legacy_instance_profile
    iam.remove_role_from_instance_profile(InstanceProfileName=role, RoleName=role)
    iam.delete_instance_profile(InstanceProfileName=role)
    iam.create_instance_profile(InstanceProfileName=legacy)
    iam.add_role_to_instance_profile(InstanceProfileName=legacy, RoleName=role)
    policy = aws_bootstrap.node_policy(BUCKET)
    for statement in policy["Statement"]:
        statement["Action"] = [a for a in statement["Action"] if "Multipart" not in a]
    iam.put_role_policy(RoleName=role, PolicyName=role, PolicyDocument=json.dumps(policy))
    old_emr_security_groups(aws)


def test_up_repairs_an_account_bootstrapped_by_the_first_version(aws, capsys, caplog):
    first_version_account(aws)
    legacy = NAMES.legacy_instance_profile
    assert aws_bootstrap.main(["up", "--bucket", BUCKET]) == 0
    assert f"set FRUITS_JOB_FLOW_ROLE={NAMES.ec2_role} wherever it named the old" in caplog.text
    changed = {
        resource.strip(): outcome
        for line in capsys.readouterr().out.splitlines()
        if not line.startswith(("export", "#")) and line.strip()
        for resource, outcome in [line.rsplit(" ", 1)]
        if outcome != "unchanged"
    }
    assert changed == {
        "EC2 role": "updated",
        "instance profile": "created",
        f"old instance profile {legacy}": "deleted",
        "default VPC tags": "updated",
    }
    profiles = aws["iam"].list_instance_profiles()["InstanceProfiles"]
    assert [p["InstanceProfileName"] for p in profiles] == [NAMES.ec2_role]
    assert set(Bootstrap(NAMES).up().values()) == {"unchanged"}


def test_up_leaves_an_old_named_profile_holding_another_role(aws):
    aws["iam"].create_role(RoleName="someone-else", AssumeRolePolicyDocument="{}")
    aws["iam"].create_instance_profile(InstanceProfileName=NAMES.legacy_instance_profile)
    aws["iam"].add_role_to_instance_profile(
        InstanceProfileName=NAMES.legacy_instance_profile, RoleName="someone-else"
    )
    assert f"old instance profile {NAMES.legacy_instance_profile}" not in Bootstrap(NAMES).up()
    aws["iam"].get_instance_profile(InstanceProfileName=NAMES.legacy_instance_profile)


def test_second_up_changes_nothing(aws):
    Bootstrap(NAMES).up()
    before = state(aws)
    outcomes = Bootstrap(NAMES).up()
    assert set(outcomes.values()) == {"unchanged"}, outcomes
    assert state(aws) == before


def test_up_repairs_drift_and_reports_only_what_it_changed(aws):
    Bootstrap(NAMES).up()
    aws["s3"].delete_public_access_block(Bucket=BUCKET)
    aws["iam"].detach_role_policy(RoleName=NAMES.service_role, PolicyArn=EMR_SERVICE_POLICY)
    outcomes = Bootstrap(NAMES).up()
    changed = {name: outcome for name, outcome in outcomes.items() if outcome != "unchanged"}
    assert changed == {"public access block": "created", "EMR service role": "updated"}
    assert state(aws)["roles"][NAMES.service_role]["managed"] == [EMR_SERVICE_POLICY]


def test_up_prints_settings_the_pipeline_accepts(aws, capsys):
    assert aws_bootstrap.main(["up", "--bucket", BUCKET]) == 0
    out = capsys.readouterr().out
    exports = [
        line.removeprefix("export ") for line in out.splitlines() if line.startswith("export ")
    ]
    settings = Settings.from_env(dict(line.split("=", 1) for line in exports))
    assert settings.bucket == BUCKET and settings.region == "eu-west-1"
    assert settings.service_role == NAMES.service_role
    assert settings.job_flow_role == NAMES.instance_profile
    aws["iam"].get_instance_profile(InstanceProfileName=settings.job_flow_role)


@pytest.mark.parametrize("region", ["us-east-1", "eu-central-9x"])
def test_non_eu_region_is_refused_before_any_call(aws, capsys, region):
    assert aws_bootstrap.main(["up", "--bucket", BUCKET, "--region", region]) == 2
    assert region in capsys.readouterr().err
    assert aws["s3"].list_buckets()["Buckets"] == []


def test_a_bucket_in_another_region_is_refused(aws, capsys):
    boto3.client("s3", region_name="eu-central-1").create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"}
    )
    assert aws_bootstrap.main(["up", "--bucket", BUCKET]) == 2
    assert f"bucket {BUCKET} is in eu-central-1, not eu-west-1" in capsys.readouterr().err
    with pytest.raises(aws["iam"].exceptions.NoSuchEntityException):
        aws["iam"].get_role(RoleName=NAMES.service_role)


def test_teardown_asks_first_and_keeps_the_data_unless_told(aws, capsys):
    # moto ignores policy conditions (its documented limit), so once ``up`` set the TLS-only
    # Deny, it denies every object call: the data goes in first, the policy out before deleting.
    Bootstrap(NAMES).up()
    aws["s3"].delete_bucket_policy(Bucket=BUCKET)
    aws["s3"].put_object(Bucket=BUCKET, Key="outputs/features/x.parquet", Body=b"data")
    Bootstrap(NAMES).up()
    assert aws_bootstrap.main(["down", "--bucket", BUCKET], ask=lambda _: "n") == 1
    aws["iam"].get_role(RoleName=NAMES.ec2_role)  # still there

    questions: list[str] = []
    answer = lambda question: questions.append(question) or "y"  # noqa: E731
    assert aws_bootstrap.main(["down", "--bucket", BUCKET], ask=answer) == 0
    assert BUCKET in questions[0] and "DATA" not in questions[0]
    out = capsys.readouterr().out
    assert f"kept bucket {BUCKET}" in out
    assert aws["iam"].list_roles()["Roles"] == []
    assert aws["iam"].list_instance_profiles()["InstanceProfiles"] == []
    assert state_tags(aws) == []
    assert aws["s3"].list_objects_v2(Bucket=BUCKET)["KeyCount"] == 1

    aws["s3"].delete_bucket_policy(Bucket=BUCKET)
    assert aws_bootstrap.main(["down", "--bucket", BUCKET, "--delete-data", "--yes"]) == 0
    assert aws["s3"].list_buckets()["Buckets"] == []
    assert "deleted bucket" in capsys.readouterr().out


def state_tags(aws: dict[str, Any]) -> list[dict[str, str]]:
    filters = [{"Name": "key", "Values": [EMR_MANAGED_POLICY_TAG["Key"]]}]
    return aws["ec2"].describe_tags(Filters=filters)["Tags"]


def test_default_settings_name_what_the_default_bootstrap_creates():
    defaults = Settings()
    assert (defaults.service_role, defaults.job_flow_role) == (
        NAMES.service_role,
        NAMES.instance_profile,
    )
