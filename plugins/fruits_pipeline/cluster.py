"""The EMR cluster request (``RunJobFlow`` body) of one batch, built from :class:`Settings`."""

from __future__ import annotations

from typing import Any

from fruits_pipeline.config import EMR_PYTHON, Settings

BOOTSTRAP_KEY = "bootstrap/install_python_deps.sh"
"""Where ``upload_code`` puts the bootstrap script under the versioned code prefix."""
EMR_MANAGED_POLICY_TAG = {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}
"""The tag ``AmazonEMRServicePolicy_v2`` requires on the cluster request, and on the subnet and
security groups it launches into: the policy lets EMR create instances, volumes and launch
templates only with it (EMR Management Guide, "Tagging resources to use managed policies")."""


def instance_group(role: str, kind: str, count: int, *, spot: bool) -> dict[str, Any]:
    """One ``InstanceGroups`` entry (``MASTER`` or ``CORE``)."""
    return {
        "Name": role.lower(),
        "InstanceRole": role,
        "InstanceType": kind,
        "InstanceCount": count,
        "Market": "SPOT" if spot else "ON_DEMAND",
    }


def job_flow_overrides(
    settings: Settings, batch_id: str, code_uri: str, node_env_uri: str
) -> dict[str, Any]:
    """The ``RunJobFlow`` request for ``batch_id``.

    ``code_uri`` holds the uploaded jobs, ``node_env_uri`` the nodes' Python environment
    archive (:mod:`fruits_pipeline.node_env`).

    * Spark on ``settings.emr_release``, logs to ``settings.log_uri`` in the same EU bucket.
    * A bootstrap action unpacks the archive into a virtual environment of Amazon Linux's
      ``python3.11`` on every node (:data:`EMR_PYTHON`), and Spark's Python points at it.
    * ``AutoTerminationPolicy`` always set: an idle cluster stops itself even if Airflow dies.
    * The master stays on-demand; core nodes go spot when ``settings.use_spot``.
    * Tagged with :data:`EMR_MANAGED_POLICY_TAG`, without which the service role's managed
      policy refuses to launch the nodes (the cluster ends ``VALIDATION_ERROR``).
    * A root volume of ``settings.root_volume_gib``: EMR's 15 GiB default leaves too little
      room for TensorFlow and pip's temporary files.
    """
    return {
        "Name": f"fruits-{batch_id}",
        "ReleaseLabel": settings.emr_release,
        "Applications": [{"Name": "Hadoop"}, {"Name": "Spark"}],
        "LogUri": settings.log_uri,
        "Instances": {
            "InstanceGroups": [
                instance_group("MASTER", settings.master_instance_type, 1, spot=False),
                instance_group(
                    "CORE",
                    settings.core_instance_type,
                    settings.core_instance_count,
                    spot=settings.use_spot,
                ),
            ],
            "KeepJobFlowAliveWhenNoSteps": True,
            "TerminationProtected": False,
        },
        "BootstrapActions": [
            {
                "Name": "install-python-deps",
                "ScriptBootstrapAction": {
                    "Path": f"{code_uri}/{BOOTSTRAP_KEY}",
                    "Args": [node_env_uri],
                },
            }
        ],
        "Configurations": [
            {
                "Classification": "spark-env",
                "Configurations": [
                    {"Classification": "export", "Properties": {"PYSPARK_PYTHON": EMR_PYTHON}}
                ],
            },
            {
                "Classification": "spark-defaults",
                "Properties": {"spark.sql.execution.arrow.pyspark.enabled": "true"},
            },
        ],
        "EbsRootVolumeSize": settings.root_volume_gib,
        "AutoTerminationPolicy": {"IdleTimeout": settings.idle_timeout_s},
        "ServiceRole": settings.service_role,
        "JobFlowRole": settings.job_flow_role,
        "VisibleToAllUsers": True,
        "Tags": [
            {"Key": "project", "Value": "fruits"},
            {"Key": "batch", "Value": batch_id},
            {"Key": "owner", "Value": settings.owner},
            EMR_MANAGED_POLICY_TAG,
        ],
    }
