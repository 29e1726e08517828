"""Create, check or remove the AWS side of the pipeline in one EU region, idempotently.

``python -m fruits_pipeline.aws_bootstrap up --bucket NAME`` (``make aws-bootstrap``):

* **Bucket** (``CreateBucket`` in the region): default encryption (SSE-S3), every public access
  blocked, a policy that denies any request without TLS, ``emr-logs/`` expiring after
  ``--log-days`` days, unfinished multipart uploads aborted after a week.
* **EMR service role** with AWS's ``AmazonEMRServicePolicy_v2``, plus ``iam:PassRole`` for our
  EC2 role only. That managed policy only launches into a network tagged
  ``for-use-with-amazon-emr-managed-policies=true``: the region's default VPC, its subnets and
  the ``ElasticMapReduce-master``/``-slave`` security groups earlier EMR use left there get
  that tag (EMR tags the groups it creates itself).
* **EC2 role and its instance profile**, of the same name as EMR requires, for the cluster
  nodes: allowed to list and read/write the one bucket (multipart uploads included, as EMRFS
  writes big objects) and nothing else.

Every resource is compared with what it should be and only changed when it differs, so a
second run changes nothing. An account set up by the first version (instance profile
``<prefix>-emr-ec2-profile``) is repaired: the profile is replaced by the one named as the
role. ``down`` removes the roles, the profiles and the network tags; the bucket (the data)
only with ``--delete-data``. Both print what they changed, the settings to use, and refuse
non-EU regions.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import ClientError

from fruits_pipeline.cluster import EMR_MANAGED_POLICY_TAG
from fruits_pipeline.config import DEFAULT_REGION, RegionError, require_eu_region

log = logging.getLogger(__name__)

EMR_SECURITY_GROUPS = ("ElasticMapReduce-master", "ElasticMapReduce-slave")
"""The default security groups EMR creates in a VPC with public subnets (older ones untagged)."""
EMR_SERVICE_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"
PROJECT_TAG = {"Key": "project", "Value": "fruits"}

Outcome = str
"""``created``, ``updated``, ``deleted`` or ``unchanged``: what ``up`` did to one resource."""


class BootstrapError(Exception):
    """A resource exists in a state ``up`` must not take over (someone else's, elsewhere)."""


@dataclass(frozen=True)
class Names:
    """The names of everything ``up`` creates, derived from the bucket and a prefix."""

    bucket: str
    region: str = DEFAULT_REGION
    prefix: str = "fruits"
    log_days: int = 30

    @property
    def service_role(self) -> str:
        """The role the EMR service assumes (the cluster request's ``ServiceRole``)."""
        return f"{self.prefix}-emr-service-role"

    @property
    def ec2_role(self) -> str:
        """The role of the cluster's nodes."""
        return f"{self.prefix}-emr-ec2-role"

    @property
    def instance_profile(self) -> str:
        """The profile holding :attr:`ec2_role` (the cluster request's ``JobFlowRole``).

        Named as the role: EMR requires it (EMR Management Guide, "Customize IAM roles with
        Amazon EMR": the instance profile and its role must have the same name).
        """
        return self.ec2_role

    @property
    def legacy_instance_profile(self) -> str:
        """The profile name the first version of ``up`` used, which EMR refuses."""
        return f"{self.prefix}-emr-ec2-profile"

    def settings(self) -> dict[str, str]:
        """The pipeline settings (``FRUITS_<NAME>`` variables) that point at these resources."""
        return {
            "FRUITS_BUCKET": self.bucket,
            "FRUITS_REGION": self.region,
            "FRUITS_SERVICE_ROLE": self.service_role,
            "FRUITS_JOB_FLOW_ROLE": self.instance_profile,
        }


def trust_policy(service: str) -> dict[str, Any]:
    """A role trust policy letting ``service`` (e.g. ``ec2.amazonaws.com``) assume the role."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": service},
                "Action": "sts:AssumeRole",
            }
        ],
    }


def bucket_policy(bucket: str) -> dict[str, Any]:
    """Deny every request to the bucket or its objects that does not use TLS."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


def node_policy(bucket: str) -> dict[str, Any]:
    """What the cluster nodes may do: list, read and write the one bucket, nothing else.

    EMRFS writes big objects as multipart uploads, so it also lists the uploads and their parts
    (EMR Management Guide, "Creating a service role for cluster EC2 instances with
    least-privilege permissions").
    """
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ListTheLake",
                "Effect": "Allow",
                "Action": [
                    "s3:ListBucket",
                    "s3:GetBucketLocation",
                    "s3:ListBucketMultipartUploads",
                ],
                "Resource": f"arn:aws:s3:::{bucket}",
            },
            {
                "Sid": "ReadWriteTheLake",
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                    "s3:ListMultipartUploadParts",
                ],
                "Resource": f"arn:aws:s3:::{bucket}/*",
            },
        ],
    }


