"""What the stand-in's nodes get from their bootstrap action: the jobs' Python environment.

On EMR, the bootstrap script (``spark_jobs/bootstrap/install_python_deps.sh``) makes a virtual
environment of Amazon Linux's ``python3.11`` on each node and unpacks the node environment
archive its argument names into it (:mod:`fruits_pipeline.node_env`). The stand-in cannot run
the script (it calls ``dnf`` and the AWS CLI as root) and does what it does instead: a virtual
environment of this machine's CPython, never the project's virtualenv, with the archive
unpacked into its ``site-packages``. Each archive is unpacked once per machine (by its key and
ETag), as a node image would hold it, and the cluster's steps run on that environment's Python.

The script's import check is not repeated here: a step shows what its executors import.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

log = logging.getLogger(__name__)


def archive_uri(request: dict[str, Any]) -> str | None:
    """The node environment archive a bootstrap action names (its ``s3://...tar.gz`` argument).

    >>> archive_uri({"BootstrapActions": [{"ScriptBootstrapAction": {
    ...     "Path": "s3://b/code/v/bootstrap/install_python_deps.sh",
    ...     "Args": ["s3://b/code/node-env/python-abc.tar.gz"]}}]})
    's3://b/code/node-env/python-abc.tar.gz'
    """
    for action in request.get("BootstrapActions", []):
        for arg in action.get("ScriptBootstrapAction", {}).get("Args", []):
            if arg.startswith("s3://") and arg.endswith(".tar.gz"):
                return arg
    return None


PURELIB = "import sysconfig; print(sysconfig.get_path('purelib'))"
"""Prints an interpreter's ``site-packages`` (as the bootstrap script asks the node's)."""


class NodeBootstrapError(Exception):
    """The node environment cannot be made: its archive is not in S3, or does not unpack."""


class NodeEnvs:
    """The unpacked node environments of this machine, one per archive, in ``folder``.

    :param folder: where the environments live (kept from one stand-in to the next).
    :param base_python: the interpreter each environment is made of (this machine's CPython,
        as ``python3.11`` on the nodes); default: the base of the running one.
    """

    def __init__(self, folder: Path, base_python: str | None = None) -> None:
        self.folder = folder
        self.base_python = base_python or getattr(sys, "_base_executable", sys.executable)

    def python(self, s3: Any, uri: str) -> str:
        """The Python of the environment unpacked from ``uri``, unpacking it first if needed.

        :raises NodeBootstrapError: when ``HeadObject`` finds no object at ``uri``, or the
            object is not a gzipped tar.
        """
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        try:
            etag = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
        except ClientError as err:
            raise NodeBootstrapError(f"{uri}: {err.response['Error']['Code']}") from err
        digest = hashlib.sha256(etag.encode()).hexdigest()[:12]
        env = self.folder / f"{Path(key).name.removesuffix('.tar.gz')}-{digest}"
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / ".lock").open("w") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)  # another stand-in may be unpacking it
            if not (env / "bin" / "python").exists():
                self._unpack(s3, bucket, key, env)
        return str(env / "bin" / "python")

    def _unpack(self, s3: Any, bucket: str, key: str, env: Path) -> None:
        """``python -m venv --without-pip``, then ``GetObject`` streamed into its site-packages."""
        building = env.with_name(f".{env.name}.{uuid.uuid4().hex[:8]}")
        try:
            subprocess.run(
                [self.base_python, "-m", "venv", "--without-pip", str(building)], check=True
            )
            site = subprocess.run(
                [building / "bin" / "python", "-c", PURELIB],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            body = s3.get_object(Bucket=bucket, Key=key)["Body"]
            try:
                with tarfile.open(fileobj=body, mode="r|gz") as archive:
                    archive.extractall(site, filter="data")
            except (tarfile.TarError, EOFError, OSError) as err:
                raise NodeBootstrapError(f"s3://{bucket}/{key}: {err}") from err
            building.rename(env)
            log.info("node environment s3://%s/%s unpacked into %s", bucket, key, env)
        finally:
            shutil.rmtree(building, ignore_errors=True)
