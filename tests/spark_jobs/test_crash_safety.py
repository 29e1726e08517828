"""Crash anywhere, lose nothing, poison nothing: the jobs killed with SIGKILL at chosen moments.

Each fault runs a real ``spark-submit`` and kills it with SIGKILL (the driver JVM, the Python
driver and the Python workers, as a lost node would), or kills one Python worker, at a
moment seen from outside: files appearing in the output folder, the process tree, the job's
log. The jobs have no hook for it. A normal run follows each fault and must leave valid
outputs: every image featurized or quarantined exactly once across the committed batches,
and no left-over counted.

The lake: batch ``b0`` (8 photos and a broken file) is committed first; 16 new photos then
arrive, which every run of batch ``b1`` featurizes with ``--skip-existing``, as the DAGs do.
The tests run in file order on that one lake.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from fruits_jobs import contract
from fruits_jobs.featurize import main as featurize_main
from fruits_jobs.pca import main as pca_main
from fruits_pipeline import outputs_state
from fruits_pipeline.class_archive import ClassArchive
from fruits_pipeline.config import Settings
from fruits_pipeline.steps import local_java_options
from fruits_pipeline.stores import LocalStore
from fruits_pipeline.validation import validate
from tests.conftest import GROCERY, ROOT, copy_images, labels, sample_images

MASTER = "local[2,4]"
"""Two cores, and a failed task retried up to 4 times, as on a cluster (``local[2]``: once)."""
POLL_S = 0.005
PYTHON_TASK_STARTED = re.compile(
    r"Starting Python task execution - task \S+ in stage (\d+) \(TID (\d+)"
)
PYTHON_TASK_RETURNED = re.compile(r"Times: .* in stage \d+ \(TID (\d+)")
PREPARE_STAGE = re.compile(r"Final stage: ResultStage (\d+) \(save at ")
"""The stage of the job that prepares the Python workers (its rows go to the ``noop`` sink)."""
"""The executor's log lines for a Python task handed to its worker, and its worker's return."""


class Lake:
    """The images, the output root and the job arguments the tests share."""

    def __init__(self, root: Path, weights: Path) -> None:
        self.images, self.output, self.weights = root / "images", root / "outputs", weights
        self.logs = root / "logs"
        self.logs.mkdir()

    def featurize_args(self, batch: str) -> list[str]:
        return [
            *("--images", str(self.images), "--output", str(self.output)),
            *("--weights", str(self.weights), "--batch-id", batch, "--batch-size", "4"),
            "--skip-existing",
        ]

    def pca_args(self, k: int) -> list[str]:
        features = contract.dataset_uri(str(self.output), contract.FEATURES)
        return ["--features", features, "--output", str(self.output), "--k", str(k)]

    def inputs(self) -> list[str]:
        return sorted(str(p) for p in self.images.rglob("*.jpg"))


@pytest.fixture(scope="module")
def lake(spark, weights_file, tmp_path_factory) -> Lake:
    """Batch ``b0`` committed by a normal run, then 16 new photos in the images folder."""
    lake = Lake(tmp_path_factory.mktemp("crash"), weights_file)
    first, *others = labels(GROCERY, 6)
    copy_images(sample_images(GROCERY, 8, [first]), lake.images)
    (lake.images / first / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    assert featurize_main(lake.featurize_args("b0")) == 0
    copy_images(sample_images(GROCERY, 4, others[:4]), lake.images)
    return lake


class Job:
    """A ``spark-submit`` of ``job`` in its own session, its output in a log file.

    Its driver gets the JVM options the local DAG's spark-submits give it, and maps the job's
    class archive when the suite's DAG runs have published one; it never dumps one (most of
    these runs are killed).
    """

    def __init__(self, lake: Lake, job: str, args: list[str], name: str) -> None:
        self.log = lake.logs / f"{name}.log"
        self.started = time.time()
        submit = Path(sys.executable).with_name("spark-submit")
        command = [str(submit), "--master", MASTER, "--conf", "spark.ui.enabled=false"]
        archive = ClassArchive.for_job(Settings.from_env().class_archives, job)
        option = archive.java_option(dump=False) if archive else ""
        if java := local_java_options(job, option, fit_rows=len(lake.inputs())):
            command += ["--driver-java-options", java]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [*command, str(ROOT / "spark_jobs" / f"{job}.py"), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYSPARK_PYTHON": sys.executable},
            )

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-25:])

    def tree(self) -> list[psutil.Process]:
        """The spark-submit process and all its descendants (Python workers included)."""
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def python_workers(self) -> list[psutil.Process]:
        """The Python worker processes: those the PySpark daemon forked for tasks."""
        found = []
        for process in self.tree():
            try:
                if "pyspark.daemon" in " ".join(process.cmdline()):
                    found.append(process)
            except psutil.NoSuchProcess:
                continue
        daemons = {p.pid for p in found}
        return [p for p in found if p.ppid() in daemons]

    def wait_for(self, moment: Callable[[], bool], what: str, timeout: float = 300) -> None:
        """Poll ``moment`` until it holds; fail if the job ends first or it never comes."""
        deadline = time.monotonic() + timeout
        while not moment():
            if self.process.poll() is not None:
                pytest.fail(
                    f"the job ended (exit {self.process.returncode}) before {what}:\n" + self.tail()
                )
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"no {what} within {timeout} s:\n{self.tail()}")
            time.sleep(POLL_S)

    def kill(self) -> None:
        """SIGKILL every process of the job at once, as when its machine is lost."""
        tree = self.tree()
        for process in tree:
            try:
                process.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                continue
        self.process.wait(timeout=30)
        _, alive = psutil.wait_procs(tree, timeout=30)
        assert not alive, alive

    def finish(self, timeout: float = 300) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise


def batch_files(lake: Lake, dataset: str, pattern: str) -> list[Path]:
    """Batch ``b1``'s files in ``dataset`` matching ``pattern``; [] while a job moves them."""
    try:
        return list((lake.output / dataset / "batch=b1").rglob(pattern))
    except FileNotFoundError:  # a task's folder under _temporary committed during the walk
        return []


