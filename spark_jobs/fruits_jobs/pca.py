"""Job 2: fit a ``pyspark.ml`` PCA on every committed feature batch and write the reduced matrix.

What happens, in order:

1. The ``features/batch=<id>`` folders of the committed batches (those with a report, see
   :mod:`fruits_jobs.commits`) are read, cached, and turned into ML vectors. Folders of
   batches that died are never read.
2. One pass counts them (the count must be the sum of their reports' ``featurized``) and
   takes their mean (``Summarizer``): the pipeline's first stage, the ``StandardScalerModel``
   that ``StandardScaler(withMean=True, withStd=False).fit`` would give, centres them. Spark's
   ``PCAModel`` projects raw vectors, so without it the scores would be shifted by the mean's
   projection and differ from numpy's / scikit-learn's.
3. A second pass sums the centred vectors' outer products across the cluster
   (``RowMatrix.computeGramianMatrix``: one 1280 x 1280 matrix reaches the driver, whatever
   the number of images); the driver eigendecomposes the covariance with numpy and keeps
   ``--k`` components, or, with ``--variance v``, the smallest k whose cumulative explained
   variance reaches ``v``. They become a ``pyspark.ml`` ``PCAModel``, which projects the
   images on the cluster.

   Why not ``pyspark.ml.feature.PCA.fit``: it decomposes the same matrix with Breeze, and on
   a JVM without a native LAPACK (``dev.ludovic.netlib`` then falls back to ``F2jLAPACK``, as
   on a stock Debian or EMR node) that SVD returned wrong components from the third one on
   for the 560 grocery photos' features: nearest-centroid accuracy on PCA(100) fell from
   0.825 (numpy) to 0.711. numpy's LAPACK is always native, and one decomposition serves
   any k, so ``--variance`` needs no second fit.
4. Under a new fit id, beside the current fit: the fitted ``PipelineModel`` (centre + PCA)
   is saved for later batches, the scores are written as Parquet and as one CSV, and two
   plots are drawn from a bounded sample (nothing collects the data set to the driver).
5. The report, naming the fit and the batches it covers, replaces ``_reports/pca.json`` in
   one step: from then on the new fit is the current one, and the previous fit's folders are
   deleted. A run that dies before that leaves the previous fit current and whole; the next
   run deletes the folders it left.
"""

from __future__ import annotations

import argparse
import io
import logging
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pyspark.errors import AnalysisException
from pyspark.ml import PipelineModel
from pyspark.ml.common import _py2java
from pyspark.ml.feature import PCAModel, StandardScalerModel
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.linalg import DenseMatrix, DenseVector
from pyspark.ml.stat import Summarizer
from pyspark.mllib.util import MLUtils
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F  # noqa: N812 - Spark's own convention

from fruits_jobs import commits, contract, storage
from fruits_jobs.cli import Stopwatch, positive_int, run_job
from fruits_jobs.errors import JobError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

PLOT_SAMPLE = 5000
"""Most points drawn in the PC1/PC2 scatter plot."""


def variance_fraction(text: str) -> float:
    """``argparse`` type: a fraction of explained variance in (0, 1]."""
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``pca.py`` command line."""
    parser = argparse.ArgumentParser(prog="pca.py", description=__doc__.splitlines()[0])
    parser.add_argument("--features", required=True, help="features folder URI (all batches)")
    parser.add_argument("--output", required=True, help="output root URI (see contract)")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--k", type=positive_int, help="number of components")
    size.add_argument(
        "--variance", type=variance_fraction, help="smallest k explaining this fraction"
    )
    return parser


def read_features(spark: SparkSession, features: str, batches: list[str]) -> DataFrame:
    """The rows of ``batches`` in the ``features`` folder, with a ``vector`` column.

    :raises JobError: a batch's folder does not exist.
    """
    try:
        rows = commits.read_committed(spark, features, contract.FEATURES_SCHEMA, batches)
    except AnalysisException as err:
        if "PATH_NOT_FOUND" in str(err) or "does not exist" in str(err):
            raise JobError(f"features path does not exist: {err}") from err
        raise
    if rows is None:
        raise JobError(f"no committed batch with features under {features}: run featurize first")
    return rows.select(
        contract.PATH,
        contract.LABEL,
        contract.BATCH,
        array_to_vector(contract.FEATURES_COL).alias("vector"),
    )


def smallest_k(explained: np.ndarray, variance: float) -> int:
    """The smallest k whose cumulative explained variance reaches ``variance``.

    >>> smallest_k(np.array([0.5, 0.3, 0.2]), 0.8)
    2
    """
    cumulative = np.cumsum(explained)
    return int(min(np.searchsorted(cumulative, variance - 1e-12) + 1, len(explained)))


@dataclass(frozen=True)
class FitResult:
    """A fitted centre + PCA pipeline and what the report says of it."""

    model: PipelineModel
    k: int
    rows: int
    explained: np.ndarray
    """Each kept component's share of the variance, as the ``PCAModel`` holds it."""


