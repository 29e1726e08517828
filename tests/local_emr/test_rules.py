"""The stand-in's ``RunJobFlow`` rules, on moto's IAM, EC2 and S3 (AWS is unreachable).

The account is made by the project's own ``make aws-bootstrap`` (:class:`Bootstrap`) and the
request by :mod:`fruits_pipeline.cluster`: what the pipeline sends is accepted, and each way
of breaking one rule gives exactly one refusal, with EMR's code and kind of message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from fruits_pipeline import cluster
from fruits_pipeline.aws_bootstrap import Bootstrap, Names
from fruits_pipeline.config import Settings
from local_emr import rules
from local_emr.rules import BOOTSTRAP_FAILURE, VALIDATION_ERROR
from tests.pipeline.test_aws_bootstrap import BUCKET, first_version_account

REGION = "eu-west-1"
NAMES = Names(BUCKET)
CODE_URI = f"s3://{BUCKET}/code/v1"
TAG = {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}
Change = Callable[[dict[str, Any], dict[str, Any]], None]
"""Breaks one rule: changes the request, or the account behind the clients."""


@pytest.fixture(scope="module")
def bootstrapped() -> Iterator[dict[str, Any]]:
    """One account after ``make aws-bootstrap``, with the bootstrap script uploaded."""
    with pytest.MonkeyPatch.context() as env:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.setenv(key, "testing")
        env.setenv("AWS_DEFAULT_REGION", REGION)
        with mock_aws(config={"iam": {"load_aws_managed_policies": True}}):
            clients = {n: boto3.client(n, region_name=REGION) for n in ("iam", "ec2", "s3")}
            bootstrap(clients)
            script = f"code/v1/{cluster.BOOTSTRAP_KEY}"
            clients["s3"].put_object(Bucket=BUCKET, Key=script, Body=b"#!/bin/bash\n")
            yield clients


@pytest.fixture
def account(bootstrapped: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The bootstrapped account; whatever a test breaks, ``make aws-bootstrap`` repairs after."""
    yield bootstrapped
    bootstrap(bootstrapped)


def bootstrap(clients: dict[str, Any]) -> None:
    """``make aws-bootstrap``, then without its TLS-only bucket policy: moto ignores the
    policy's condition (its documented limit) and would deny every object call, as in
    tests/pipeline/test_aws_bootstrap.py."""
    Bootstrap(NAMES).up()
    clients["s3"].delete_bucket_policy(Bucket=BUCKET)


def pipeline_request(**settings: Any) -> dict[str, Any]:
    return cluster.job_flow_overrides(
        Settings(bucket=BUCKET, **settings), "b1", CODE_URI, f"s3://{BUCKET}/code/node-env/e.tar.gz"
    )


def check(account: dict[str, Any], request: dict[str, Any]) -> list[rules.Refusal]:
    return rules.refusals(request, **account, region=REGION)


def test_the_pipelines_request_on_a_bootstrapped_account_is_accepted(bootstrapped):
    assert check(bootstrapped, pipeline_request()) == []


def test_the_first_versions_request_and_account_are_refused_until_repaired(account):
    first_version_account(account)
    account["s3"].delete_bucket_policy(Bucket=BUCKET)
    old = pipeline_request(job_flow_role=NAMES.legacy_instance_profile)
    old["Tags"].remove(TAG)
    del old["EbsRootVolumeSize"]
    found = check(account, old)
    assert [code for code, _ in found] == [VALIDATION_ERROR] * 4 + [BOOTSTRAP_FAILURE]
    messages = "\n".join(message for _, message in found)
    assert f"instance profile {NAMES.legacy_instance_profile} is invalid" in messages
    assert "the request lacks the tag for-use-with-amazon-emr-managed-policies=true" in messages
    assert "(ElasticMapReduce-master) lacks the tag" in messages
    assert "(ElasticMapReduce-slave) lacks the tag" in messages
    assert "No space left on device (root volume 15 GiB" in messages
    bootstrap(account)
    assert check(account, pipeline_request()) == []


def default_vpc(ec2: Any) -> str:
    return ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0][
        "VpcId"
    ]


