"""The stand-in's server: moto's S3/EMR/IAM/EC2 API on a loopback port, EMR driven for real.

:class:`LocalEmr` serves moto's API (one in-process WSGI server, threads) behind a thin
layer that hands the EMR calls to the :class:`~local_emr.control.ControlPlane`:

* ``RunJobFlow``: moto creates the cluster; the control plane adopts it with the request as
  the client sent it (``STARTING``, steps ``PENDING``) before the reply leaves;
* ``AddJobFlowSteps``: refused on an ending or ended cluster (EMR's ``ValidationException``);
  otherwise moto adds the steps and the control plane keeps them ``PENDING``;
* ``TerminateJobFlows``: answered by the control plane (``TERMINATING`` -> ``TERMINATED``).

Safety: it refuses to start with AWS credentials in its environment other than the fixed
test keys, or with a non-loopback address, so nothing (images, staged data) can leave the
machine and no real account can be touched. IAM's AWS-managed policies are loaded
(``MOTO_IAM_LOAD_MANAGED_POLICIES``) so ``AmazonEMRServicePolicy_v2`` can be attached.
"""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
from botocore.config import Config

log = logging.getLogger(__name__)

TEST_KEY = "testing"
"""The one access key id and secret the stand-in and its clients use."""
CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
)
PROFILE_VARIABLES = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE")
REGION_DEFAULT = "eu-west-1"
"""The region the stand-in and its clients default to (GDPR: EU only)."""
DEFAULT_ACCOUNT = "123456789012"
"""moto's account for the test keys."""
SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/([a-z0-9-]+)/")
"""The region and service of a SigV4 ``Authorization`` header."""
EMR_TARGET = "ElasticMapReduce."


class UnsafeEnvironmentError(RuntimeError):
    """The stand-in would run with real credentials, or reachable from the network."""


CONTAINER_MARKS = (Path("/.dockerenv"), Path("/run/.containerenv"))
"""Files Docker and Podman put in a container's root."""


def in_container() -> bool:
    """Whether this process runs in a Docker or Podman container."""
    return any(mark.exists() for mark in CONTAINER_MARKS)


def check_environment(environ: Mapping[str, str], host: str, *, container: bool = False) -> None:
    """Refuse real-looking AWS credentials in ``environ`` and a non-loopback ``host``.

    ``container=True`` lets a stand-in that runs in a container listen on its network
    interface (compose's private network; the host publishes the port on loopback only).

    >>> check_environment({"AWS_ACCESS_KEY_ID": "testing"}, "127.0.0.1")
    >>> check_environment({"AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE"}, "127.0.0.1")
    Traceback (most recent call last):
    ...
    local_emr.server.UnsafeEnvironmentError: AWS_ACCESS_KEY_ID is set to something other than ...
    """
    for name in CREDENTIAL_VARIABLES:
        if environ.get(name) not in (None, "", TEST_KEY):
            raise UnsafeEnvironmentError(
                f"{name} is set to something other than the test key {TEST_KEY!r}: the local "
                "EMR stand-in does not start next to real AWS credentials (unset them)"
            )
    for name in PROFILE_VARIABLES:
        if environ.get(name):
            raise UnsafeEnvironmentError(f"{name} is set: unset it to run the local EMR stand-in")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not (container and in_container()):
        raise UnsafeEnvironmentError(
            f"bind address {host} is not loopback: the stand-in serves 127.0.0.1 only "
            "(--container, inside a container, allows its private network)"
        )


def connection_uri(endpoint: str, region: str) -> str:
    """The ``AIRFLOW_CONN_AWS_DEFAULT`` value that points Airflow's AWS hooks at ``endpoint``.

    >>> connection_uri("http://127.0.0.1:5055", "eu-west-1")
    'aws://testing:testing@/?region_name=eu-west-1&endpoint_url=http%3A%2F%2F127.0.0.1%3A5055'
    """
    return (
        f"aws://{TEST_KEY}:{TEST_KEY}@/?region_name={region}"
        f"&endpoint_url={quote(endpoint, safe='')}"
    )


def _scope(environ: Mapping[str, Any], default_region: str) -> tuple[str, str]:
    """The region and service a request is signed for."""
    match = SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    return (match.group(1), match.group(2)) if match else (default_region, "")


