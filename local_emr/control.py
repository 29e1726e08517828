"""EMR's control plane over moto's clusters: lifecycle, rules, step order, idle timeout.

moto keeps the clusters and steps (``DescribeCluster``, ``ListSteps``... answer from them) but
never moves them on. :class:`ControlPlane` does, on a thread, as EMR would:

* a new cluster is ``STARTING``; the launch rules of :mod:`local_emr.rules` are checked (a
  refusal ends it ``TERMINATED_WITH_ERRORS`` with the rule's code and message), then
  ``BOOTSTRAPPING``: its bootstrap rules, at the moment the nodes would fetch the scripts
  (``BOOTSTRAP_FAILURE``), and the node environment its bootstrap action names
  (:mod:`local_emr.nodes`: the Python of its steps), then ``WAITING``;
* steps run one at a time in the order added, ``PENDING`` -> ``RUNNING`` ->
  ``COMPLETED``/``FAILED`` (:mod:`local_emr.runner`), honouring ``ActionOnFailure``;
  a failed step's ``Status.FailureDetails`` holds its one-line error and its ``stderr.gz``;
* ``TerminateJobFlows`` (``TERMINATING``: the running step is killed, pending ones cancelled)
  and ``AutoTerminationPolicy.IdleTimeout`` end it ``TERMINATED``; a terminated cluster
  accepts and runs nothing more. Its staged files are deleted.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from moto.emr.models import Cluster, Step

from local_emr import rules
from local_emr.nodes import NodeBootstrapError, NodeEnvs, archive_uri
from local_emr.runner import SparkEnv, StepOutcome, StepRun, remove
from local_emr.staging import Stage

log = logging.getLogger(__name__)

TERMINAL = frozenset({"TERMINATED", "TERMINATED_WITH_ERRORS"})
ENDING = TERMINAL | {"TERMINATING"}
TERMINATE_ON_FAILURE = frozenset({"TERMINATE_CLUSTER", "TERMINATE_JOB_FLOW"})


def now() -> datetime:
    """The current time, as moto stores it."""
    return datetime.now(timezone.utc)


class LocalCluster(Cluster):
    """moto's cluster whose ``Status.StateChangeReason`` also carries EMR's ``Code``."""

    reason_code: str | None = None

    @property
    def status(self) -> dict[str, Any]:
        """The status moto gives, plus the reason code."""
        status = super().status
        if self.reason_code:
            status["StateChangeReason"]["Code"] = self.reason_code
        return status


class LocalStep(Step):
    """moto's step whose ``Status`` also carries EMR's ``FailureDetails``."""

    failure: dict[str, str] | None = None

    @property
    def status(self) -> dict[str, Any]:
        """The status moto gives, plus the failure details."""
        status = super().status
        if self.failure:
            status["FailureDetails"] = self.failure
        return status


@dataclass
class Tracked:
    """A cluster the control plane drives, with its ``RunJobFlow`` request."""

    cluster: LocalCluster
    request: dict[str, Any]
    region: str
    born: float = field(default_factory=time.monotonic)
    idle_since: float | None = None
    running: tuple[LocalStep, StepRun, threading.Thread] | None = None
    outcome: StepOutcome | None = None
    end_with_error: bool = False
    python: str | None = None

    @property
    def state(self) -> str:
        """The cluster's state."""
        return str(self.cluster.state)

    def pending(self) -> list[LocalStep]:
        """Its steps still ``PENDING``, in the order added."""
        return [s for s in self.cluster.steps if s.state == "PENDING"]


Clients = Callable[[str], dict[str, Any]]
"""Region -> boto3 clients ``{"s3", "iam", "ec2"}`` of the stand-in's endpoint."""


