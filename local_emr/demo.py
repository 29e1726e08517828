"""``make demo-emr``: the whole ``fruits_emr`` run against the local EMR stand-in.

1. The stand-in starts on 127.0.0.1 (:class:`~local_emr.server.LocalEmr`).
2. ``make aws-bootstrap`` runs against it (``AWS_ENDPOINT_URL``): EU bucket, encryption,
   public access block, TLS-only policy, roles, instance profile, network tags.
3. ``airflow dags test fruits_emr <batch>`` runs with ``AIRFLOW_CONN_AWS_DEFAULT`` pointed at
   it: preflight, sync, upload, cluster, both steps on Spark, validation, termination.
4. It prints what ``make demo`` prints, for the bucket's outputs (the batch's photos in,
   featurized, quarantined and already featurized; the PCA's k and variance; the S3 URIs of
   the features, the CSV matrix, the model and the plots), the cluster's final state, and how
   long each phase and step took.
5. It runs the DAG again for the next day, with nothing new: ``plan_work`` decides so from the
   listings, and no cluster starts. It prints that decision and the stand-in's cluster count,
   then stops the stand-in and its Spark. It exits 1 when the outputs break their contract or
   the second run started a cluster.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from fruits_pipeline.config import PROJECT_ROOT, Settings
from fruits_pipeline.stores import open_store
from fruits_pipeline.summary import summarize
from local_emr.server import REGION_DEFAULT, TEST_KEY, LocalEmr, connection_uri


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m local_emr.demo", description=__doc__.splitlines()[0]
    )
    p.add_argument("--port", type=int, default=5055, help="stand-in port (%(default)s)")
    p.add_argument("--bucket", default="fruits-lake-eu", help="bucket (%(default)s)")
    p.add_argument(
        "--batch", required=True, type=date.fromisoformat, help="logical date (YYYY-MM-DD)"
    )
    p.add_argument("--workdir", type=Path, default=PROJECT_ROOT / "out" / "local-emr")
    p.add_argument("--log", type=Path, required=True, help="where the Airflow run's log goes")
    return p


def run(command: list[str], env: dict[str, str], log: Path | None = None) -> float:
    """Run ``command`` (its output into ``log`` when given); seconds taken. Exit on failure."""
    started = time.monotonic()
    if log is None:
        done = subprocess.run(command, env=env, check=False)
    else:
        with log.open("w") as out:
            done = subprocess.run(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, check=False
            )
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:]) if log else ""
        raise SystemExit(f"{tail}\n{' '.join(command[:4])} failed ({done.returncode})")
    return time.monotonic() - started


def describe(emr: Any, batch: str) -> list[str]:
    """The batch's cluster: final state and reason, each step's state and run time."""
    lines = []
    for listed in emr.list_clusters()["Clusters"]:
        if listed["Name"] != f"fruits-{batch}":
            continue
        deadline = time.monotonic() + 60
        while True:
            cluster = emr.describe_cluster(ClusterId=listed["Id"])["Cluster"]
            if cluster["Status"]["State"].startswith("TERMINATED") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        reason = cluster["Status"].get("StateChangeReason", {})
        lines.append(
            f"cluster {cluster['Id']}: {cluster['Status']['State']} "
            f"({reason.get('Code')}: {reason.get('Message')})"
        )
        for step in reversed(emr.list_steps(ClusterId=cluster["Id"])["Steps"]):
            timeline = step["Status"]["Timeline"]
            took = (
                (timeline["EndDateTime"] - timeline["StartDateTime"]).total_seconds()
                if "EndDateTime" in timeline and "StartDateTime" in timeline
                else None
            )
            lines.append(
                f"  step {step['Id']} {step['Name']}: {step['Status']['State']}"
                + (f" in {took:.0f} s" if took is not None else "")
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Start the stand-in, bootstrap, run the DAG, print the outputs; stop everything."""
    args = parser().parse_args(argv)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with LocalEmr(args.port, workdir=args.workdir) as emr:
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": TEST_KEY,
            "AWS_SECRET_ACCESS_KEY": TEST_KEY,
            "AWS_DEFAULT_REGION": REGION_DEFAULT,
            "AWS_ENDPOINT_URL": emr.endpoint,
            "AIRFLOW_CONN_AWS_DEFAULT": connection_uri(emr.endpoint, REGION_DEFAULT),
            "FRUITS_BUCKET": args.bucket,
            "FRUITS_STEP_POKE_INTERVAL_S": "5",
        }
        print(f"local EMR stand-in on {emr.endpoint}", flush=True)
        took = {"aws-bootstrap": run(["make", "-s", "aws-bootstrap", f"BUCKET={args.bucket}"], env)}
        airflow = str(Path(sys.executable).with_name("airflow"))
        run([airflow, "db", "migrate"], env, args.log.with_suffix(".migrate.log"))
        batch = args.batch.isoformat()
        took["fruits_emr"] = run([airflow, "dags", "test", "fruits_emr", batch], env, args.log)
        print(f"Airflow run log: {args.log}")
        outputs = open_store(Settings(bucket=args.bucket).output_uri, emr.client("s3"))
        text, findings = summarize(outputs, batch)
        print(text)
        print("\n".join(describe(emr.client("emr"), batch)))
        started = nothing_new_run(emr.client("emr"), airflow, env, args, took)
        print(", ".join(f"{name} {seconds:.0f} s" for name, seconds in took.items()))
    return 0 if findings.ok and not started else 1


def nothing_new_run(emr: Any, airflow: str, env: dict[str, str], args: Any, took: dict) -> int:
    """Run the DAG for the next day with no new photo; print its decision; clusters started."""
    again = (args.batch + timedelta(days=1)).isoformat()
    log = args.log.with_name(f"{args.log.stem}.{again}.log")
    before = len(emr.list_clusters()["Clusters"])
    took["the same photos again"] = run([airflow, "dags", "test", "fruits_emr", again], env, log)
    started = len(emr.list_clusters()["Clusters"]) - before
    decided = re.findall(r"nothing new: .*: no job runs", log.read_text())
    reason = decided[-1] if decided else "(no nothing-new decision in the log)"
    print(f"run of {again}, the same photos again: {reason}")
    print(f"clusters started by that run: {started} (log: {log})")
    return started


if __name__ == "__main__":
    sys.exit(main())