def pass_role_policy(role_arn: str) -> dict[str, Any]:
    """Let the EMR service hand our EC2 role (and only it) to the cluster's instances."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PassTheNodeRole",
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": role_arn,
                "Condition": {"StringLike": {"iam:PassedToService": "ec2.amazonaws.com*"}},
            }
        ],
    }


def encryption() -> dict[str, Any]:
    """Default encryption of every new object with S3-managed keys (SSE-S3)."""
    return {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}


def public_access_block() -> dict[str, bool]:
    """All four public-access blocks on: no ACL or policy can make anything public."""
    return dict.fromkeys(
        ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"),
        True,
    )


def lifecycle(log_days: int) -> dict[str, Any]:
    """Expire EMR logs after ``log_days``; abort unfinished multipart uploads after 7 days."""
    return {
        "Rules": [
            {
                "ID": "expire-emr-logs",
                "Filter": {"Prefix": "emr-logs/"},
                "Status": "Enabled",
                "Expiration": {"Days": log_days},
            },
            {
                "ID": "abort-incomplete-uploads",
                "Filter": {"Prefix": ""},
                "Status": "Enabled",
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
            },
        ]
    }


def contains(actual: Any, wanted: Any) -> bool:
    """Whether ``actual`` has everything ``wanted`` has (AWS may add defaults of its own)."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(
            key in actual and contains(actual[key], value) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(wanted)
            and all(contains(a, w) for a, w in zip(actual, wanted, strict=True))
        )
    return actual == wanted


def missing(err: ClientError) -> bool:
    """Whether an AWS error only says the thing asked for does not exist (yet)."""
    code = err.response.get("Error", {}).get("Code", "")
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 404 or code.startswith("NoSuch") or code.endswith("NotFoundError")


def current(call: Callable[..., dict[str, Any]], key: str, **kwargs: Any) -> Any:
    """``call(**kwargs)[key]``, or ``None`` when AWS says it does not exist."""
    try:
        return call(**kwargs)[key]
    except ClientError as err:
        if missing(err):
            return None
        raise


