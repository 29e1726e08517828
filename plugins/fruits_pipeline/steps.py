"""The spark-submit command lines of the two jobs, and the two targets that run them.

>>> featurize_args("s3://b/raw/images", "s3://b/outputs", "imagenet", "2026-11-24")
['--images', 's3://b/raw/images', '--output', 's3://b/outputs', '--weights', 'imagenet', \
'--batch-id', '2026-11-24', '--skip-existing']
>>> pca_args("s3://b/outputs", variance=0.9)
['--features', 's3://b/outputs/features', '--output', 's3://b/outputs', '--variance', '0.9']
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fruits_jobs import contract
from fruits_pipeline.config import PROJECT_ROOT

FEATURIZE = "featurize"
PCA = "pca"
JOBS = (FEATURIZE, PCA)
PACKAGE_ZIP = "fruits_jobs.zip"
"""The jobs' package as shipped with ``--py-files`` to the cluster."""
QUICK_JVM = "-XX:TieredStopAtLevel=1"
"""JVM option: compile with C1 only. Featurize's local JVM is busy for seconds, then mostly
waits on the Python workers, and C2's compiler threads took a core of the two from them (96
photos: 12.8 s instead of 15.1 s; 1,680: 31.4 s instead of 34.6 s). PCA's JVM does the
arithmetic, which C1's code does slower: PCA gets it only for a fit of at most
:data:`SMALL_FIT_ROWS` rows."""
SMALL_FIT_ROWS = 2000
"""The most rows of a PCA fit whose local JVM runs :data:`QUICK_JVM`: start-up dominates such a
fit (whole process, 2 cores: 96 rows 9.8 s with C1 against 13.2 s with C2, 1,000 rows 10.9
against 12.9), the arithmetic a larger one (3,000 rows: even; 100,000: 100 s against 61 s)."""


def featurize_args(
    images: str,
    output: str,
    weights: str,
    batch_id: str,
    *,
    full_recompute: bool = False,
    lake: str | None = None,
    expect_new: bool = False,
) -> list[str]:
    """Arguments of ``featurize.py``: incremental (``--skip-existing``) unless a full recompute.

    :param lake: the lake listing's digest (:func:`fruits_jobs.contract.lake_digest`), which
        the batch's report records.
    :param expect_new: the plan saw images no committed batch holds (``--expect-new``: the
        workers start TensorFlow before the job's listing, not after it).
    """
    args = ["--images", images, "--output", output, "--weights", weights]
    args += ["--batch-id", contract.validate_batch_id(batch_id)]
    args.append("--full-recompute" if full_recompute else "--skip-existing")
    args += ["--lake", lake] if lake else []
    return args + (["--expect-new"] if expect_new else [])


def pca_args(output: str, *, k: int | None = None, variance: float | None = None) -> list[str]:
    """Arguments of ``pca.py``: refit on every batch, sized by exactly one of k or variance."""
    if (k is None) == (variance is None):
        raise ValueError(f"give exactly one of k or variance, got k={k!r}, variance={variance!r}")
    size = ["--k", str(k)] if k is not None else ["--variance", str(variance)]
    return [
        "--features",
        contract.dataset_uri(output, contract.FEATURES),
        "--output",
        output,
        *size,
    ]


def job_args(
    job: str,
    run: Mapping[str, Any],
    images: str,
    output: str,
    weights: str,
    work: Mapping[str, Any] | None = None,
) -> list:
    """The arguments of ``job`` for ``run`` (:func:`fruits_pipeline.runs.resolve_run`'s dict).

    One definition for both targets: only the paths differ. ``work`` is what
    :func:`fruits_pipeline.tasks.plan_work` decided (its ``lake`` digest goes to featurize).
    """
    if job == FEATURIZE:
        return featurize_args(
            images,
            output,
            weights,
            run["batch_id"],
            full_recompute=run["full_recompute"],
            lake=(work or {}).get("lake"),
            expect_new=bool((work or {}).get("featurize")),
        )
    return pca_args(output, k=run["k"], variance=run["variance"])


