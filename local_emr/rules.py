"""What EMR and IAM enforce on ``RunJobFlow`` and moto does not: the stand-in's cluster rules.

:func:`refusals` reads one ``RunJobFlow`` request, as boto3 keyword arguments (what
``EmrCreateJobFlowOperator`` sends: its ``job_flow_overrides``), against the account behind
the given IAM, EC2 and S3 clients, and returns what EMR would refuse, as :class:`Refusal`
pairs ``(code, message)``; an empty list means EMR would launch the cluster.

* ``code`` is what EMR puts in the cluster's ``Status.StateChangeReason.Code``:
  :data:`VALIDATION_ERROR` for a request EMR cannot launch, :data:`BOOTSTRAP_FAILURE` for one
  whose bootstrap actions would fail on the nodes. Validation errors come first, as on EMR.
* ``message`` is EMR's kind of ``StateChangeReason.Message``.

The stand-in ends a refused cluster ``TERMINATED_WITH_ERRORS`` with the first refusal
(``code, message = refusals(...)[0]``); :func:`launch_refusals` (when the cluster starts) and
:func:`bootstrap_refusals` (when its nodes bootstrap) split them by the moment EMR finds
them. On AWS a few of these (an unknown instance profile, an idle timeout out of range) are
refused by the ``RunJobFlow`` call itself rather than by the cluster; either way the DAG's
task log names the problem. Each rule cites where AWS documents it. IAM policies are read,
not evaluated: conditions are not checked, and only ``iam:PassRole`` is looked for statement
by statement.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator
from typing import Any, NamedTuple
from urllib.parse import unquote

from botocore.exceptions import ClientError

from fruits_pipeline.config import EC2_EUR_PER_HOUR, EMR_EUR_PER_HOUR

VALIDATION_ERROR = "VALIDATION_ERROR"
BOOTSTRAP_FAILURE = "BOOTSTRAP_FAILURE"

MANAGED_POLICY_TAG = ("for-use-with-amazon-emr-managed-policies", "true")
"""The tag ``AmazonEMRServicePolicy_v2`` needs on the request, its subnet and security groups.

