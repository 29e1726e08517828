"""Settings of the pipeline: one typed object, read from the environment, with the GDPR rule.

Every setting ``name`` is read from ``AIRFLOW_VAR_FRUITS_<NAME>`` (an Airflow Variable set by
environment) or ``FRUITS_<NAME>``, else its default below. Credentials are never settings:
AWS access goes through the ``aws_default`` connection (or the connection named by
``aws_conn_id``).

>>> Settings(bucket="b").region
'eu-west-1'
>>> require_eu_region("us-east-1")
Traceback (most recent call last):
...
fruits_pipeline.config.RegionError: region 'us-east-1' is outside the EU: ...
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
"""The repository root (``plugins/`` sits directly under it)."""

EMR_PYTHON = "/opt/fruits/env/bin/python"
"""The jobs' Python on every EMR node: the bootstrap action's virtual environment of Amazon
Linux's ``python3.11``, holding the node environment archive (:mod:`fruits_pipeline.node_env`)."""
EMR_BOOTSTRAP_SCRIPT = "spark_jobs/bootstrap/install_python_deps.sh"
"""The bootstrap action's script, relative to :data:`PROJECT_ROOT`."""
LOCK_FILE = "requirements.lock"
"""The pinned versions of every dependency, relative to :data:`PROJECT_ROOT`."""

DEFAULT_REGION = "eu-west-1"
EU_REGIONS = frozenset(
    {
        "eu-central-1",
        "eu-central-2",
        "eu-north-1",
        "eu-south-1",
        "eu-south-2",
        "eu-west-1",
        "eu-west-2",
        "eu-west-3",
    }
)
"""AWS regions in the EU/EEA (eu-west-2, London, is kept: UK adequacy decision)."""

GDPR_RULE = "Fruits! stores and processes personal photos in the EU only (GDPR)"


class RegionError(ValueError):
    """A region outside :data:`EU_REGIONS` was configured."""


def require_eu_region(region: str) -> str:
    """Return ``region`` if it is an EU region, else raise :class:`RegionError` naming it."""
    if region not in EU_REGIONS:
        raise RegionError(
            f"region {region!r} is outside the EU: {GDPR_RULE}; "
            f"use one of {', '.join(sorted(EU_REGIONS))}"
        )
    return region


EC2_EUR_PER_HOUR = {
    "m5.xlarge": 0.200,
    "m5.2xlarge": 0.400,
    "m5.4xlarge": 0.800,
    "m6i.xlarge": 0.200,
    "m6i.2xlarge": 0.400,
    "c5.2xlarge": 0.360,
    "c6i.2xlarge": 0.360,
    "r5.xlarge": 0.260,
    "r5.2xlarge": 0.520,
}
"""eu-west-1 on-demand Linux prices (EUR/h, rounded from USD list prices, 2026)."""
EMR_EUR_PER_HOUR = {
    "m5.xlarge": 0.045,
    "m5.2xlarge": 0.090,
    "m5.4xlarge": 0.180,
    "m6i.xlarge": 0.045,
    "m6i.2xlarge": 0.090,
    "c5.2xlarge": 0.080,
    "c6i.2xlarge": 0.080,
    "r5.xlarge": 0.060,
    "r5.2xlarge": 0.120,
}
"""eu-west-1 EMR surcharge per instance (EUR/h), kept beside the EC2 price it adds to."""
SPOT_DISCOUNT = 0.6
"""Assumed spot saving on the EC2 part (EMR's surcharge is the same on spot)."""
PUBLIC_IPV4_EUR_PER_HOUR = 0.0046
"""Each node's public IPv4 address (USD 0.005/h since February 2024, Amazon VPC pricing)."""
EBS_EUR_PER_GIB_MONTH = 0.081
"""gp3 storage in eu-west-1 (USD 0.088 per GiB-month); EBS bills by the hour of use."""
HOURS_PER_MONTH = 730
EMR_DATA_GIB = {"xlarge": 64, "2xlarge": 128, "4xlarge": 256}
"""The EBS data volumes EMR attaches by default to an EBS-only instance, by instance size
(EMR Management Guide, "Instance storage": default Amazon EBS storage for instances)."""
EMR_ROOT_GIB_RANGE = (15, 100)
"""``EbsRootVolumeSize`` EMR accepts: 15 GiB, its default since 6.10.0, up to 100 GiB
(EMR Management Guide, "Customizing the Amazon EBS root device volume")."""