def _body(environ: dict[str, Any]) -> bytes:
    """Read the request body and put it back for the next reader."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(raw)
    return raw


Reply = tuple[str, list[tuple[str, str]], bytes]
"""A WSGI answer: status line, headers, body."""


class ApiLayer:
    """WSGI middleware over moto's app: EMR calls to the control plane, bucket policies aside.

    The control plane sees ``RunJobFlow``, ``AddJobFlowSteps`` and ``TerminateJobFlows``.

    moto denies every object request on a bucket whose policy has a ``Deny`` statement with
    a ``Condition`` (``IAMPolicyStatement._check_conditions`` fails without request context
    and yields ``DENIED`` whatever the effect), so the TLS-only policy would lock the bucket.
    Here ``PutBucketPolicy``/``GetBucketPolicy``/``DeleteBucketPolicy`` are answered from
    :attr:`policies`: stored and returned as sent, not enforced.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], control: Any, region: str) -> None:
        self.app = app
        self.control = control
        self.region = region
        self.policies: dict[str, bytes] = {}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        """Route bucket policies and the EMR calls the control plane drives; pass the rest."""
        region, service = _scope(environ, self.region)
        if service == "s3" and "policy" in environ.get("QUERY_STRING", "").split("&"):
            return self._bucket_policy(environ, start_response)
        handler = {
            "RunJobFlow": self._run_job_flow,
            "AddJobFlowSteps": self._add_steps,
            "TerminateJobFlows": self._terminate,
        }.get(environ.get("HTTP_X_AMZ_TARGET", "").removeprefix(EMR_TARGET))
        if handler is None:
            return self.app(environ, start_response)
        request = json.loads(_body(environ) or b"{}")
        status, headers, body = handler(environ, request, region)
        return self._reply(start_response, status, headers, body)

    def _run_job_flow(self, environ: dict[str, Any], request: dict, region: str) -> Reply:
        with self.control.lock:
            status, headers, body = self._call(environ)
            if status.startswith("200"):
                cluster = self._cluster(json.loads(body)["JobFlowId"])
                self.control.adopt(cluster, request, region)
        return status, headers, body

    def _add_steps(self, environ: dict[str, Any], request: dict, region: str) -> Reply:
        cluster_id = request.get("JobFlowId", "")
        if not self.control.accepts_steps(cluster_id):
            message = (
                "A job flow that is shutting down, terminated, or finished may not be modified."
            )
            body = json.dumps({"__type": "ValidationException", "message": message}).encode()
            return "400 Bad Request", [("Content-Type", "application/x-amz-json-1.1")], body
        cluster = self._cluster(cluster_id)
        previous = None if cluster is None else str(cluster.state)
        with self.control.lock:
            status, headers, body = self._call(environ)
            if previous is not None:
                self.control.steps_added(cluster_id, previous)
        return status, headers, body

    def _terminate(self, environ: dict[str, Any], request: dict, region: str) -> Reply:
        self.control.terminate(list(request.get("JobFlowIds", [])))
        return "200 OK", [("Content-Type", "application/x-amz-json-1.1")], b"{}"

    def _bucket_policy(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> list[bytes]:
        bucket = environ.get("PATH_INFO", "/").strip("/").split("/")[0]
        method = environ["REQUEST_METHOD"]
        if method == "PUT":
            self.policies[bucket] = _body(environ)
            return self._reply(start_response, "204 No Content", [], b"")
        if method == "DELETE":
            self.policies.pop(bucket, None)
            return self._reply(start_response, "204 No Content", [], b"")
        if bucket in self.policies:
            return self._reply(start_response, "200 OK", [], self.policies[bucket])
        error = (
            "<?xml version='1.0' encoding='UTF-8'?><Error><Code>NoSuchBucketPolicy</Code>"
            f"<Message>The bucket policy does not exist</Message><BucketName>{bucket}"
            "</BucketName></Error>"
        ).encode()
        headers = [("Content-Type", "application/xml")]
        return self._reply(start_response, "404 Not Found", headers, error)

    def _call(self, environ: dict[str, Any]) -> Reply:
        captured: dict[str, Any] = {}

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            captured["status"], captured["headers"] = status, headers

        chunks = self.app(environ, start)
        try:
            body = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        return captured["status"], captured["headers"], body

    @staticmethod
    def _reply(
        start_response: Callable[..., Any], status: str, headers: list, body: bytes
    ) -> list[bytes]:
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return [body]

    @staticmethod
    def _cluster(cluster_id: str) -> Any:
        """The moto cluster of that id, or None.

        moto files EMR under the endpoint's region, not the signed one (with an IP endpoint:
        its default region), so every region is searched.
        """
        from moto.emr.models import emr_backends

        for backend in emr_backends[DEFAULT_ACCOUNT].values():
            if cluster_id in backend.clusters:
                return backend.clusters[cluster_id]
        return None


class LocalEmr:
    """moto + the EMR control plane on ``host:port``; a context manager that stops all.

    :param port: the port (0: any free one; see :attr:`endpoint`).
    :param workdir: staging and step folders (a temporary folder when None).
    :param region: the region clients default to.
    :param host: the bind address; loopback only.
    :param master: Spark master of every step (``local-cluster[workers,cores,MiB]``).
    :param boot_s: seconds a cluster spends starting, and again bootstrapping.
    :param idle_scale: factor on each cluster's ``IdleTimeout`` (tests shorten it).
    :param environ: the environment checked for credentials (default: this process's).
    :param container: allow a non-loopback ``host`` when running in a container.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        workdir: Path | None = None,
        region: str = REGION_DEFAULT,
        host: str = "127.0.0.1",
        master: str = "local-cluster[2,1,2048]",
        boot_s: float = 1.0,
        idle_scale: float = 1.0,
        environ: Mapping[str, str] | None = None,
        container: bool = False,
    ) -> None:
        check_environment(os.environ if environ is None else environ, host, container=container)
        self.host, self.port, self.region = host, port, region
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="local-emr-")
        self.workdir = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.master, self.boot_s, self.idle_scale = master, boot_s, idle_scale
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.control: Any = None
        self._clients: dict[str, dict[str, Any]] = {}

    @property
    def endpoint(self) -> str:
        """``http://host:port`` of the running server."""
        return f"http://{self.host}:{self.port}"

    def client(self, service: str, region: str | None = None) -> Any:
        """A boto3 client of ``service`` on the stand-in, with the test keys."""
        return boto3.client(
            service,
            region_name=region or self.region,
            endpoint_url=self.endpoint,
            aws_access_key_id=TEST_KEY,
            aws_secret_access_key=TEST_KEY,
            config=Config(retries={"max_attempts": 2}),
        )

    def clients(self, region: str) -> dict[str, Any]:
        """The S3, IAM and EC2 clients the control plane uses in ``region`` (made once)."""
        if region not in self._clients:
            self._clients[region] = {n: self.client(n, region) for n in ("s3", "iam", "ec2")}
        return self._clients[region]

    def start(self) -> LocalEmr:
        """Serve moto and start the control plane; return self once requests are answered."""
        os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
        from moto.server import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        from fruits_pipeline.config import CLASS_ARCHIVES, NODE_ENVS
        from local_emr.control import ControlPlane
        from local_emr.nodes import NodeEnvs
        from local_emr.runner import SparkEnv, shared_spark_home

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        moto_app = DomainDispatcherApplication(create_backend_app)
        spark = SparkEnv(
            shared_spark_home(CLASS_ARCHIVES, self.workdir),
            python=str(Path(os.sys.executable)),
            master=self.master,
        )
        layer = ApiLayer(moto_app, None, self.region)
        self._server = make_server(self.host, self.port, layer, threaded=True)
        self.port = self._server.server_port
        self.control = ControlPlane(
            clients=self.clients,
            workdir=self.workdir / "clusters",
            spark=spark,
            nodes=NodeEnvs(Path(NODE_ENVS).expanduser() / "unpacked"),
            endpoint=self.endpoint,
            boot_s=self.boot_s,
            idle_scale=self.idle_scale,
        )
        layer.control = self.control
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="local-emr-server", daemon=True
        )
        self._thread.start()
        self.control.start()
        self.client("s3").list_buckets()
        log.info("local EMR stand-in on %s (workdir %s)", self.endpoint, self.workdir)
        return self

    def stop(self) -> None:
        """Stop the control plane (killing running steps), then the server; drop the workdir."""
        if self.control is not None:
            self.control.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> LocalEmr:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