def committed_rows(spark, lake: Lake) -> dict[str, list[str]]:
    """The paths in each committed batch's folders, checked against the batch's report."""
    paths: dict[str, list[str]] = {}
    for report_file in (lake.output / contract.REPORTS).glob("featurize-*.json"):
        report = json.loads(report_file.read_text())
        batch = report["batch"]
        for dataset, count in (
            (contract.FEATURES, contract.R_FEATURIZED),
            (contract.QUARANTINE, contract.R_QUARANTINED),
        ):
            rows = spark.read.parquet(contract.batch_uri(str(lake.output), dataset, batch))
            found = [r.path.removeprefix("file:") for r in rows.select("path").collect()]
            assert len(found) == report[count], (batch, dataset, len(found), report)
            paths[f"{dataset}/{batch}"] = found
    return paths


def assert_exactly_once(spark, lake: Lake) -> None:
    """Every input image in exactly one committed batch's features or quarantine."""
    seen = Counter(p for found in committed_rows(spark, lake).values() for p in found)
    assert sorted(seen) == lake.inputs()
    assert set(seen.values()) == {1}, [p for p, n in seen.items() if n > 1]


def assert_uncommitted(spark, lake: Lake) -> None:
    """Batch ``b1`` has no report, and the committed batch ``b0`` is whole."""
    assert not (lake.output / contract.featurize_report_key("b1")).exists()
    assert sorted(committed_rows(spark, lake)) == ["features/b0", "quarantine/b0"]


def left_overs(lake: Lake) -> list[str]:
    return [x.name for x in outputs_state.survey(LocalStore(lake.output)).left_overs]


def rerun_featurize(spark, lake: Lake) -> dict:
    """A normal run of batch ``b1``: committed, exact, nothing left over."""
    assert featurize_main(lake.featurize_args("b1")) == 0
    report = json.loads((lake.output / contract.featurize_report_key("b1")).read_text())
    assert (report["input"], report["featurized"], report["quarantined"]) == (16, 16, 0)
    assert_exactly_once(spark, lake)
    assert left_overs(lake) == []
    return report


def test_killed_while_the_python_workers_start(spark, lake):
    job = Job(lake, "featurize", lake.featurize_args("b1"), "workers-start")
    job.wait_for(lambda: bool(job.python_workers()), "a Python worker")
    job.kill()
    assert_uncommitted(spark, lake)
    rerun_featurize(spark, lake)


def test_killed_after_some_part_files(spark, lake, capsys):
    job = Job(lake, "featurize", lake.featurize_args("b1"), "part-files")
    job.wait_for(
        lambda: bool(batch_files(lake, contract.FEATURES, "_temporary/**/part-*")),
        "a part file of batch b1",
    )
    job.kill()
    assert_uncommitted(spark, lake)
    assert "features/batch=b1/" in left_overs(lake)
    outputs_state.main([str(lake.output)])
    assert "features/batch=b1/" in capsys.readouterr().out
    rerun_featurize(spark, lake)