SYNC_MAX_FILE_BYTES = 50 * 1024 * 1024
"""Landing files larger than this are refused by the sync (photos are a few MB at most)."""
SYNC_CONCURRENCY = 10
"""Files, and S3 requests, the sync keeps in flight (the AWS CLI's default); above 10, raise
the connection's ``max_pool_connections`` too (extra ``config_kwargs``)."""


CLASS_ARCHIVES = "~/.cache/fruits-pipeline/jvm"
"""Where the local jobs' JVMs keep their class archives (:mod:`fruits_pipeline.class_archive`)."""
NODE_ENVS = "~/.cache/fruits-pipeline/node-env"
"""Where ``cluster_request`` keeps the node environment archives it built, one per lock file."""

SAMPLE_IMAGES = PROJECT_ROOT / "samples" / "fruits360-sample"
"""The 96 Fruits-360 images the repository ships (CC BY-SA 4.0, attribution beside them)."""


def default_image_source() -> str:
    """The shared grocery photos beside the project, else the sample the repository ships."""
    shared = PROJECT_ROOT.parent / "shared" / "data" / "grocery-fruits-sample"
    return str(shared if shared.is_dir() else SAMPLE_IMAGES)


def default_weights() -> str:
    """The first ``*.h5`` in ``../shared/models`` when there is one, else Keras' ``imagenet``."""
    found = sorted((PROJECT_ROOT.parent / "shared" / "models").glob("*.h5"))
    return str(found[0]) if found else "imagenet"


