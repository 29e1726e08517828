"""A node's bootstrap: pip from the package index (before) against the archive (now).

``make bench-bootstrap`` (or ``python benchmarks/bench_bootstrap.py``), on an idle machine:

1. builds the node environment archive (:mod:`fruits_pipeline.node_env`) into a temporary
   folder, timed, and prints its size (pip's cache serves the wheels ``make setup`` fetched);
2. **before**, as the bootstrap did until this archive: a fresh venv of this machine's CPython,
   ``pip install --no-cache-dir --constraint requirements.lock`` of the jobs' packages from
   the package index, then the import check;
3. **now**: the real ``install_python_deps.sh`` on a fake node (this machine's CPython as
   ``python3.11``; ``aws s3 cp`` streams the archive from a moto server on loopback, as S3
   would within the region), which makes the venv, unpacks and runs its import check.

It prints both times and before / now. The EMR planner's ``BOOTSTRAP_S`` is the "now" figure.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT / "spark_jobs")]

from fruits_pipeline import node_env  # noqa: E402
from fruits_pipeline.config import EMR_BOOTSTRAP_SCRIPT, LOCK_FILE  # noqa: E402

BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)
BUCKET = "bench-node-env"
KEY = "code/node-env/env.tar.gz"
IMPORT_CHECK = "import boto3, h5py, keras, matplotlib, numpy, pandas, PIL, pyarrow, tensorflow"


def timed(command: list[str], **kwargs) -> float:
    """Run ``command`` (it must succeed); its wall time in seconds."""
    started = time.monotonic()
    subprocess.run(command, check=True, **kwargs)
    return time.monotonic() - started


def before(work: Path) -> float:
    """A fresh venv, pip from the index at the lock's versions, the import check."""
    venv = work / "before"
    started = time.monotonic()
    subprocess.run([BASE_PYTHON, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-cache-dir"]
    subprocess.run([*pip, "--constraint", str(ROOT / LOCK_FILE), *node_env.PACKAGES], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-c", IMPORT_CHECK], check=True)
    return time.monotonic() - started


def now(work: Path, archive: Path) -> float:
    """The bootstrap script on a fake node, the archive served by a moto server."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._server.server_port}"
    try:
        keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="eu-west-1", **keys)
        s3.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        s3.upload_file(str(archive), BUCKET, KEY)
        shims = work / "bin"
        shims.mkdir()
        download = textwrap.dedent(
            f"""\
            import shutil, sys, boto3
            s3 = boto3.client("s3", endpoint_url="{endpoint}", region_name="eu-west-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
            body = s3.get_object(Bucket="{BUCKET}", Key="{KEY}")["Body"]
            shutil.copyfileobj(body, sys.stdout.buffer, 8 << 20)
            """
        )
        (shims / "aws.py").write_text(download)
        (shims / "aws").write_text(f"#!/bin/sh\nexec {sys.executable} {shims / 'aws.py'}\n")
        (shims / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
        for shim in ("aws", "sudo"):
            (shims / shim).chmod(0o755)
        env = {
            "PATH": f"{shims}:/usr/bin:/bin",
            "HOME": str(work),
            "FRUITS_BOOTSTRAP_PYTHON": BASE_PYTHON,
            "FRUITS_NODE_ENV": str(work / "opt" / "fruits" / "env"),
        }
        script = ROOT / EMR_BOOTSTRAP_SCRIPT
        return timed(["bash", str(script), f"s3://{BUCKET}/{KEY}"], env=env)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-before", action="store_true", help="no pip from the index")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-bootstrap-") as tmp:
        work = Path(tmp)
        started = time.monotonic()
        archive = node_env.build(ROOT / LOCK_FILE, work / "env.tar.gz")
        built = time.monotonic() - started
        print(
            f"archive: {archive.stat().st_size / 1e6:.0f} MB "
            f"({len(node_env.PACKAGES)} packages), built in {built:.0f} s"
        )
        (work / "now").mkdir()
        new = now(work / "now", archive)
        print(f"now (archive from S3, unpack, import check): {new:.1f} s")
        if not args.skip_before:
            old = before(work)
            print(f"before (fresh venv, pip from the index, import check): {old:.1f} s")
            print(f"before / now: {old / new:.1f}x")


if __name__ == "__main__":
    main()