def untag_a_subnet(request: dict[str, Any], account: dict[str, Any]) -> None:
    ec2 = account["ec2"]
    in_vpc = [{"Name": "vpc-id", "Values": [default_vpc(ec2)]}]
    subnet = ec2.describe_subnets(Filters=in_vpc)["Subnets"][0]["SubnetId"]
    ec2.delete_tags(Resources=[subnet], Tags=[TAG])


def emr_groups(ec2: Any) -> list[dict[str, Any]]:
    """The default EMR security groups in the default VPC (earlier tests may have made them)."""
    return ec2.describe_security_groups(
        Filters=[
            {"Name": "vpc-id", "Values": [default_vpc(ec2)]},
            {"Name": "group-name", "Values": list(rules.DEFAULT_GROUPS)},
        ]
    )["SecurityGroups"]


def add_an_old_emr_group(request: dict[str, Any], account: dict[str, Any]) -> None:
    ec2 = account["ec2"]
    master = [g for g in emr_groups(ec2) if g["GroupName"] == "ElasticMapReduce-master"]
    if master:
        ec2.delete_tags(Resources=[master[0]["GroupId"]], Tags=[TAG])
    else:
        ec2.create_security_group(
            GroupName="ElasticMapReduce-master", Description="2019", VpcId=default_vpc(ec2)
        )


def untag_the_vpc(request: dict[str, Any], account: dict[str, Any]) -> None:
    ec2 = account["ec2"]
    for group in emr_groups(ec2):  # none yet: EMR must create them
        ec2.delete_security_group(GroupId=group["GroupId"])
    ec2.delete_tags(Resources=[default_vpc(ec2)], Tags=[TAG])


def profile_named_otherwise(request: dict[str, Any], account: dict[str, Any]) -> None:
    account["iam"].create_instance_profile(InstanceProfileName="fruits-nodes")
    account["iam"].add_role_to_instance_profile(
        InstanceProfileName="fruits-nodes", RoleName=NAMES.ec2_role
    )
    request["JobFlowRole"] = "fruits-nodes"


def no_pass_role(request: dict[str, Any], account: dict[str, Any]) -> None:
    role = NAMES.service_role
    account["iam"].delete_role_policy(RoleName=role, PolicyName=role)


def no_emr_policy(request: dict[str, Any], account: dict[str, Any]) -> None:
    account["iam"].detach_role_policy(
        RoleName=NAMES.service_role, PolicyArn=rules.SERVICE_POLICY_V2
    )


def service_role_for_ec2(request: dict[str, Any], account: dict[str, Any]) -> None:
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    account["iam"].update_assume_role_policy(
        RoleName=NAMES.service_role, PolicyDocument=json.dumps(trust)
    )


def setting(key: str, value: Any) -> Change:
    def change(request: dict[str, Any], account: dict[str, Any]) -> None:
        request[key] = value

    return change


def core_type(kind: str) -> Change:
    def change(request: dict[str, Any], account: dict[str, Any]) -> None:
        request["Instances"]["InstanceGroups"][1]["InstanceType"] = kind

    return change


def untagged_request(request: dict[str, Any], account: dict[str, Any]) -> None:
    request["Tags"].remove(TAG)


def default_root_volume(request: dict[str, Any], account: dict[str, Any]) -> None:
    del request["EbsRootVolumeSize"]


def missing_script(request: dict[str, Any], account: dict[str, Any]) -> None:
    action = request["BootstrapActions"][0]["ScriptBootstrapAction"]
    action["Path"] = f"{CODE_URI}/bootstrap/not-uploaded.sh"