_FIELD_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know that is not a per-run parameter.

    Paths under ``bucket`` follow one layout: ``raw/images/<Label>/...`` for the lake,
    ``code/<version>/`` for the jobs, ``outputs/`` for the output contract, ``emr-logs/``.
    """

    bucket: str = "fruits-lake-eu"
    region: str = DEFAULT_REGION
    aws_conn_id: str = "aws_default"
    emr_release: str = "emr-7.12.0"
    master_instance_type: str = "m5.xlarge"
    core_instance_type: str = "m5.xlarge"
    core_instance_count: int = 2
    use_spot: bool = False
    service_role: str = "fruits-emr-service-role"
    job_flow_role: str = "fruits-emr-ec2-role"
    idle_timeout_s: int = 3600
    root_volume_gib: int = 32
    max_cost_eur: float = 10.0
    owner: str = "data-platform"
    weights: str = field(default_factory=default_weights)
    image_source: str = field(default_factory=default_image_source)
    local_root: str = str(PROJECT_ROOT / "out" / "local")
    class_archives: str = CLASS_ARCHIVES
    node_envs: str = NODE_ENVS
    step_poke_interval_s: int = 60
    sync_max_file_bytes: int = SYNC_MAX_FILE_BYTES
    sync_concurrency: int = SYNC_CONCURRENCY

    def __post_init__(self) -> None:
        require_eu_region(self.region)
        if self.core_instance_count < 1:
            raise ValueError(f"core_instance_count must be >= 1, got {self.core_instance_count}")
        # AutoTerminationPolicy.IdleTimeout: 60 s to 7 days (EMR API Reference).
        if not 60 <= self.idle_timeout_s <= 604800:
            raise ValueError(f"idle_timeout_s must be 60..604800, got {self.idle_timeout_s}")
        low, high = EMR_ROOT_GIB_RANGE
        if not low <= self.root_volume_gib <= high:
            raise ValueError(f"root_volume_gib must be {low}..{high}, got {self.root_volume_gib}")
        if self.sync_max_file_bytes < 1 or self.sync_concurrency < 1:
            raise ValueError(
                f"sync_max_file_bytes ({self.sync_max_file_bytes}) and sync_concurrency "
                f"({self.sync_concurrency}) must be >= 1"
            )
        for kind in (self.master_instance_type, self.core_instance_type):
            if kind not in EC2_EUR_PER_HOUR:
                raise ValueError(
                    f"instance type {kind!r} has no price in the cost table; "
                    f"known: {', '.join(sorted(EC2_EUR_PER_HOUR))}"
                )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``AIRFLOW_VAR_FRUITS_<NAME>`` / ``FRUITS_<NAME>``, else defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            key = spec.name.upper()
            raw = environ.get(f"AIRFLOW_VAR_FRUITS_{key}", environ.get(f"FRUITS_{key}"))
            if raw is None:
                continue
            kind = _FIELD_TYPES[str(spec.type)]
            values[spec.name] = raw.lower() in ("1", "true", "yes") if kind is bool else kind(raw)
        return cls(**values)

    # --- the bucket layout ------------------------------------------------------------------
    @property
    def s3_root(self) -> str:
        """``s3://<bucket>``."""
        return f"s3://{self.bucket}"

    @property
    def raw_images_uri(self) -> str:
        """Where synced images live: ``s3://<bucket>/raw/images``."""
        return f"{self.s3_root}/raw/images"

    @property
    def output_uri(self) -> str:
        """Root of the Spark jobs' output contract on S3."""
        return f"{self.s3_root}/outputs"

    @property
    def log_uri(self) -> str:
        """EMR ``LogUri``: in the same bucket, so logs stay in the EU too."""
        return f"{self.s3_root}/emr-logs/"

    @property
    def local_lake(self) -> str:
        """The local target's lake folder (what ``sync_images`` fills)."""
        return str(Path(self.local_root) / "lake")

    @property
    def local_output(self) -> str:
        """The local target's output root (the output contract)."""
        return str(Path(self.local_root) / "outputs")

    def code_uri(self, version: str) -> str:
        """Versioned code prefix: ``s3://<bucket>/code/<version>``."""
        return f"{self.s3_root}/code/{version}"

    def node_env_uri(self, key: str) -> str:
        """The nodes' Python environment archive: ``s3://<bucket>/code/node-env/<key>.tar.gz``."""
        return f"{self.s3_root}/code/node-env/{key}.tar.gz"

    # --- cost guard --------------------------------------------------------------------------
    def cluster_eur_per_hour(self, spot: bool | None = None) -> float:
        """What the cluster costs per hour it runs: the master and the core nodes.

        Per instance: EC2 (spot saving on core nodes), EMR's surcharge, its public IPv4
        address, and its EBS (root volume plus EMR's default data volumes). How long a run
        keeps it up: :func:`fruits_pipeline.planner.estimate`.

        :param spot: core nodes on spot; default ``use_spot``.
        """
        spot = self.use_spot if spot is None else spot
        return round(
            self.instance_eur_per_hour(self.master_instance_type, False)
            + self.core_instance_count * self.instance_eur_per_hour(self.core_instance_type, spot),
            4,
        )

    def instance_eur_per_hour(self, kind: str, spot: bool) -> float:
        """What one running ``kind`` instance of the cluster costs per hour."""
        ec2 = EC2_EUR_PER_HOUR[kind] * (1 - SPOT_DISCOUNT if spot else 1.0)
        ebs_gib = self.root_volume_gib + EMR_DATA_GIB[kind.split(".")[1]]
        ebs = ebs_gib * EBS_EUR_PER_GIB_MONTH / HOURS_PER_MONTH
        return ec2 + EMR_EUR_PER_HOUR[kind] + PUBLIC_IPV4_EUR_PER_HOUR + ebs