class ControlPlane:
    """Drives every cluster created through the stand-in (see the module doc).

    :param clients: boto3 clients of the stand-in, by region.
    :param workdir: where each cluster's staged buckets and step files go.
    :param spark: how steps run Spark here.
    :param nodes: the node environments; the steps of a cluster whose bootstrap action names
        none run on ``spark.python``.
    :param endpoint: the stand-in's URL, given to steps for boto3.
    :param boot_s: seconds spent in each of ``STARTING`` and ``BOOTSTRAPPING``.
    :param idle_scale: factor on ``IdleTimeout`` (tests shorten it; 1.0 is EMR's).
    """

    def __init__(
        self,
        *,
        clients: Clients,
        workdir: Path,
        spark: SparkEnv,
        nodes: NodeEnvs,
        endpoint: str,
        boot_s: float = 1.0,
        idle_scale: float = 1.0,
        tick_s: float = 0.2,
    ) -> None:
        self.clients = clients
        self.workdir = workdir
        self.spark = spark
        self.nodes = nodes
        self.endpoint = endpoint
        self.boot_s = boot_s
        self.idle_scale = idle_scale
        self.tick_s = tick_s
        self.lock = threading.RLock()
        self.clusters: dict[str, Tracked] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="local-emr-control", daemon=True)

    # ---- what the API layer tells it ---------------------------------------------------

    def adopt(self, cluster: Cluster, request: dict[str, Any], region: str) -> None:
        """Take over a cluster moto just created by ``RunJobFlow``: ``STARTING``, steps pending."""
        with self.lock:
            cluster.__class__ = LocalCluster
            cluster.state = "STARTING"
            cluster.ready_datetime = None
            cluster.end_datetime = None
            for step in cluster.steps:
                self._pend(step)
            self.clusters[cluster.id] = Tracked(cluster, request, region)
        log.info("cluster %s (%s) starting", cluster.id, cluster.name)

    def accepts_steps(self, cluster_id: str) -> bool:
        """Whether ``AddJobFlowSteps`` may add to the cluster (it is not ending or ended)."""
        with self.lock:
            tracked = self.clusters.get(cluster_id)
            return tracked is None or tracked.state not in ENDING

    def steps_added(self, cluster_id: str, previous_state: str) -> None:
        """Undo what moto does on ``AddJobFlowSteps``: the new steps wait, the state stays."""
        with self.lock:
            tracked = self.clusters.get(cluster_id)
            if tracked is None:
                return
            tracked.cluster.state = previous_state
            for step in tracked.cluster.steps:
                if not isinstance(step, LocalStep):  # new: moto made it RUNNING or PENDING
                    self._pend(step)

    def terminate(self, cluster_ids: list[str]) -> None:
        """``TerminateJobFlows``: each live cluster goes ``TERMINATING`` (ended ones stay)."""
        with self.lock:
            for cluster_id in cluster_ids:
                tracked = self.clusters.get(cluster_id)
                if tracked is not None and tracked.state not in ENDING:
                    tracked.cluster.state = "TERMINATING"
                    self._reason(tracked, "USER_REQUEST", "Terminated by user request")

    # ---- the loop ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the control thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and kill every running step (its Spark processes with it)."""
        self._stop.set()
        self._thread.join(timeout=30)
        with self.lock:
            running = [t.running for t in self.clusters.values() if t.running]
        for _, run, thread in running:
            run.kill()
            thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            for cluster_id in list(self.clusters):
                try:
                    self.advance(self.clusters[cluster_id])
                except Exception:  # one cluster's error must not stop the others
                    log.exception("local EMR: cluster %s", cluster_id)
                    self._end(self.clusters[cluster_id], "INTERNAL_ERROR", "stand-in error")

    def advance(self, tracked: Tracked) -> None:
        """Move ``tracked`` on by what is due now."""
        state = tracked.state
        age = time.monotonic() - tracked.born
        if state == "STARTING" and age >= self.boot_s:
            self._start(tracked)
        elif state == "BOOTSTRAPPING" and age >= 2 * self.boot_s:
            self._bootstrap(tracked)
        elif state in ("WAITING", "RUNNING"):
            self._work(tracked)
        elif state == "TERMINATING":
            self._finish_termination(tracked)

    def _start(self, tracked: Tracked) -> None:
        """The instances launch now: the launch rules' check (IAM, EC2), at this moment."""
        clients = self.clients(tracked.region)
        refused = rules.launch_refusals(
            tracked.request, iam=clients["iam"], ec2=clients["ec2"], region=tracked.region
        )
        self._move(tracked, refused, "STARTING", "BOOTSTRAPPING")

    def _bootstrap(self, tracked: Tracked) -> None:
        """The nodes download the bootstrap scripts now: the rules' check, at this moment.

        Then they unpack the node environment (once per archive on this machine).
        """
        s3 = self.clients(tracked.region)["s3"]
        refused = rules.bootstrap_refusals(tracked.request, s3)
        uri = archive_uri(tracked.request)
        if uri and not refused:
            try:
                tracked.python = self.nodes.python(s3, uri)
            except NodeBootstrapError as err:
                refused = [
                    rules.Refusal(
                        rules.BOOTSTRAP_FAILURE,
                        "On the master instance, bootstrap action 1 returned a non-zero return "
                        f"code: the node environment cannot be made: {err}",
                    )
                ]
        if self._move(tracked, refused, "BOOTSTRAPPING", "WAITING"):
            log.info("cluster %s waiting", tracked.cluster.id)

    def _move(
        self, tracked: Tracked, refused: list[rules.Refusal], source: str, target: str
    ) -> bool:
        """End ``tracked`` on the first of ``refused``, else move it ``source`` -> ``target``.

        :returns: whether it moved (not if refused, or terminated meanwhile).
        """
        if refused:
            self._end(tracked, refused[0].code, refused[0].message)
            return False
        with self.lock:
            if tracked.state != source:
                return False
            tracked.cluster.state = target
            if target == "WAITING":
                tracked.cluster.ready_datetime = now()
                tracked.idle_since = time.monotonic()
        return True

    def _work(self, tracked: Tracked) -> None:
        with self.lock:
            if tracked.running is not None:
                if tracked.running[2].is_alive():
                    return
                self._step_done(tracked)
                if tracked.state in ENDING:
                    return
            pending = tracked.pending()
            if pending:
                self._run(tracked, pending[0])
                return
            tracked.cluster.state = "WAITING"
            tracked.idle_since = tracked.idle_since or time.monotonic()
            keep = tracked.request.get("Instances", {}).get("KeepJobFlowAliveWhenNoSteps")
            if not keep:
                self._end(tracked, "ALL_STEPS_COMPLETED", "Steps completed", error=False)
                return
            timeout = tracked.request.get("AutoTerminationPolicy", {}).get("IdleTimeout")
            idle = time.monotonic() - tracked.idle_since
            if timeout and idle >= timeout * self.idle_scale:
                self._end(
                    tracked,
                    "ALL_STEPS_COMPLETED",
                    f"Auto-terminated after {idle:.0f} s idle "
                    f"(AutoTerminationPolicy IdleTimeout {timeout} s x {self.idle_scale})",
                    error=False,
                )

    def _run(self, tracked: Tracked, step: LocalStep) -> None:
        cluster = tracked.cluster
        step.state = "RUNNING"
        step.start_date_time = now()
        cluster.state = "RUNNING"
        tracked.idle_since = None
        folder = self.workdir / cluster.id
        configurations = tracked.request.get("Configurations", [])
        run = StepRun(
            step_id=step.id,
            args=list(step.args),
            folder=folder / "steps" / step.id,
            stage=Stage(self.clients(tracked.region)["s3"], folder / "s3"),
            spark=dataclasses.replace(self.spark, python=tracked.python or self.spark.python),
            endpoint=self.endpoint,
            region=tracked.region,
            emr_python=configuration(configurations, "spark-env", "PYSPARK_PYTHON"),
            spark_defaults=configuration(configurations, "spark-defaults"),
            log_uri=tracked.request.get("LogUri"),
            cluster_id=cluster.id,
        )

        def execute() -> None:
            tracked.outcome = run.run()

        thread = threading.Thread(target=execute, name=f"local-emr-{step.id}", daemon=True)
        tracked.running = (step, run, thread)
        log.info("cluster %s: step %s (%s) running", cluster.id, step.id, step.name)
        thread.start()

    def _step_done(self, tracked: Tracked) -> None:
        assert tracked.running is not None
        step = tracked.running[0]
        outcome = tracked.outcome or StepOutcome(exit_code=None, error="step runner crashed")
        tracked.running, tracked.outcome = None, None
        step.end_date_time = now()
        tracked.idle_since = time.monotonic()
        if outcome.exit_code == 0:
            step.state = "COMPLETED"
            log.info(
                "step %s completed in %.1f s: %d objects written, %d deleted",
                step.id,
                outcome.seconds,
                len(outcome.written),
                len(outcome.deleted),
            )
            return
        step.state = "FAILED"
        step.failure = {"Reason": "Unknown Error.", "Message": outcome.error}
        if outcome.log_folder:
            step.failure["LogFile"] = f"{outcome.log_folder}stderr.gz"
        log.info("step %s failed in %.1f s: %s", step.id, outcome.seconds, outcome.error)
        if step.action_on_failure == "CONTINUE":
            return
        for later in tracked.pending():
            self._cancel(later)
        if step.action_on_failure in TERMINATE_ON_FAILURE:
            self._end(tracked, "STEP_FAILURE", "Shut down as step failed")

    def _finish_termination(self, tracked: Tracked) -> None:
        with self.lock:
            running = tracked.running
        if running is not None:
            running[1].kill()
            running[2].join()
            with self.lock:
                self._cancel(running[0])
                tracked.running, tracked.outcome = None, None
        reason = tracked.cluster.last_state_change_reason
        code = tracked.cluster.reason_code or "USER_REQUEST"
        self._end(tracked, code, reason, error=tracked.end_with_error, final=True)

    # ---- state helpers -----------------------------------------------------------------

    def _end(
        self, tracked: Tracked, code: str, message: str, *, error: bool = True, final: bool = False
    ) -> None:
        """End the cluster: pending steps cancelled, staged files deleted.

        With a step running, the cluster goes ``TERMINATING`` and the loop kills the step first.
        """
        with self.lock:
            if tracked.state in TERMINAL or (tracked.state == "TERMINATING" and not final):
                return
            if tracked.running is not None:
                tracked.cluster.state = "TERMINATING"
                tracked.end_with_error = error
                self._reason(tracked, code, message)
                return
            for step in tracked.pending():
                self._cancel(step)
            tracked.cluster.state = "TERMINATED_WITH_ERRORS" if error else "TERMINATED"
            tracked.cluster.end_datetime = now()
            self._reason(tracked, code, message)
        remove(self.workdir / tracked.cluster.id)
        log.info("cluster %s %s: %s %s", tracked.cluster.id, tracked.state, code, message)

    @staticmethod
    def _reason(tracked: Tracked, code: str, message: str) -> None:
        tracked.cluster.reason_code = code
        tracked.cluster.last_state_change_reason = message

    @staticmethod
    def _pend(step: Step) -> None:
        step.__class__ = LocalStep
        step.state = "PENDING"
        step.start_date_time = None

    @staticmethod
    def _cancel(step: Step) -> None:
        step.state = "CANCELLED"
        step.end_date_time = now()


def configuration(
    configurations: list[dict[str, Any]], classification: str, name: str | None = None
) -> Any:
    """A cluster ``Configurations`` entry's properties (``name``: one export inside it).

    >>> conf = [{"Classification": "spark-env", "Configurations": [
    ...     {"Classification": "export", "Properties": {"PYSPARK_PYTHON": "/usr/bin/python3"}}]}]
    >>> configuration(conf, "spark-env", "PYSPARK_PYTHON")
    '/usr/bin/python3'
    """
    for entry in configurations or []:
        if entry.get("Classification") != classification:
            continue
        if name is None:
            return dict(entry.get("Properties") or {})
        for inner in entry.get("Configurations") or []:
            if name in (inner.get("Properties") or {}):
                return inner["Properties"][name]
    return None if name else {}