Statement ``CreateInTaggedNetwork`` of the policy document allows ``ec2:RunInstances``,
``ec2:CreateFleet`` and launch templates only on subnets and security groups carrying it, and
the instances, volumes and templates EMR creates only with it in the request (EMR Management
Guide, "Tagging resources to use managed policies"). Written out here, not imported, so a
wrong tag in the pipeline cannot agree with itself."""
SERVICE_POLICY_V2 = "arn:aws:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"
SERVICE_POLICY_V1 = "arn:aws:iam::aws:policy/service-role/AmazonElasticMapReduceRole"
"""The deprecated service policy: no tag conditions, but EC2 rights on every resource."""
DEFAULT_GROUPS = ("ElasticMapReduce-master", "ElasticMapReduce-slave")
"""The security groups EMR uses in a public subnet when the request names none. EMR creates
them, tagged, only in a VPC carrying the tag (policy statements
``CreateDefaultSecurityGroupInVPCWithEMRTags`` and ``CreateDefaultSecurityGroupWithEMRTags``);
older ones, created before the v2 policy, are untagged."""

RELEASES = frozenset(f"emr-7.{minor}.0" for minor in range(13))
"""EMR 7.x release labels, ``emr-7.0.0`` to ``emr-7.12.0`` (EMR Release Guide, "Amazon EMR 7.x
releases"); ``ListReleaseLabels`` answers this on AWS, and moto does not know it."""
IDLE_TIMEOUT_S = (60, 604800)
"""``AutoTerminationPolicy.IdleTimeout`` bounds, 60 s to 7 days (EMR API Reference,
``AutoTerminationPolicy``)."""
ROOT_GIB_DEFAULT = 15
ROOT_GIB_MAX = 100
"""``EbsRootVolumeSize``: 15 GiB by default and at least, since EMR 6.10.0, up to 100 GiB (EMR
Management Guide, "Customizing the Amazon EBS root device volume")."""
BOOTSTRAP_ROOT_GIB = 25
"""The root volume the project's bootstrap action needs: the project's margin, not an AWS
figure. It installs TensorFlow (about 2 GiB installed, its wheel unpacked under /tmp while
pip runs) beside what EMR's applications and logs already take of the root volume, which the
15 GiB default leaves too little room for; below this the stand-in fails the bootstrap as
the full disk would."""


class Refusal(NamedTuple):
    """One thing EMR would refuse: ``StateChangeReason``'s ``Code`` and ``Message``."""

    code: str
    message: str


def refusals(request: dict[str, Any], *, iam: Any, ec2: Any, s3: Any, region: str) -> list[Refusal]:
    """Everything EMR would refuse in ``request``, validation errors first; empty: accepted.

    :func:`launch_refusals`, then :func:`bootstrap_refusals` (S3 ``HeadObject``).
    """
    return [
        *launch_refusals(request, iam=iam, ec2=ec2, region=region),
        *bootstrap_refusals(request, s3),
    ]


def launch_refusals(request: dict[str, Any], *, iam: Any, ec2: Any, region: str) -> list[Refusal]:
    """The :data:`VALIDATION_ERROR` refusals: what stops EMR before it starts a node.

    Calls IAM ``GetRole``, ``GetInstanceProfile``, ``ListAttachedRolePolicies``,
    ``ListRolePolicies``/``GetRolePolicy``, ``GetPolicy``/``GetPolicyVersion``; EC2
    ``DescribeVpcs``, ``DescribeSubnets``, ``DescribeSecurityGroups``.
    """
    return [
        *request_refusals(request, region),
        *role_refusals(request, iam),
        *network_refusals(request, iam, ec2),
    ]


# ---- the request alone --------------------------------------------------------------------


def request_refusals(request: dict[str, Any], region: str) -> list[Refusal]:
    """Release label, idle timeout, instance types and root volume size of the request."""
    found = []
    label = request.get("ReleaseLabel")
    if label not in RELEASES:
        found.append(invalid(f"The specified release label {label} is not valid"))
    idle = request.get("AutoTerminationPolicy", {}).get("IdleTimeout")
    low, high = IDLE_TIMEOUT_S
    if idle is not None and not low <= idle <= high:
        found.append(
            invalid(
                f"1 validation error detected: Value '{idle}' at "
                "'autoTerminationPolicy.idleTimeout' failed to satisfy constraint: Member must "
                f"have value between {low} and {high}"
            )
        )
    # The price table lists what EMR offers here (EMR Management Guide, "Supported instance
    # types with Amazon EMR", by Region); a type outside it may not exist or run EMR there.
    for kind in sorted(instance_types(request.get("Instances", {}))):
        if kind not in EC2_EUR_PER_HOUR or kind not in EMR_EUR_PER_HOUR:
            found.append(
                invalid(f"The requested instance type {kind} is not supported in {region}")
            )
    root = request.get("EbsRootVolumeSize", ROOT_GIB_DEFAULT)
    if not ROOT_GIB_DEFAULT <= root <= ROOT_GIB_MAX:
        found.append(
            invalid(
                f"The root volume size {root} GiB is not valid: it must be between "
                f"{ROOT_GIB_DEFAULT} and {ROOT_GIB_MAX} GiB"
            )
        )
    return found


def instance_types(instances: dict[str, Any]) -> set[str]:
    """Every instance type named by instance groups, fleets or the uniform fields."""
    kinds = {g["InstanceType"] for g in instances.get("InstanceGroups", [])}
    for fleet in instances.get("InstanceFleets", []):
        kinds.update(c["InstanceType"] for c in fleet.get("InstanceTypeConfigs", []))
    kinds.update(
        instances[k] for k in ("MasterInstanceType", "SlaveInstanceType") if k in instances
    )
    return kinds


def invalid(message: str) -> Refusal:
    """A :data:`VALIDATION_ERROR` refusal."""
    return Refusal(VALIDATION_ERROR, message)


# ---- IAM ------------------------------------------------------------------------------------


def role_refusals(request: dict[str, Any], iam: Any) -> list[Refusal]:
    """The service role and the instance profile exist, fit together and trust their services.

    * EMR assumes the service role, trusted by ``elasticmapreduce.amazonaws.com``, and needs
      EC2 rights from ``AmazonEMRServicePolicy_v2`` (or the deprecated v1 policy) (EMR
      Management Guide, "Service role for Amazon EMR (EMR role)").
    * The instance profile must hold one role of the same name, trusted by
      ``ec2.amazonaws.com`` (EMR Management Guide, "Customize IAM roles with Amazon EMR";
      IAM User Guide, "Use instance profiles").
    * The service role must be allowed ``iam:PassRole`` on that role: v2 only passes
      ``EMR_EC2_DefaultRole`` (its statement ``PassRoleForEC2``).
    """
    service_name = name_of(request.get("ServiceRole", ""))
    service = get(iam.get_role, "Role", RoleName=service_name)
    found = []
    if service is None:
        found.append(invalid(f"Service role {service_name} does not exist"))
    elif not trusts(service, "elasticmapreduce.amazonaws.com"):
        found.append(invalid(f"Service role {service_name} cannot be assumed by EMR"))
    elif not attached(iam, service_name) & {SERVICE_POLICY_V2, SERVICE_POLICY_V1}:
        found.append(invalid(f"Service role {service_name} has insufficient EC2 permissions"))
    profile_name = name_of(request.get("JobFlowRole", ""))
    profile = get(iam.get_instance_profile, "InstanceProfile", InstanceProfileName=profile_name)
    if profile is None:
        return [*found, invalid(f"Invalid InstanceProfile: {profile_name}.")]
    roles = profile["Roles"]
    if [r["RoleName"] for r in roles] != [profile_name]:
        held = ", ".join(r["RoleName"] for r in roles) or "no role"
        found.append(
            invalid(
                f"The instance profile {profile_name} is invalid: it holds {held}; EMR needs "
                "an instance profile holding the one role of the same name"
            )
        )
        return found
    if not trusts(roles[0], "ec2.amazonaws.com"):
        found.append(invalid(f"The role {profile_name} cannot be assumed by EC2 instances"))
    if service is not None and not may_pass(iam, service_name, roles[0]["Arn"]):
        found.append(
            invalid(
                f"Service role {service_name} has insufficient permissions: it may not pass "
                f"role {roles[0]['Arn']} (iam:PassRole)"
            )
        )
    return found


def name_of(role: str) -> str:
    """The name in a role or instance profile given by name or ARN."""
    return role.rsplit("/", 1)[-1]


def get(call: Any, key: str, **kwargs: Any) -> Any:
    """``call(**kwargs)[key]``, or ``None`` when IAM says there is no such entity."""
    try:
        return call(**kwargs)[key]
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") == "NoSuchEntity":
            return None
        raise


def document(raw: Any) -> dict[str, Any]:
    """A policy document as IAM returns it: a dict, or URL-encoded JSON."""
    return raw if isinstance(raw, dict) else json.loads(unquote(raw))


def as_list(value: Any) -> list[Any]:
    """IAM's ``"x"`` or ``["x", "y"]`` as a list."""
    return value if isinstance(value, list) else [value]


def trusts(role: dict[str, Any], service: str) -> bool:
    """Whether ``role``'s trust policy lets ``service`` assume it."""
    return any(
        statement.get("Effect") == "Allow"
        and service in as_list(statement.get("Principal", {}).get("Service", []))
        and "sts:AssumeRole" in as_list(statement.get("Action", []))
        for statement in document(role["AssumeRolePolicyDocument"])["Statement"]
    )


def attached(iam: Any, role: str) -> set[str]:
    """The ARNs of the managed policies attached to ``role``."""
    pages = iam.get_paginator("list_attached_role_policies").paginate(RoleName=role)
    return {p["PolicyArn"] for page in pages for p in page["AttachedPolicies"]}


def statements(iam: Any, role: str) -> Iterator[dict[str, Any]]:
    """Every statement of ``role``'s inline and attached managed policies."""
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        raw = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        yield from as_list(document(raw)["Statement"])
    for arn in attached(iam, role):
        version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
        raw = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]
        yield from as_list(document(raw["Document"])["Statement"])


