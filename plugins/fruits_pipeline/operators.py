"""The Airflow operators and sensors the pipeline adds to the amazon provider's.

Two EMR subclasses, a step sensor whose failure names the step's logs and a teardown that
copes with a cluster never created or already ended, the sensor that validates the outputs
against their contract, and its "Outputs" link.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.operators.emr import EmrTerminateJobFlowOperator
from airflow.providers.amazon.aws.sensors.emr import EmrStepSensor
from airflow.sdk import BaseOperatorLink, BaseSensorOperator, Context, PokeReturnValue
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from fruits_pipeline.stores import open_store
from fruits_pipeline.summary import summarize

ENDED = ("TERMINATED", "TERMINATED_WITH_ERRORS")
"""Cluster states after which EMR runs nothing more."""


def cluster_end(hook: Any, job_flow_id: str) -> str | None:
    """``DescribeCluster``: how the cluster ended (state, EMR's code and message), or ``None``.

    A request EMR refuses or a failed bootstrap ends the cluster before any step runs: its
    ``StateChangeReason`` is the only place that says why.
    """
    status = hook.conn.describe_cluster(ClusterId=job_flow_id)["Cluster"]["Status"]
    if status["State"] not in ENDED:
        return None
    reason = status.get("StateChangeReason", {})
    return (
        f"cluster {job_flow_id} ended {status['State']}: "
        f"{reason.get('Code') or 'no code'}: {reason.get('Message') or 'no message'}"
    )


class EmrStepWithLogsSensor(EmrStepSensor):
    """:class:`EmrStepSensor` whose failure names the step's logs and how the cluster ended.

    Calls ``DescribeStep`` like its parent. When the step fails, the error adds
    ``<log_uri><cluster id>/steps/<step id>/`` (where EMR ships ``stderr.gz``/``controller.gz``)
    and, when the cluster has ended (``DescribeCluster``), its state and ``StateChangeReason``.

    :param log_uri: the cluster's ``LogUri`` (ends with ``/``).
    """

    def __init__(self, *, log_uri: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log_uri = log_uri

    @property
    def step_log_uri(self) -> str:
        """Where EMR writes this step's logs."""
        return f"{self.log_uri}{self.job_flow_id}/steps/{self.step_id}/"

    def failure(self, err: AirflowException) -> AirflowException:
        """``err`` with the step's log folder and, if it ended, how the cluster ended."""
        self.log.error("step %s failed; logs in %s", self.step_id, self.step_log_uri)
        ended = cluster_end(self.hook, self.job_flow_id)
        return AirflowException(
            f"{err}; step logs: {self.step_log_uri}" + (f"; {ended}" if ended else "")
        )

    def poke(self, context: Context) -> bool:
        """Poke as the parent does; on failure, re-raise naming the logs and the cluster."""
        try:
            return super().poke(context)
        except AirflowException as err:
            raise self.failure(err) from err

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> None:
        """Finish a deferred wait as the parent does, naming the logs and the cluster."""
        try:
            super().execute_complete(context, event)
        except AirflowException as err:
            raise self.failure(err) from err


class EmrTerminateCreatedJobFlowOperator(EmrTerminateJobFlowOperator):
    """:class:`EmrTerminateJobFlowOperator` that skips when no cluster was created or left.

    Calls ``DescribeCluster``, then ``TerminateJobFlows`` like its parent when ``job_flow_id``
    is set. When cluster creation itself failed there is nothing to terminate, and the task is
    skipped instead of failing on an empty id (the watcher still fails the run). When EMR
    already ended the cluster (a request it refused, a failed bootstrap, the idle timeout),
    the task logs how, with EMR's reason, and ends: deferred, the parent would wait for
    ``TERMINATED`` and fail on ``TERMINATED_WITH_ERRORS`` with a bare "JobFlow termination
    failed".
    """

    def execute(self, context: Context) -> None:
        """Terminate ``job_flow_id``; skip when it is empty; only log when EMR ended it."""
        if not self.job_flow_id or self.job_flow_id == "None":
            raise AirflowSkipException("no cluster was created: nothing to terminate")
        ended = cluster_end(self.hook, self.job_flow_id)
        if ended:
            (self.log.error if "WITH_ERRORS" in ended else self.log.info)("%s", ended)
            return
        super().execute(context)


def outputs_link(output_uri: str, region: str) -> str:
    """Where a person browses ``output_uri``: the S3 console's folder, else a ``file://`` URL.

    >>> outputs_link("s3://lake/outputs", "eu-west-1")
    'https://eu-west-1.console.aws.amazon.com/s3/buckets/lake?region=eu-west-1&prefix=outputs/'
    >>> outputs_link("/srv/fruits/out", "eu-west-1")
    'file:///srv/fruits/out/'
    """
    if output_uri.startswith("s3://"):
        bucket, _, prefix = output_uri.removeprefix("s3://").partition("/")
        folder = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        return (
            f"https://{region}.console.aws.amazon.com/s3/buckets/{quote(bucket)}"
            f"?region={region}&prefix={quote(folder)}"
        )
    return f"file://{quote(output_uri.rstrip('/'))}/"


class OutputsLink(BaseOperatorLink):
    """The "Outputs" button of :class:`OutputContractSensor`: its output root, browsable."""

    name = "Outputs"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        """:func:`outputs_link` of the sensor's ``output_uri`` in its ``region``."""
        return outputs_link(operator.output_uri, operator.region)


class OutputContractSensor(BaseSensorOperator):
    """Wait until the Spark jobs' outputs under ``output_uri`` satisfy their contract.

    Reads the reports, the PCA CSV's head and the listing of the output root (``ListObjectsV2``
    and ``GetObject`` on S3; plain files locally), through
    :func:`fruits_pipeline.summary.summarize`. Missing files keep the sensor waiting; outputs
    that contradict the contract fail it at once, with every problem named; valid ones are
    described in the task log as ``make demo`` prints them. The XCom is the validation summary.

    :param output_uri: output root, a folder or ``s3://bucket/prefix`` (templated).
    :param batch_id: the batch to check (templated).
    :param aws_conn_id: connection for S3 outputs; unused for local ones.
    :param region: the bucket's region, for the "Outputs" link to the S3 console.
    """

    template_fields: Sequence[str] = ("output_uri", "batch_id")
    operator_extra_links = (OutputsLink(),)

    def __init__(
        self,
        *,
        output_uri: str,
        batch_id: str,
        aws_conn_id: str = "aws_default",
        region: str = "eu-west-1",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.output_uri = output_uri
        self.batch_id = batch_id
        self.aws_conn_id = aws_conn_id
        self.region = region

    def poke(self, context: Context) -> PokeReturnValue:
        """One validation pass."""
        client = (
            S3Hook(aws_conn_id=self.aws_conn_id).get_conn()
            if self.output_uri.startswith("s3")
            else None
        )
        text, findings = summarize(open_store(self.output_uri, client), self.batch_id)
        if findings.wrong:
            raise AirflowFailException(
                f"outputs in {self.output_uri} break the contract: " + "; ".join(findings.wrong)
            )
        if findings.missing:
            self.log.info("still missing: %s", ", ".join(findings.missing))
            return PokeReturnValue(is_done=False)
        for line in text.splitlines():
            self.log.info("%s", line)
        return PokeReturnValue(is_done=True, xcom_value=findings.summary)