def fit(
    vectors: DataFrame, batches: dict[str, dict[str, Any]], args: argparse.Namespace
) -> FitResult:
    """Fit centre + PCA on ``vectors``, the features of ``batches``: two passes over them.

    The first counts the rows and takes their moments, the second their covariance; the PCA
    keeps ``args.k`` components, or the fewest that explain ``args.variance``.

    :raises JobError: the rows are not the batches' ``featurized`` sum, are fewer than 2, or
        ``--k`` exceeds what they and the feature dimension allow.
    """
    centre = centring(vectors, batches)
    rows = centre.rows
    if rows < 2:
        raise JobError(
            f"a PCA needs at least 2 rows: the committed batches {sorted(batches)} hold {rows}"
        )
    dim = min(contract.FEATURE_DIM, rows)
    if args.k is not None and args.k > dim:
        raise JobError(
            f"--k {args.k} exceeds {dim}, the most that {rows} rows of "
            f"{contract.FEATURE_DIM} features allow"
        )
    components, explained = principal_components(centre.model.transform(vectors), rows)
    k = args.k or smallest_k(explained[:dim], args.variance)
    if args.k is None:
        log.info("k=%d components explain >= %.3f of the variance", k, args.variance)
    pca = pca_model(vectors.sparkSession, components[:, :k], explained[:k])
    model = PipelineModel(stages=[centre.model, pca])
    return FitResult(model, k, rows, pca.explainedVariance.toArray())


@dataclass(frozen=True)
class Centre:
    """The pipeline's first stage and the number of rows it was fitted on."""

    model: StandardScalerModel
    """``vector`` minus the column means, as ``centred``: what ``StandardScaler(withMean=True,
    withStd=False).fit`` returns, from the same moments."""
    rows: int


def centring(vectors: DataFrame, batches: dict[str, dict[str, Any]]) -> Centre:
    """The centring stage of ``vectors``, from one pass over them (``Summarizer``).

    The pass counts the rows and takes their mean and standard deviation.

    :raises JobError: the rows are not the sum of the ``batches``' ``featurized`` counts.
    """
    moments = vectors.select(
        Summarizer.metrics("count", "mean", "std").summary(F.col("vector")).alias("m")
    ).first()["m"]
    rows = int(moments["count"])
    expected = sum(report[contract.R_FEATURIZED] for report in batches.values())
    if rows != expected:
        raise JobError(
            f"the features of batches {sorted(with_rows(batches))} hold {rows} rows, "
            f"their reports {expected}"
        )
    sc = vectors.sparkSession.sparkContext
    java = sc._jvm.org.apache.spark.ml.feature.StandardScalerModel(
        f"centre_{uuid.uuid4().hex[:12]}",
        _py2java(sc, moments["std"]),
        _py2java(sc, moments["mean"]),
    )
    model = StandardScalerModel(java).setInputCol("vector").setOutputCol("centred")
    return Centre(model._set(withMean=True, withStd=False), rows)


def principal_components(centred: DataFrame, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """All principal axes of the ``rows`` of ``centred`` and their shares of the variance.

    The axes are columns, by decreasing variance. Each gets the sign that makes its largest
    coordinate positive, so reruns agree.
    """
    covariance = gramian(centred, rows) / (rows - 1)
    variances, axes = np.linalg.eigh(covariance)  # ascending
    order = np.argsort(variances)[::-1]
    variances, axes = np.clip(variances[order], 0.0, None), axes[:, order]
    axes *= np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(axes.shape[1])])
    return axes, variances / variances.sum()