def may_pass(iam: Any, role: str, passed_arn: str) -> bool:
    """Whether an ``Allow`` statement of ``role`` grants ``iam:PassRole`` on ``passed_arn``."""
    return any(
        statement.get("Effect") == "Allow"
        and any(fnmatch.fnmatchcase("iam:PassRole", a) for a in as_list(statement["Action"]))
        and any(fnmatch.fnmatchcase(passed_arn, r) for r in as_list(statement["Resource"]))
        for statement in statements(iam, role)
        if "Action" in statement and "Resource" in statement
    )


# ---- the network ----------------------------------------------------------------------------


def network_refusals(request: dict[str, Any], iam: Any, ec2: Any) -> list[Refusal]:
    """The managed-policy tag on the request, its subnets and security groups (v2 policy only)."""
    service = name_of(request.get("ServiceRole", ""))
    if get(iam.get_role, "Role", RoleName=service) is None:
        return []  # refused already; no policy to enforce tags
    if SERVICE_POLICY_V2 not in attached(iam, service):
        return []
    short = f"Service role {service} has insufficient EC2 permissions"
    key, value = MANAGED_POLICY_TAG
    found = []
    if {"Key": key, "Value": value} not in request.get("Tags", []):
        found.append(invalid(f"{short}: the request lacks the tag {key}={value}"))
    network = launch_network(request.get("Instances", {}), ec2)
    if network is None:
        return [*found, invalid("No default VPC in this region: specify Ec2SubnetId")]
    found += [
        invalid(f"{short}: {label} lacks the tag {key}={value}")
        for label, resource in network
        if not tagged(resource)
    ]
    return found


