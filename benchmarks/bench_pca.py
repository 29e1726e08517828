"""PCA fit time: the job's fit against numpy and ``pyspark.ml``'s, on one 100,000 x 1280 matrix.

``make bench`` (or ``python benchmarks/bench_pca.py``) draws a seeded matrix with a decaying
spectrum (like MobileNetV2 features: a few strong directions, then noise), writes it once as
a features batch in the output contract's Parquet schema, then times in this one process:

* **numpy**: centre, ``X.T @ X``, ``eigh``, project onto the top k (float64, in memory);
* **Spark** ``local[2]``: the job's own :func:`fruits_jobs.pca.read_features` and
  :func:`fruits_jobs.pca.fit` with ``--k``, then with ``--variance`` (Spark's covariance,
  numpy's eigendecomposition), each followed by projecting every row (a ``count``);
* **pyspark.ml** ``PCA(k).fit`` on the same centred vectors, then the same projection: the
  built-in the job no longer uses (Breeze's SVD; see :mod:`fruits_jobs.pca`).

It prints seconds for each, the ratios to numpy, and checks that the job and numpy find the
same explained variance for the top k (and prints how far ``pyspark.ml``'s is).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fruits_jobs import contract


def matrix(rows: int, dim: int, seed: int) -> np.ndarray:
    """Seeded features: 64 strong latent directions with decaying scale, plus small noise."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((rows, 64), dtype=np.float32) * np.geomspace(8, 0.5, 64).astype(
        np.float32
    )
    mixing = rng.standard_normal((64, dim), dtype=np.float32) / 8
    return latent @ mixing + rng.standard_normal((rows, dim), dtype=np.float32) * 0.1


def write_batch(features: np.ndarray, folder: Path) -> None:
    """``features`` as ``features/batch=bench/`` Parquet in the contract's columns."""
    n, dim = features.shape
    values = pa.array(features.ravel(), type=pa.float32())
    table = pa.table(
        {
            contract.PATH: [f"file:/bench/{i:06d}.jpg" for i in range(n)],
            contract.LABEL: [f"label{i % 24}" for i in range(n)],
            contract.FEATURES_COL: pa.ListArray.from_arrays(
                pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32)), values
            ),
        }
    )
    target = folder / "batch=bench"
    target.mkdir(parents=True)
    pq.write_table(table, target / "part-0.parquet", row_group_size=10_000)


def numpy_pca(features: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """Seconds for centre + covariance + eigh + projection; the top-k explained variance."""
    start = time.perf_counter()
    x = features.astype(np.float64)
    x -= x.mean(axis=0)
    values, vectors = np.linalg.eigh(x.T @ x / (len(x) - 1))
    order = np.argsort(values)[::-1]
    scores = x @ vectors[:, order[:k]]
    assert scores.shape == (len(x), k)
    return time.perf_counter() - start, values[order][:k] / values.sum()


def spark_pca(folder: Path, rows: int, k: int | None, variance: float) -> tuple[float, np.ndarray]:
    """Seconds for the job's read + fit + projecting every row; the explained variance."""
    from pyspark.sql import SparkSession

    from fruits_jobs.pca import fit, read_features

    spark = SparkSession.builder.getOrCreate()
    start = time.perf_counter()
    vectors = read_features(spark, str(folder), ["bench"])
    batches = {"bench": {contract.R_FEATURIZED: rows}}
    model = fit(vectors, batches, argparse.Namespace(k=k, variance=variance)).model
    assert model.transform(vectors).select("scores").count() == rows
    return time.perf_counter() - start, model.stages[-1].explainedVariance.toArray()


def builtin_pca(folder: Path, rows: int, k: int) -> tuple[float, np.ndarray]:
    """Seconds for read + centre + ``pyspark.ml.feature.PCA(k).fit`` + projecting every row."""
    from pyspark.ml.feature import PCA
    from pyspark.sql import SparkSession

    from fruits_jobs.pca import centring, read_features

    spark = SparkSession.builder.getOrCreate()
    start = time.perf_counter()
    vectors = read_features(spark, str(folder), ["bench"])
    centred = centring(vectors, {"bench": {contract.R_FEATURIZED: rows}}).model.transform(vectors)
    model = PCA(k=k, inputCol="centred", outputCol="scores").fit(centred)
    assert model.transform(centred).select("scores").count() == rows
    return time.perf_counter() - start, model.explainedVariance.toArray()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--variance", type=float, default=0.9)
    parser.add_argument("--driver-memory", default="8g")
    args = parser.parse_args()

    from pyspark.sql import SparkSession

    (
        SparkSession.builder.master("local[2]")
        .config("spark.driver.memory", args.driver_memory)
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
        .sparkContext.setLogLevel("WARN")
    )
    features = matrix(args.rows, contract.FEATURE_DIM, seed=7)
    with tempfile.TemporaryDirectory(prefix="fruits-bench-pca-") as tmp:
        write_batch(features, Path(tmp))
        print(f"{args.rows} x {contract.FEATURE_DIM} float32 features, Spark local[2]", flush=True)
        numpy_s, numpy_explained = numpy_pca(features, args.k)
        spark_k_s, spark_explained = spark_pca(Path(tmp), args.rows, args.k, args.variance)
        spark_v_s, spark_v_explained = spark_pca(Path(tmp), args.rows, None, args.variance)
        builtin_s, builtin_explained = builtin_pca(Path(tmp), args.rows, args.k)

    print(f"numpy  centre+eigh+project, k={args.k}:  {numpy_s:7.1f} s")
    print(f"Spark  read+fit+project, --k {args.k}: {spark_k_s:7.1f} s ({spark_k_s / numpy_s:.1f}x)")
    print(
        f"Spark  read+fit+project, --variance {args.variance}: {spark_v_s:7.1f} s "
        f"(k={len(spark_v_explained)}, {spark_v_s / numpy_s:.1f}x)"
    )
    print(
        f"pyspark.ml PCA(k={args.k}).fit+project: {builtin_s:7.1f} s ({builtin_s / numpy_s:.1f}x)"
    )
    gap = float(np.abs(spark_explained - numpy_explained).max())
    builtin_gap = float(np.abs(builtin_explained - numpy_explained).max())
    print(f"top-{args.k} explained variance, max |job - numpy|: {gap:.2e}")
    print(f"top-{args.k} explained variance, max |pyspark.ml - numpy|: {builtin_gap:.2e}")
    if gap > 1e-4:
        raise SystemExit("Spark and numpy disagree on the explained variance")


if __name__ == "__main__":
    main()