def test_killed_after_the_data_before_the_report(spark, lake):
    job = Job(lake, "featurize", lake.featurize_args("b1"), "before-report")

    def data_written() -> bool:
        done = batch_files(lake, contract.QUARANTINE, "_SUCCESS")
        try:
            return bool(done) and done[0].stat().st_mtime > job.started
        except FileNotFoundError:  # an earlier run's, which this run's overwrite just deleted
            return False

    job.wait_for(data_written, "batch b1's data")
    job.kill()
    assert not (lake.output / contract.featurize_report_key("b1")).exists(), "the report won"
    assert batch_files(lake, contract.FEATURES, "part-*.parquet")  # the data is all there
    assert {"features/batch=b1/", "quarantine/batch=b1/"} <= set(left_overs(lake))
    assert_uncommitted(spark, lake)
    rerun_featurize(spark, lake)


def featurize_tasks_in_flight(log: str) -> set[str]:
    """TIDs of Python tasks started after the workers' preparing stage and not yet returned."""
    prepare = PREPARE_STAGE.search(log)
    if not prepare:
        return set()
    started = {
        tid for stage, tid in PYTHON_TASK_STARTED.findall(log) if int(stage) > int(prepare[1])
    }
    return started - set(PYTHON_TASK_RETURNED.findall(log))


def test_python_worker_killed_mid_task_is_retried_without_duplicates(spark, lake):
    """After the workers are prepared, the only Python work left is the featurize UDF's.

    The workers are frozen (SIGSTOP) while the log shows a featurize task in flight, and
    killed only if it is still in flight then: a frozen worker cannot return its task, so
    the kill cannot land between two tasks, on an idle worker (featurize tasks take ~0.3 s).
    """
    job = Job(lake, "featurize", lake.featurize_args("b1"), "worker-killed")

    def killed_mid_task() -> bool:
        if not featurize_tasks_in_flight(job.log.read_text(errors="replace")):
            return False
        workers = job.python_workers()
        for worker in workers:
            worker.suspend()
        time.sleep(0.5)  # lets the executor log a task its worker returned just before
        landed = bool(featurize_tasks_in_flight(job.log.read_text(errors="replace")))
        for worker in workers:
            worker.kill() if landed else worker.resume()
        return landed

    job.wait_for(killed_mid_task, "a featurize task in flight")
    assert job.finish() == 0, job.tail()
    log = job.log.read_text(errors="replace")
    assert re.search(r"Lost task \S+ in stage", log), "no task failed: the kill missed"
    report = json.loads((lake.output / contract.featurize_report_key("b1")).read_text())
    assert (report["input"], report["featurized"], report["quarantined"]) == (16, 16, 0)
    assert_exactly_once(spark, lake)
    assert left_overs(lake) == []


def test_pca_killed_mid_write_leaves_the_previous_fit_valid(spark, lake):
    assert pca_main(lake.pca_args(3)) == 0
    store = LocalStore(lake.output)
    state = outputs_state.survey(store)
    previous, rows = state.fit, sum(r["featurized"] for r in state.committed.values())
    job = Job(lake, "pca", lake.pca_args(4), "pca-killed")

    def new_fit_writing() -> bool:
        folders = (lake.output / contract.PCA).iterdir()
        return any(f.name != previous and any(p.is_file() for p in f.rglob("*")) for f in folders)

    job.wait_for(new_fit_writing, "a file of the new fit")
    job.kill()
    findings = validate(store, "b0")  # while the PCA is down: the previous fit, whole
    assert findings.ok, (findings.missing, findings.wrong)
    assert findings.summary["pca"] == {"fit": previous, "k": 3, "rows": rows}
    assert any(name.startswith(f"{contract.PCA}/") for name in findings.summary["left_overs"])

    assert pca_main(lake.pca_args(4)) == 0
    findings = validate(store, "b0")
    assert findings.ok and findings.summary["pca"]["k"] == 4, findings
    assert findings.summary["left_overs"] == []
    fits = {p.name for d in contract.FIT_DATASETS for p in (lake.output / d).iterdir()}
    assert fits == {findings.summary["pca"]["fit"]} != {previous}