@dataclass(frozen=True)
class SparkTarget:
    """Where and how ``spark-submit`` runs: the EMR cluster or this machine.

    :param code_root: folder (or ``s3://`` prefix) holding ``featurize.py`` and ``pca.py``.
    :param submit: the ``spark-submit`` words before the script (master, deploy mode, confs).
    :param py_files: the zipped ``fruits_jobs`` package, when the nodes do not have it.
    """

    code_root: str
    submit: tuple[str, ...]
    py_files: str | None = None

    def command(self, job: str, args: list[str]) -> list[str]:
        """The full ``spark-submit`` command line of ``job`` (``featurize`` or ``pca``)."""
        if job not in JOBS:
            raise ValueError(f"unknown job {job!r}; expected one of {JOBS}")
        py_files = ["--py-files", self.py_files] if self.py_files else []
        return [*self.submit, *py_files, contract.join(self.code_root, f"{job}.py"), *args]


def emr_target(code_uri: str, python: str) -> SparkTarget:
    """spark-submit in YARN cluster mode, the package zip shipped, ``python`` on every node."""
    return SparkTarget(
        code_root=code_uri,
        submit=(
            "spark-submit",
            "--deploy-mode",
            "cluster",
            "--conf",
            f"spark.yarn.appMasterEnv.PYSPARK_PYTHON={python}",
            "--conf",
            f"spark.executorEnv.PYSPARK_PYTHON={python}",
        ),
        py_files=contract.join(code_uri, PACKAGE_ZIP),
    )


def local_target(java_options: str = "") -> SparkTarget:
    """spark-submit on this machine, ``local[*]``, from this interpreter's environment.

    :param java_options: the driver JVM's options (``--driver-java-options``), if any: see
        :func:`local_java_options`.
    """
    submit = Path(sys.executable).with_name("spark-submit")
    options = ("--driver-java-options", java_options) if java_options else ()
    return SparkTarget(
        code_root=str(PROJECT_ROOT / "spark_jobs"),
        submit=(
            str(submit) if submit.exists() else "spark-submit",
            "--master",
            "local[*]",
            *options,
            "--conf",
            "spark.ui.showConsoleProgress=false",
        ),
    )


def local_java_options(job: str, archive_option: str = "", fit_rows: int | None = None) -> str:
    """The driver JVM options of ``job`` on this machine, with its class archive's option.

    :data:`QUICK_JVM` for featurize, and for a PCA that fits at most :data:`SMALL_FIT_ROWS`
    rows (``fit_rows``: :func:`fruits_jobs.contract.plan_work`'s bound; unknown: none).
    ``archive_option`` comes last (see :mod:`fruits_pipeline.class_archive`).

    >>> local_java_options(FEATURIZE, "-XX:SharedArchiveFile=f.jsa")
    '-XX:TieredStopAtLevel=1 -XX:SharedArchiveFile=f.jsa'
    >>> local_java_options(PCA, fit_rows=100_000), local_java_options(PCA, fit_rows=96)
    ('', '-XX:TieredStopAtLevel=1')
    """
    quick = job == FEATURIZE or (fit_rows is not None and fit_rows <= SMALL_FIT_ROWS)
    options = [QUICK_JVM] if quick else []
    return " ".join([*options, archive_option] if archive_option else options)


def emr_step(job: str, target: SparkTarget, args: list[str]) -> dict[str, Any]:
    """One EMR step (``command-runner.jar`` running spark-submit) for ``add_job_flow_steps``.

    ``ActionOnFailure=CONTINUE``: the DAG, not EMR, decides what follows a failed step (the
    cluster is always terminated by the ``terminate_cluster`` task).
    """
    return {
        "Name": f"fruits-{job}",
        "ActionOnFailure": "CONTINUE",
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": target.command(job, args)},
    }
