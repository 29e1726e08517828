"""A small batch's fixed costs: where a job's seconds go before and after its work, side by side.

``make bench-startup`` (or ``python benchmarks/bench_startup.py``) runs the two jobs as the
local DAG runs them (``steps.local_target``, ``steps.job_args``: ``local[*]``, the same
arguments) on the repository's 96 sample photos, ``--pairs`` times (3), alternating:

(a) **without** a class archive: the JVM loads Spark's classes from its jars;
(b) **with** the job's class archive (:mod:`fruits_pipeline.class_archive`), dumped first by
    one run that is not counted.

Then (c) featurize once more over the same lake with ``--skip-existing``: nothing is new, so
the job commits an empty batch before reading weights or starting TensorFlow.

Each run's wall time is split by the lines it prints: JVM and Python start (to Spark's
``Running Spark version``), the Spark session (to the job's own start, from its report's
``timings_s``), the job's laps (featurize: listing, weights, featurize, which holds the
workers' TensorFlow import and net build, the writes and the commit; PCA: fit, write), and the
shutdown after the commit. It prints the median pair of each job, and the ratio b/a. Run it on
an otherwise idle machine: the figures in README come from it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT / "spark_jobs")]

from fruits_jobs import contract  # noqa: E402
from fruits_pipeline.class_archive import ClassArchive  # noqa: E402
from fruits_pipeline.config import SAMPLE_IMAGES, default_weights  # noqa: E402
from fruits_pipeline.steps import (  # noqa: E402
    FEATURIZE,
    PCA,
    job_args,
    local_java_options,
    local_target,
)

SPARK_STARTED = re.compile(r"INFO SparkContext: Running Spark version")
PREPARED = re.compile(r"Job 0 finished: save at .*, took ([\d.]+) ms")
"""The first Spark job of featurize: the Python workers' TensorFlow import and net build."""
JOB_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO fruits_jobs\.(\w+) (.*)$")
COMMITTED = {FEATURIZE: "batch ", PCA: "PCA fit "}
"""How the job's last own line starts: it is logged once the report is committed."""


def count_photos(folder: Path) -> int:
    """The images under ``folder``: the rows a PCA after their featurize fits at most."""
    return sum(1 for p in folder.rglob("*") if contract.is_image_key(p.name))


def run_job(
    job: str, run: dict, lake: Path, output: Path, weights: str, java: str, planned: bool = True
) -> dict:
    """Run ``job`` as the local DAG does; its wall time split into phases (seconds).

    :param planned: run featurize as after the DAG's plan found new photos (``--expect-new``).
    """
    photos = count_photos(lake)
    work = {"featurize": planned, "fit_rows": photos}
    args = job_args(job, run, str(lake), str(output), weights, work)
    command = local_target(local_java_options(job, java, photos)).command(job, args)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    started = time.time()
    spark_at = committed_at = None
    prepare_s = 0.0
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if spark_at is None and SPARK_STARTED.search(line):
                spark_at = time.time() - started
            if found := PREPARED.search(line):
                prepare_s = float(found.group(1)) / 1000
            own = JOB_LINE.match(line.strip())
            if own and own.group(3).startswith(COMMITTED[job]):
                stamp = datetime.strptime(own.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                committed_at = stamp - started
    wall = time.time() - started
    if process.returncode != 0 or spark_at is None or committed_at is None:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode})")
    report_key = (
        contract.featurize_report_key(run["batch_id"])
        if job == FEATURIZE
        else (contract.PCA_REPORT_KEY)
    )
    laps = json.loads((output / report_key).read_text())[contract.R_TIMINGS]
    job_start = committed_at - laps["total"]
    phases = {
        "JVM and Python start": spark_at,
        "Spark session": job_start - spark_at,
        **{f"job: {name}": seconds for name, seconds in laps.items() if name != "total"},
        "shutdown": wall - committed_at,
    }
    if job == FEATURIZE and "weights" in laps:
        phases["(in featurize: workers' TensorFlow and net)"] = prepare_s
    return {"wall": wall, **phases}


def both(lake: Path, output: Path, weights: str, options: dict[str, str], batch: str) -> list:
    """Featurize then PCA into ``output`` with the JVM ``options`` of each: their splits."""
    run = {"batch_id": batch, "full_recompute": False, "k": None, "variance": 0.9}
    return [run_job(job, run, lake, output, weights, options[job]) for job in (FEATURIZE, PCA)]


def median_run(measured: list[dict]) -> dict:
    """The run of median wall time."""
    return sorted(measured, key=lambda m: m["wall"])[len(measured) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=SAMPLE_IMAGES)
    parser.add_argument("--weights", default=os.environ.get("FRUITS_WEIGHTS") or default_weights())
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    photos = count_photos(args.images)
    print(f"{photos} photos of {args.images}, weights {args.weights}, local[*]", flush=True)
    measured: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="fruits-startup-") as folder:
        tmp = Path(folder)
        archives = {job: ClassArchive.for_job(str(tmp / "jvm"), job) for job in (FEATURIZE, PCA)}
        dumping = {job: archive.java_option() for job, archive in archives.items()}
        both(args.images, tmp / "dump", args.weights, dumping, "dump")  # not counted
        for archive in archives.values():
            archive.finish(succeeded=True)
        sizes = {job: archive.path.stat().st_size / 2**20 for job, archive in archives.items()}
        options = {
            "(a) no archive": dict.fromkeys((FEATURIZE, PCA), ""),
            "(b) archive": {job: archive.java_option() for job, archive in archives.items()},
        }
        for n in range(args.pairs):  # (a) then (b): a drift of the machine hits both
            for name, jvm in options.items():
                output = tmp / f"out-{n}-{name[1]}"
                for job, split in zip(
                    (FEATURIZE, PCA), both(args.images, output, args.weights, jvm, "b"), strict=True
                ):
                    measured.setdefault((job, name), []).append(split)
        again = {"batch_id": "again", "full_recompute": False, "k": None, "variance": 0.9}
        nothing = run_job(  # as the job's own check meets it: the DAG would not start it
            FEATURIZE,
            again,
            args.images,
            output,
            args.weights,
            options["(b) archive"][FEATURIZE],
            planned=False,
        )

    for job in (FEATURIZE, PCA):
        a, b = (measured[(job, name)] for name in options)
        print(f"\n{job} on {photos} photos, the median of {args.pairs} runs (seconds)")
        print(f"{'':<46}{'(a) no archive':>15}{'(b) archive':>13}")
        without, archived = median_run(a), median_run(b)
        for phase in without:
            print(f"{phase:<46}{without[phase]:>15.1f}{archived.get(phase, 0):>13.1f}")
        walls = [statistics.median(m["wall"] for m in runs) for runs in (a, b)]
        print(
            f"walls (a) {[round(m['wall'], 1) for m in a]}, (b) {[round(m['wall'], 1) for m in b]}"
        )
        print(f"b/a wall: {walls[1] / walls[0]:.2f}; archive {sizes[job]:.0f} MiB")
    print(f"\n(c) featurize again, nothing new, archive: {nothing['wall']:.1f} s (goal <= 10 s)")
    for phase, seconds in nothing.items():
        print(f"  {phase:<44}{seconds:>6.1f}")


if __name__ == "__main__":
    main()
