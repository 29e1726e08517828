"""Checks made before any cluster is paid for: the bucket is EU, encrypted, private; cost bound.

Each check returns a list of problems (empty when fine), so the preflight task can report all
of them at once instead of the first.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from fruits_pipeline import planner
from fruits_pipeline.config import Settings

PUBLIC_ACCESS_FLAGS = (
    "BlockPublicAcls",
    "IgnorePublicAcls",
    "BlockPublicPolicy",
    "RestrictPublicBuckets",
)


def _error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def bucket_problems(s3: Any, bucket: str, region: str) -> list[str]:
    """``GetBucketLocation``, ``GetBucketEncryption``, ``GetPublicAccessBlock`` on ``bucket``."""
    try:
        location = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") or "us-east-1"
    except ClientError as err:
        return [f"bucket {bucket} cannot be read ({_error_code(err)}): run make aws-bootstrap"]
    problems = []
    if location != region:
        problems.append(f"bucket {bucket} is in {location}, not in {region}")
    try:
        rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
        if not rules.get("Rules"):
            problems.append(f"bucket {bucket} has no default encryption rule")
    except ClientError as err:
        problems.append(f"bucket {bucket} has no default encryption ({_error_code(err)})")
    try:
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        open_flags = [flag for flag in PUBLIC_ACCESS_FLAGS if not block.get(flag)]
        if open_flags:
            problems.append(f"bucket {bucket} public access not blocked: {', '.join(open_flags)}")
    except ClientError as err:
        problems.append(f"bucket {bucket} has no public access block ({_error_code(err)})")
    return problems


def cost_problems(settings: Settings, images: int, pca_rows: int | None = None) -> list[str]:
    """The run's estimated cost (:func:`fruits_pipeline.planner.estimate`) against the limit.

    :param images: images the featurize step will process; ``pca_rows`` as in ``estimate``.
    """
    plan = planner.estimate(settings, images, pca_rows)
    cost = plan.cost(settings.use_spot)
    if cost > settings.max_cost_eur:
        return [
            f"estimated cost EUR {cost:.2f} ({plan.parts()}, EUR "
            f"{settings.cluster_eur_per_hour():.3f}/h) exceeds max_cost_eur "
            f"{settings.max_cost_eur:.2f}"
        ]
    return []