def gramian(centred: DataFrame, rows: int) -> np.ndarray:
    """The sum of the outer products of the ``rows`` of ``centred``, an n x n numpy array.

    Spark sums them across the cluster (``RowMatrix.computeGramianMatrix``, one pass); only
    the n x n matrix comes to the driver, through a file in its temporary folder: py4j's own
    conversion took 0.7 s for 1280 x 1280, the file 0.03 s.
    """
    sc = centred.sparkSession.sparkContext
    jvm = sc._jvm
    vectors = MLUtils.convertVectorColumnsFromML(centred.select("centred"), "centred")
    matrix = jvm.org.apache.spark.mllib.api.python.PythonMLLibAPI().createRowMatrix(
        vectors._jdf, rows, contract.FEATURE_DIM
    )
    n = contract.FEATURE_DIM
    buffer = jvm.java.nio.ByteBuffer.allocate(n * n * 8).order(jvm.java.nio.ByteOrder.nativeOrder())
    buffer.asDoubleBuffer().put(matrix.computeGramianMatrix().toArray())  # column-major
    with tempfile.TemporaryDirectory(prefix="fruits-gramian-") as folder:
        path = str(Path(folder) / "gramian.f8")
        stream = jvm.java.io.FileOutputStream(path)
        try:
            stream.getChannel().write(buffer)
        finally:
            stream.close()
        return np.fromfile(path, dtype=np.float64).reshape(n, n, order="F")


def pca_model(spark: SparkSession, components: np.ndarray, explained: np.ndarray) -> PCAModel:
    """A ``pyspark.ml`` ``PCAModel`` (``centred`` -> ``scores``) with these axes and shares."""
    sc = spark.sparkContext
    n, k = components.shape
    java = sc._jvm.org.apache.spark.ml.feature.PCAModel(
        f"pca_{uuid.uuid4().hex[:12]}",
        _py2java(sc, DenseMatrix(n, k, components.ravel(order="F").tolist())),
        _py2java(sc, DenseVector(explained.tolist())),
    )
    model = PCAModel(java).setInputCol("centred").setOutputCol("scores")
    return model._set(k=k)