class Bootstrap:
    """The ``up``/``down`` logic over boto3 clients of one EU region."""

    def __init__(self, names: Names, session: boto3.session.Session | None = None) -> None:
        require_eu_region(names.region)
        session = session or boto3.session.Session()
        self.names = names
        self.s3 = session.client("s3", region_name=names.region)
        self.iam = session.client("iam", region_name=names.region)
        self.ec2 = session.client("ec2", region_name=names.region)

    # ---- up -----------------------------------------------------------------------------

    def up(self) -> dict[str, Outcome]:
        """Create or update everything; return what happened to each resource."""
        bucket = self.names.bucket
        outcomes = {"bucket": self.ensure_bucket()}
        outcomes["bucket encryption"] = self.ensure(
            current(
                self.s3.get_bucket_encryption, "ServerSideEncryptionConfiguration", Bucket=bucket
            ),
            encryption(),
            lambda: self.s3.put_bucket_encryption(
                Bucket=bucket, ServerSideEncryptionConfiguration=encryption()
            ),
        )
        outcomes["public access block"] = self.ensure(
            current(
                self.s3.get_public_access_block, "PublicAccessBlockConfiguration", Bucket=bucket
            ),
            public_access_block(),
            lambda: self.s3.put_public_access_block(
                Bucket=bucket, PublicAccessBlockConfiguration=public_access_block()
            ),
        )
        policy = current(self.s3.get_bucket_policy, "Policy", Bucket=bucket)
        outcomes["TLS-only bucket policy"] = self.ensure(
            json.loads(policy) if policy else None,
            bucket_policy(bucket),
            lambda: self.s3.put_bucket_policy(
                Bucket=bucket, Policy=json.dumps(bucket_policy(bucket))
            ),
        )
        rules = lifecycle(self.names.log_days)
        outcomes["log expiry"] = self.ensure(
            current(self.s3.get_bucket_lifecycle_configuration, "Rules", Bucket=bucket),
            rules["Rules"],
            lambda: self.s3.put_bucket_lifecycle_configuration(
                Bucket=bucket, LifecycleConfiguration=rules
            ),
        )
        ec2_role_arn, outcomes["EC2 role"] = self.ensure_role(
            self.names.ec2_role, "ec2.amazonaws.com", node_policy(bucket), managed=()
        )
        outcomes["instance profile"] = self.ensure_instance_profile()
        legacy = self.names.legacy_instance_profile
        if self.delete_instance_profile(legacy, only_holding=self.names.ec2_role):
            outcomes[f"old instance profile {legacy}"] = "deleted"
            log.warning(
                "EMR refuses instance profile %s (not named as its role): replaced by %s; "
                "set FRUITS_JOB_FLOW_ROLE=%s wherever it named the old one",
                legacy,
                self.names.instance_profile,
                self.names.instance_profile,
            )
        _, outcomes["EMR service role"] = self.ensure_role(
            self.names.service_role,
            "elasticmapreduce.amazonaws.com",
            pass_role_policy(ec2_role_arn),
            managed=(EMR_SERVICE_POLICY,),
        )
        outcomes["default VPC tags"] = self.tag_default_network(add=True)
        return outcomes

    @staticmethod
    def ensure(actual: Any, wanted: Any, put: Callable[[], object]) -> Outcome:
        """Call ``put`` unless ``actual`` already has ``wanted``."""
        if actual is not None and contains(actual, wanted):
            return "unchanged"
        put()
        return "created" if actual is None else "updated"

    def ensure_bucket(self) -> Outcome:
        """``CreateBucket`` in the region, unless we own it there already."""
        bucket, region = self.names.bucket, self.names.region
        try:
            location = self.s3.get_bucket_location(Bucket=bucket)["LocationConstraint"]
        except ClientError as err:
            if not missing(err):
                raise BootstrapError(
                    f"bucket {bucket} exists but is not ours to use "
                    f"({err.response['Error']['Code']}): choose another --bucket"
                ) from err
            self.s3.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region}
            )
            self.s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [PROJECT_TAG]})
            return "created"
        if (location or "us-east-1") != region:
            raise RegionError(f"bucket {bucket} is in {location or 'us-east-1'}, not {region}")
        return "unchanged"

    def ensure_role(
        self, name: str, service: str, inline: dict[str, Any], managed: Sequence[str]
    ) -> tuple[str, Outcome]:
        """A role trusted by ``service`` with exactly one inline policy and ``managed`` ones."""
        role = current(self.iam.get_role, "Role", RoleName=name)
        outcome: Outcome = "unchanged"
        if role is None:
            role = self.iam.create_role(
                RoleName=name,
                AssumeRolePolicyDocument=json.dumps(trust_policy(service)),
                Description="Fruits! pipeline (made by fruits_pipeline.aws_bootstrap)",
                Tags=[PROJECT_TAG],
            )["Role"]
            outcome = "created"
        elif not contains(role["AssumeRolePolicyDocument"], trust_policy(service)):
            self.iam.update_assume_role_policy(
                RoleName=name, PolicyDocument=json.dumps(trust_policy(service))
            )
            outcome = "updated"
        document = current(
            self.iam.get_role_policy, "PolicyDocument", RoleName=name, PolicyName=name
        )
        if document is None or not contains(document, inline):
            self.iam.put_role_policy(
                RoleName=name, PolicyName=name, PolicyDocument=json.dumps(inline)
            )
            outcome = outcome if outcome == "created" else "updated"
        attached = {
            p["PolicyArn"]
            for p in self.iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
        }
        for arn in set(managed) - attached:
            self.iam.attach_role_policy(RoleName=name, PolicyArn=arn)
            outcome = outcome if outcome == "created" else "updated"
        return role["Arn"], outcome

    def ensure_instance_profile(self) -> Outcome:
        """The instance profile EMR gives the nodes, holding the EC2 role."""
        name, role = self.names.instance_profile, self.names.ec2_role
        profile = current(
            self.iam.get_instance_profile, "InstanceProfile", InstanceProfileName=name
        )
        outcome: Outcome = "unchanged"
        if profile is None:
            profile = self.iam.create_instance_profile(InstanceProfileName=name, Tags=[PROJECT_TAG])
            profile = profile["InstanceProfile"]
            outcome = "created"
        if role not in {r["RoleName"] for r in profile["Roles"]}:
            self.iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=role)
            outcome = outcome if outcome == "created" else "updated"
        return outcome

    def default_network(self) -> list[str]:
        """The ids of the region's default VPC, its subnets and EMR's security groups there.

        ``AmazonEMRServicePolicy_v2`` launches only into tagged subnets and security groups
        (its ``CreateInTaggedNetwork`` statement); the VPC's tag lets EMR create its default
        groups (empty if the region has no default VPC).
        """
        vpcs = self.ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            return []
        in_vpc = [{"Name": "vpc-id", "Values": [vpcs[0]["VpcId"]]}]
        subnets = self.ec2.describe_subnets(Filters=in_vpc)["Subnets"]
        groups = self.ec2.describe_security_groups(
            Filters=[*in_vpc, {"Name": "group-name", "Values": list(EMR_SECURITY_GROUPS)}]
        )["SecurityGroups"]
        return [
            vpcs[0]["VpcId"],
            *(s["SubnetId"] for s in subnets),
            *(g["GroupId"] for g in groups),
        ]

    def tag_default_network(self, *, add: bool) -> Outcome:
        """Add (or remove) the EMR managed-policy tag on :meth:`default_network`."""
        ids = self.default_network()
        if not ids:
            log.warning(
                "no default VPC in %s: tag your own subnet and security groups with %s",
                self.names.region,
                EMR_MANAGED_POLICY_TAG,
            )
            return "unchanged"
        tagged = {
            t["ResourceId"]
            for t in self.ec2.describe_tags(
                Filters=[
                    {"Name": "resource-id", "Values": ids},
                    {"Name": "key", "Values": [EMR_MANAGED_POLICY_TAG["Key"]]},
                    {"Name": "value", "Values": [EMR_MANAGED_POLICY_TAG["Value"]]},
                ]
            )["Tags"]
        }
        todo = sorted(set(ids) - tagged) if add else sorted(tagged)
        if not todo:
            return "unchanged"
        (self.ec2.create_tags if add else self.ec2.delete_tags)(
            Resources=todo, Tags=[EMR_MANAGED_POLICY_TAG]
        )
        return "updated"

    # ---- down ---------------------------------------------------------------------------

    def down(self, *, delete_data: bool) -> list[str]:
        """Remove the roles, the profiles and the network tags; the bucket if ``delete_data``."""
        done = []
        for name in (self.names.instance_profile, self.names.legacy_instance_profile):
            if self.delete_instance_profile(name, only_holding=self.names.ec2_role):
                done.append(f"deleted instance profile {name}")
        for role in (self.names.ec2_role, self.names.service_role):
            if self.delete_role(role):
                done.append(f"deleted role {role}")
        if self.tag_default_network(add=False) == "updated":
            done.append("removed the EMR tag from the default VPC, its subnets and EMR groups")
        if delete_data:
            done.extend(self.delete_bucket())
        else:
            done.append(f"kept bucket {self.names.bucket} and its data (--delete-data removes it)")
        return done

    def delete_instance_profile(self, name: str, *, only_holding: str) -> bool:
        """Empty and delete profile ``name`` if it exists and holds no role but ``only_holding``.

        ``False`` when there is no such profile, or when it holds another role: then it is
        not ours, and stays (with a warning).
        """
        profile = current(
            self.iam.get_instance_profile, "InstanceProfile", InstanceProfileName=name
        )
        if profile is None:
            return False
        members = [r["RoleName"] for r in profile["Roles"]]
        if set(members) - {only_holding}:
            log.warning("instance profile %s holds %s, not ours: left alone", name, members)
            return False
        for member in members:
            self.iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=member)
        self.iam.delete_instance_profile(InstanceProfileName=name)
        return True

    def delete_role(self, name: str) -> bool:
        """Detach, delete the inline policies of, and delete a role; ``False`` if absent."""
        if current(self.iam.get_role, "Role", RoleName=name) is None:
            return False
        for policy in self.iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
            self.iam.detach_role_policy(RoleName=name, PolicyArn=policy["PolicyArn"])
        for policy in self.iam.list_role_policies(RoleName=name)["PolicyNames"]:
            self.iam.delete_role_policy(RoleName=name, PolicyName=policy)
        self.iam.delete_role(RoleName=name)
        return True

    def delete_bucket(self) -> list[str]:
        """Delete every object (and version) in the bucket, then the bucket."""
        bucket = self.names.bucket
        if current(self.s3.head_bucket, "ResponseMetadata", Bucket=bucket) is None:
            return []
        count = 0
        pages = self.s3.get_paginator("list_object_versions").paginate(Bucket=bucket)
        for page in pages:
            doomed = [
                {"Key": o["Key"], "VersionId": o["VersionId"]}
                for o in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ]
            if doomed:
                self.s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})
                count += len(doomed)
        self.s3.delete_bucket(Bucket=bucket)
        return [f"deleted bucket {bucket} and its {count} objects"]