BROKEN_REQUESTS = [
    # EMR Release Guide, "Amazon EMR 7.x releases".
    pytest.param(
        setting("ReleaseLabel", "emr-7.99.0"),
        VALIDATION_ERROR,
        "release label emr-7.99.0 is not",
        id="release-label",
    ),
    # EMR API Reference, AutoTerminationPolicy: IdleTimeout 60..604800 s.
    pytest.param(
        setting("AutoTerminationPolicy", {"IdleTimeout": 59}),
        VALIDATION_ERROR,
        "Value '59' at 'autoTerminationPolicy.idleTimeout' failed to satisfy constraint",
        id="idle-timeout-short",
    ),
    pytest.param(
        setting("AutoTerminationPolicy", {"IdleTimeout": 604801}),
        VALIDATION_ERROR,
        "Value '604801' at 'autoTerminationPolicy.idleTimeout'",
        id="idle-timeout-long",
    ),
    # EMR Management Guide, "Supported instance types with Amazon EMR".
    pytest.param(
        core_type("x9.huge"),
        VALIDATION_ERROR,
        "instance type x9.huge is not supported in eu-west-1",
        id="instance-type",
    ),
    # EMR Management Guide, "Customizing the Amazon EBS root device volume": 15..100 GiB.
    pytest.param(
        setting("EbsRootVolumeSize", 101),
        VALIDATION_ERROR,
        "root volume size 101 GiB is not valid",
        id="root-volume-range",
    ),
    pytest.param(
        default_root_volume,
        BOOTSTRAP_FAILURE,
        r"No space left on device \(root volume 15 GiB",
        id="root-volume-for-bootstrap",
    ),
    # EMR Management Guide, "Tagging resources to use managed policies".
    pytest.param(
        untagged_request,
        VALIDATION_ERROR,
        "insufficient EC2 permissions: the request lacks the tag",
        id="request-tag",
    ),
    # EMR Management Guide, "Create bootstrap actions to install additional software".
    pytest.param(
        missing_script,
        BOOTSTRAP_FAILURE,
        "download bootstrap action 1 file from S3: s3://",
        id="bootstrap-script",
    ),
    # EMR Management Guide, "Service role for Amazon EMR" and "Customize IAM roles".
    pytest.param(
        setting("ServiceRole", "nope"),
        VALIDATION_ERROR,
        "^Service role nope does not exist$",
        id="service-role",
    ),
    pytest.param(
        setting("JobFlowRole", "nope"),
        VALIDATION_ERROR,
        r"^Invalid InstanceProfile: nope\.$",
        id="instance-profile",
    ),
]
BROKEN_ACCOUNTS = [
    # EMR Management Guide, "Tagging resources to use managed policies".
    pytest.param(
        untag_a_subnet,
        VALIDATION_ERROR,
        r"permissions: subnet subnet-\w+ lacks the tag",
        id="subnet-tag",
    ),
    pytest.param(
        add_an_old_emr_group,
        VALIDATION_ERROR,
        r"security group sg-\w+ \(ElasticMapReduce-master\) lacks the tag",
        id="security-group-tag",
    ),
    pytest.param(
        untag_the_vpc,
        VALIDATION_ERROR,
        r"VPC vpc-\w+, where EMR must create its security groups",
        id="vpc-tag",
    ),
    # EMR Management Guide, "Customize IAM roles with Amazon EMR"; "Service role for EMR".
    pytest.param(
        profile_named_otherwise,
        VALIDATION_ERROR,
        "instance profile fruits-nodes is invalid: it holds fruits-emr-ec2-role",
        id="profile-named-as-role",
    ),
    pytest.param(
        no_pass_role,
        VALIDATION_ERROR,
        "may not pass role arn:aws:iam::.*:role/fruits-emr-ec2-role",
        id="pass-role",
    ),
    pytest.param(
        no_emr_policy,
        VALIDATION_ERROR,
        "^Service role fruits-emr-service-role has insufficient EC2 permissions$",
        id="service-policy",
    ),
    pytest.param(
        service_role_for_ec2,
        VALIDATION_ERROR,
        "fruits-emr-service-role cannot be assumed by EMR",
        id="service-role-trust",
    ),
]


def only_refusal(account: dict[str, Any], breaks: Change) -> rules.Refusal:
    request = pipeline_request()
    breaks(request, account)
    (refusal,) = check(account, request)
    return refusal


@pytest.mark.parametrize(("breaks", "code", "message"), BROKEN_REQUESTS)
def test_each_broken_request_rule_is_one_refusal_with_emrs_code(
    bootstrapped, breaks, code, message
):
    refusal = only_refusal(bootstrapped, breaks)
    assert refusal.code == code
    assert re.search(message, refusal.message), refusal.message


@pytest.mark.parametrize(("breaks", "code", "message"), BROKEN_ACCOUNTS)
def test_each_broken_account_rule_is_one_refusal_with_emrs_code(account, breaks, code, message):
    refusal = only_refusal(account, breaks)
    assert refusal.code == code
    assert re.search(message, refusal.message), refusal.message