def plot_variance(explained: np.ndarray) -> bytes:
    """PNG: explained variance per component and cumulative."""
    plt = _pyplot()
    ks = np.arange(1, len(explained) + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(ks, explained, color="tab:blue", label="per component")
    ax.plot(ks, np.cumsum(explained), color="tab:orange", marker=".", label="cumulative")
    ax.set(xlabel="principal component", ylabel="explained variance ratio", ylim=(0, 1.02))
    ax.set_title(f"PCA of MobileNetV2 features: {np.sum(explained):.1%} with k={len(explained)}")
    ax.legend(loc="center right")
    return _png(fig)


def plot_scatter(sample: pd.DataFrame, rows: int) -> bytes:
    """PNG: PC1 against PC2 of a bounded sample, one colour per label."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 6))
    labels = sorted(sample[contract.LABEL].unique())
    colours, markers = plt.get_cmap("tab10"), "os^Dvp*X"
    for n, label in enumerate(labels):  # 10 colours x 8 markers: 80 distinct labels
        points = sample[sample[contract.LABEL] == label]
        style = {"color": colours(n % 10), "marker": markers[(n // 10) % len(markers)]}
        ax.scatter(points.pc_1, points.pc_2, s=12, label=label, **style)
    ax.set(xlabel="PC1", ylabel="PC2", title=f"PC1/PC2 of {len(sample)} of {rows} images")
    if len(labels) <= 40:
        ax.legend(fontsize=6, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _png(fig)


def _pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display on a cluster node)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def with_rows(batches: dict[str, dict[str, Any]]) -> list[str]:
    """The committed ``batches`` that featurized at least one image."""
    return [batch for batch, report in batches.items() if report[contract.R_FEATURIZED] > 0]


def fit_and_score(
    spark: SparkSession,
    args: argparse.Namespace,
    batches: dict[str, dict[str, Any]],
    fit_id: str,
    clock: Stopwatch,
) -> FitResult:
    """Fit on the features of ``batches`` and write their scores as fit ``fit_id``.

    The features are read once and cached for the count, the fit and the projection.
    """
    vectors = read_features(spark, args.features, with_rows(batches)).persist()
    try:
        result = fit(vectors, batches, args)
        clock.lap("fit")
        write_scores(result.model, vectors, contract.fit_uri(args.output, contract.PCA, fit_id))
        return result
    finally:
        vectors.unpersist()


def write_scores(model: PipelineModel, vectors: DataFrame, uri: str) -> None:
    """Project ``vectors`` with ``model``; write ``path, label, batch, pca`` as Parquet."""
    model.transform(vectors).select(
        contract.PATH,
        contract.LABEL,
        contract.BATCH,
        vector_to_array("scores", dtype="float32").alias(contract.PCA_COL),
    ).write.parquet(uri)


def write_csv(scores: DataFrame, k: int, uri: str) -> None:
    """Write ``scores`` as one CSV file, ``path,label,pc_1..pc_k``."""
    header = contract.pca_csv_header(k)
    scores.select(
        contract.PATH,
        contract.LABEL,
        *(F.col(contract.PCA_COL)[i].alias(name) for i, name in enumerate(header[2:])),
    ).coalesce(1).write.csv(uri, header=True)


def plot_sample(scores: DataFrame, result: FitResult) -> pd.DataFrame:
    """At most :data:`PLOT_SAMPLE` rows of ``scores`` on the driver: label, PC1, PC2."""
    return (
        scores.sample(fraction=min(1.0, 2 * PLOT_SAMPLE / result.rows), seed=0)
        .limit(PLOT_SAMPLE)
        .select(
            contract.LABEL,
            F.col(contract.PCA_COL)[0].alias("pc_1"),
            F.col(contract.PCA_COL)[min(1, result.k - 1)].alias("pc_2"),
        )
        .toPandas()
    )


def draw_plots(scores: DataFrame, result: FitResult) -> dict[str, bytes]:
    """The PNGs of :data:`~fruits_jobs.contract.PCA_PLOTS`: explained variance, PC1/PC2."""
    return {
        contract.PCA_PLOTS[0]: plot_variance(result.explained),
        contract.PCA_PLOTS[1]: plot_scatter(plot_sample(scores, result), result.rows),
    }


def write_plots(spark: SparkSession, output: str, fit_id: str, plots: dict[str, bytes]) -> None:
    """Write each PNG of ``plots`` (name -> bytes) in the plots folder of ``fit_id``."""
    for name, png in plots.items():
        storage.write_bytes(spark, contract.join(output, contract.plot_key(fit_id, name)), png)


def build_report(
    args: argparse.Namespace,
    fit_id: str,
    batches: dict[str, dict[str, Any]],
    result: FitResult,
    plots: list[str],
    timings: dict[str, float],
) -> dict[str, Any]:
    """The report of fit ``fit_id``: ``pca.json`` once published."""
    return {
        contract.R_FIT: fit_id,
        contract.R_K: result.k,
        contract.R_ROWS: result.rows,
        contract.R_TARGET_VARIANCE: args.variance,
        contract.R_EXPLAINED: [round(float(v), 6) for v in result.explained],
        contract.R_CUMULATIVE: [round(float(v), 6) for v in np.cumsum(result.explained)],
        contract.R_BATCHES: sorted(batches),
        contract.R_PLOTS: plots,
        contract.R_TIMINGS: timings,
        contract.R_FEATURES: args.features,
    }


def run(spark: SparkSession, args: argparse.Namespace) -> dict[str, Any]:
    """Fit the PCA on the committed batches and make it the current fit under ``args.output``."""
    clock = Stopwatch()
    commits.drop_fits(spark, args.output, keep=commits.current_fit(spark, args.output))
    batches = commits.committed_batches(spark, args.output)
    fit_id = contract.new_fit_id(datetime.now(timezone.utc))
    log.info("PCA fit %s on the committed batches %s", fit_id, sorted(batches))
    result = fit_and_score(spark, args, batches, fit_id, clock)
    scores = spark.read.parquet(contract.fit_uri(args.output, contract.PCA, fit_id))
    write_csv(scores, result.k, contract.fit_uri(args.output, contract.PCA_CSV, fit_id))
    result.model.write().save(contract.fit_uri(args.output, contract.PCA_MODEL, fit_id))
    clock.lap("write")
    plots = draw_plots(scores, result)
    write_plots(spark, args.output, fit_id, plots)
    report = build_report(args, fit_id, batches, result, list(plots), clock.timings())
    commits.publish_fit(spark, args.output, report)
    log.info(
        "PCA fit %s, k=%d on %d rows: %.1f%% of the variance",
        fit_id,
        result.k,
        result.rows,
        100 * float(sum(result.explained)),
    )
    return report


def main(argv: list[str] | None = None) -> int:
    """``spark-submit pca.py ...``: exit 0, or 2 with one line naming the problem."""
    return run_job("pca", build_parser(), run, argv)