def parser() -> argparse.ArgumentParser:
    """The command line: ``up|down --bucket NAME [--region R] [--prefix P] ...``."""
    p = argparse.ArgumentParser(
        prog="python -m fruits_pipeline.aws_bootstrap", description=__doc__.splitlines()[0]
    )
    p.add_argument("action", choices=("up", "down"))
    p.add_argument("--bucket", required=True, help="the lake bucket (globally unique name)")
    p.add_argument("--region", default=DEFAULT_REGION, help="an EU region (%(default)s)")
    p.add_argument("--prefix", default="fruits", help="prefix of the IAM names (%(default)s)")
    p.add_argument("--log-days", type=int, default=30, help="days EMR logs live (%(default)s)")
    p.add_argument("--delete-data", action="store_true", help="down: delete the bucket too")
    p.add_argument("--yes", action="store_true", help="down: do not ask for confirmation")
    return p


def main(argv: list[str] | None = None, ask: Callable[[str], str] = input) -> int:
    """Run ``up`` or ``down``; print what changed and the settings to use. Exit 2 on refusal."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = Names(args.bucket, args.region, args.prefix, args.log_days)
    try:
        bootstrap = Bootstrap(names)
        if args.action == "up":
            for resource, outcome in bootstrap.up().items():
                print(f"{resource:<24} {outcome}")
            print("\n# pipeline settings (shell, .env for docker compose, or Airflow Variables):")
            for key, value in names.settings().items():
                print(f"export {key}={value}")
            return 0
        what = "the roles and the instance profile"
        if args.delete_data:
            what += " AND THE BUCKET WITH ALL ITS DATA"
        question = f"Remove {what} of {names.bucket} in {names.region}? [y/N] "
        if not args.yes and ask(question).strip().lower() != "y":
            print("nothing removed")
            return 1
        for line in bootstrap.down(delete_data=args.delete_data):
            print(line)
        return 0
    except (RegionError, BootstrapError) as err:
        print(f"refused: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