def launch_network(instances: dict[str, Any], ec2: Any) -> list[tuple[str, Any]] | None:
    """What EMR launches into, as ``(label, described resource)``; ``None``: nowhere.

    Without ``Ec2SubnetId(s)``, EMR picks one of the default VPC's default subnets, so each
    counts. Without ``EmrManagedMasterSecurityGroup``, EMR uses :data:`DEFAULT_GROUPS` of the
    VPC, or creates the missing ones, which needs the tag on the VPC itself.
    """
    subnet_ids = as_list(instances.get("Ec2SubnetIds", instances.get("Ec2SubnetId", [])))
    if subnet_ids:
        subnets = ec2.describe_subnets(SubnetIds=subnet_ids)["Subnets"]
        vpc_id = subnets[0]["VpcId"]
    else:
        default = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
        if not default:
            return None
        vpc_id = default[0]["VpcId"]
        in_vpc = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])
        subnets = [s for s in in_vpc["Subnets"] if s.get("DefaultForAz")]
    named = [
        instances[k]
        for k in ("EmrManagedMasterSecurityGroup", "EmrManagedSlaveSecurityGroup")
        if k in instances
    ]
    named += instances.get("AdditionalMasterSecurityGroups", [])
    named += instances.get("AdditionalSlaveSecurityGroups", [])
    groups = ec2.describe_security_groups(GroupIds=named)["SecurityGroups"] if named else []
    network = [(f"subnet {s['SubnetId']}", s) for s in subnets]
    if "EmrManagedMasterSecurityGroup" not in instances:
        in_vpc = {"Name": "vpc-id", "Values": [vpc_id]}
        defaults = ec2.describe_security_groups(
            Filters=[in_vpc, {"Name": "group-name", "Values": list(DEFAULT_GROUPS)}]
        )["SecurityGroups"]
        groups += defaults
        if len(defaults) < len(DEFAULT_GROUPS):
            vpc = ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]
            network.append((f"VPC {vpc_id}, where EMR must create its security groups,", vpc))
    network += [(f"security group {g['GroupId']} ({g['GroupName']})", g) for g in groups]
    return network


def tagged(resource: dict[str, Any]) -> bool:
    """Whether an EC2 resource as described carries :data:`MANAGED_POLICY_TAG`."""
    key, value = MANAGED_POLICY_TAG
    return {"Key": key, "Value": value} in resource.get("Tags", [])


# ---- the bootstrap actions -------------------------------------------------------------------


def bootstrap_refusals(request: dict[str, Any], s3: Any) -> list[Refusal]:
    """Each bootstrap script exists in S3, and the root volume holds what the bootstrap installs.

    A script EMR cannot download fails the bootstrap (EMR Management Guide, "Create bootstrap
    actions to install additional software"; "Resolve cluster errors: bootstrap failure").
    """
    actions = request.get("BootstrapActions", [])
    found = []
    for number, action in enumerate(actions, start=1):
        path = action.get("ScriptBootstrapAction", {}).get("Path", "")
        bucket, _, key = path.removeprefix("s3://").partition("/")
        try:
            s3.head_object(Bucket=bucket, Key=key)
        except ClientError:
            found.append(
                Refusal(
                    BOOTSTRAP_FAILURE,
                    f"Master instance failed attempting to download bootstrap action {number} "
                    f"file from S3: {path}",
                )
            )
    root = request.get("EbsRootVolumeSize", ROOT_GIB_DEFAULT)
    if actions and root < BOOTSTRAP_ROOT_GIB:
        found.append(
            Refusal(
                BOOTSTRAP_FAILURE,
                "On the master instance, bootstrap action 1 returned a non-zero return code: "
                f"No space left on device (root volume {root} GiB, the bootstrap needs "
                f"{BOOTSTRAP_ROOT_GIB} GiB)",
            )
        )
    return found
