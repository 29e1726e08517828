# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Fruits! — the PySpark chain, step by step
#
# This notebook walks through the two Spark jobs of the pipeline — **featurize** (MobileNetV2
# with weights broadcast from the driver) and **PCA** — by calling the project's own functions
# (`fruits_jobs.featurize`, `fruits_jobs.model`, `fruits_jobs.imaging`, `fruits_jobs.pca`):
# nothing here is a copy of the job code, so what runs here is what `spark-submit` runs on EMR.
#
# * **Locally** (`make notebook`): Spark `local[*]` on the demo images, outputs under
#   `out/notebook/`.
# * **On EMR** (an EMR Studio / EMR notebook PySpark kernel, the cluster made by the
#   `fruits_emr` DAG or any EMR 7 cluster bootstrapped with
#   `spark_jobs/bootstrap/install_python_deps.sh`): change the **one cell of URIs** below to
#   `s3://` URIs. The package must reach the driver and the executors before the imports: on
#   EMR Studio's PySpark (Livy) kernel, a first cell
#   `%%configure -f {"conf": {"spark.submit.pyFiles": "s3://<bucket>/code/<version>/fruits_jobs.zip",
#   "spark.pyspark.python": "/usr/bin/python3.11"}}` (the zip and the Python that `upload_code`
#   and the bootstrap action put there). There, matplotlib figures show through `%matplot plt`,
#   and the job's two plots are read from `OUTPUT`'s `_reports/pca/<fit>/`.

# %%
import os
import time
from collections import Counter

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, display
from pyspark.ml.feature import PCA as SparkPCA  # noqa: N811 - only to compare with the job's fit
from pyspark.sql import SparkSession
from pyspark.sql import functions as F  # noqa: N812 - Spark's own convention

from fruits_jobs import commits, contract, featurize, imaging, model, pca, storage
from fruits_jobs.imaging import QuarantineError

# %% [markdown]
# ## The one cell to change on EMR
#
# Locally the defaults are the project's: the grocery photos beside the repository when they
# exist, else the 96 Fruits-360 images it ships; the first `../shared/models/*.h5`, else Keras'
# `imagenet` file. `make notebook IMAGES=... WEIGHTS=...` sets them through the environment.
# On EMR, for example:
#
# ```python
# IMAGES = "s3://fruits-lake-eu/raw/images"
# OUTPUT = "s3://fruits-lake-eu/notebook/outputs"
# WEIGHTS = "s3://fruits-lake-eu/code/<version>/weights/<file>.h5"   # or "imagenet"
# ```

# %% tags=["parameters"]
IMAGES = os.environ.get("FRUITS_IMAGE_SOURCE", "")
OUTPUT = os.environ.get("FRUITS_NOTEBOOK_OUTPUT", "")
WEIGHTS = os.environ.get("FRUITS_WEIGHTS", "")
if not (IMAGES and OUTPUT and WEIGHTS):  # not set: this checkout's defaults
    from fruits_pipeline.config import PROJECT_ROOT, default_image_source, default_weights

    IMAGES = IMAGES or default_image_source()
    OUTPUT = OUTPUT or str(PROJECT_ROOT / "out" / "notebook" / "outputs")
    WEIGHTS = WEIGHTS or default_weights()
BATCH = "walkthrough"
print(f"images  {IMAGES}\noutput  {OUTPUT}\nweights {WEIGHTS}")

# %% [markdown]
# The Spark session: on an EMR kernel it already exists; here, a local one with every core.

# %%
spark = SparkSession.getActiveSession() or (
    SparkSession.builder.master(os.environ.get("FRUITS_NOTEBOOK_MASTER", "local[*]"))
    .appName("fruits-walkthrough")
    .config("spark.ui.showConsoleProgress", "false")
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")
print(spark.version, spark.sparkContext.master, spark.sparkContext.defaultParallelism, "slots")

# %% [markdown]
# ## 1. Listing the images: `binaryFile`, and the label from the path
#
# `featurize.list_images` reads the folder with Spark's `binaryFile` source
# (`recursiveFileLookup`, a `pathGlobFilter` for `.jpg/.jpeg/.png` in any case): one row per
# file with its `path`, `length`, `modificationTime` and `content` (the bytes, read lazily by
# the tasks, never by the driver). The label is the parent folder's name
# (`featurize.with_labels`: `element_at(split(path, "/"), -2)`), so both `<Label>/x.jpg` and
# Fruits-360's `Training/<Class>/x.jpg` work. It also returns the list of every file Spark's
# file index saw: the scan skips 0-byte files, and the job brings them back to quarantine them.

# %%
images, listed = featurize.list_images(spark, IMAGES)
print(f"{len(listed)} image files listed")
images.select(contract.PATH, contract.LABEL, contract.LENGTH, contract.MTIME).show(5, truncate=60)
per_label = images.groupBy(contract.LABEL).count().orderBy(F.desc("count")).toPandas()
print(f"{len(per_label)} labels; images per label: {per_label['count'].describe().to_dict()}")

# %% [markdown]
# ## 2. Decoding, and the quarantine
#
# `imaging.decode` is plain Pillow (no TensorFlow): EXIF rotation, grayscale, palette, RGBA,
# CMYK and 16-bit inputs become RGB, squashed to 224 x 224 (bilinear), scaled to MobileNetV2's
# [-1, 1]. Bytes that are not a usable image raise `QuarantineError`, whose message is the
# **quarantine reason** (one of `contract.QUARANTINE_REASONS`, then a detail): the job writes
# such rows to `quarantine/` instead of dropping them, so `input = featurized + quarantined`.

# %%
first = images.select(contract.PATH, "content").first()
pixels = imaging.decode(first.content, 224)
print(first.path, pixels.shape, pixels.dtype, f"range [{pixels.min():.2f}, {pixels.max():.2f}]")
plt.figure(figsize=(3, 3))
plt.imshow((pixels + 1) / 2)
plt.axis("off")
plt.title(first.path.rsplit("/", 2)[-2])
plt.show()

broken = {
    "the same photo, cut in half": first.content[: len(first.content) // 2],
    "an empty file": b"",
    "a text file named .jpg": b"not an image\n",
}
for what, data in broken.items():
    try:
        imaging.decode(data, 224)
        print(f"{what}: decoded")
    except QuarantineError as err:
        print(f"{what}: quarantined, reason {str(err)!r}")

# %% [markdown]
# ## 3. The weights: read once on the driver, broadcast to the executors
#
# `model.resolve_weights` turns `imagenet`, a path or an `s3://` URI into a local `.h5` file;
# `model.driver_weights` reads its arrays with h5py (no TensorFlow on the driver) and checks
# every shape against MobileNetV2's. The driver broadcasts the list once: Spark ships it to
# each **executor** once (its block manager keeps one copy, fetched in pieces, BitTorrent-like,
# from the driver and the other executors), and each **Python worker** of that executor
# unpickles it when a task first reads `broadcast.value`. That happens inside
# `model.cached_model`, which builds MobileNetV2 once per Python worker and keeps it in a
# module-level dict: Spark reuses its Python workers across tasks
# (`spark.python.worker.reuse`, on by default), so every later batch, partition and task of
# that worker finds the net ready. Building it costs seconds (TensorFlow import, graph build and
# tracing); per batch it would dominate. `tests/spark_jobs/test_model.py::
# test_each_python_worker_builds_the_model_once_across_partitions` checks it on 12 partitions.

# %%
weights_path = model.resolve_weights(WEIGHTS, 1.0, 224)
spec = model.ModelSpec(1.0, 224, model.sha256_of(weights_path))
started = time.perf_counter()
arrays = model.driver_weights(spec, weights_path)
read_s = time.perf_counter() - started
megabytes = sum(a.nbytes for a in arrays) / 1e6
print(f"{weights_path.name}: {len(arrays)} arrays, {megabytes:.1f} MB, read in {read_s:.2f} s")
print(f"sha256 {spec.weights_sha256[:16]}..., driver has built {model.model_builds()} nets")
broadcast = spark.sparkContext.broadcast(arrays)

# %% [markdown]
# ## 4. The featurize UDF on a few rows
#
# `featurize.featurize_udf(spec, broadcast)` is an **iterator pandas UDF**: Spark feeds it
# Arrow batches of image bytes; it decodes each image, runs the net (traced once for any batch
# size) on the good ones and returns, per row, either 1280 features or a reason. Here on three
# real photos plus the half photo from above, through `featurize.featured` (the job's own
# projection).

# %%
udf = featurize.featurize_udf(spec, broadcast)
half = spark.createDataFrame(
    [(f"{first.path}.half.jpg", "cut", len(broken["the same photo, cut in half"]), None)],
    f"{contract.PATH} string, {contract.LABEL} string, {contract.LENGTH} long, "
    f"{contract.MTIME} timestamp",
).withColumn("content", F.lit(broken["the same photo, cut in half"]))
few = images.limit(3).unionByName(half)
rows = featurize.featured(few, udf).toPandas()
rows["features"] = rows[contract.FEATURES_COL].map(
    lambda f: None if f is None else f"{len(f)} floats, mean {np.mean(f):.3f}"
)
rows[[contract.PATH, contract.LABEL, "features", contract.REASON]]

# %% [markdown]
# ## 5. The featurize job on every image
#
# The same code `spark-submit spark_jobs/featurize.py` runs: `featurize.run` reads and
# broadcasts the weights, has each Python worker build the net while the driver lists the
# images, fills read tasks by bytes, writes `features/` and `quarantine/` for the batch, then
# its report, which commits the batch.

# %%
args = featurize.build_parser().parse_args(
    ["--images", IMAGES, "--output", OUTPUT, "--weights", WEIGHTS, "--batch-id", BATCH]
)
report = featurize.run(spark, args)
print(
    {key: report[key] for key in (contract.R_INPUT, contract.R_FEATURIZED, contract.R_QUARANTINED)}
)
print(f"{report[contract.R_THROUGHPUT]} images/s; timings {report[contract.R_TIMINGS]}")
quarantined = spark.read.parquet(contract.batch_uri(OUTPUT, contract.QUARANTINE, BATCH))
print(f"quarantine/batch={BATCH}: {quarantined.count()} rows")
quarantined.show(5, truncate=80)

# %% [markdown]
# Which Python workers hold a net now: a probe over a few partitions reports each worker's pid
# and how many nets `model.model_builds()` says it built (0 for a worker that served no
# featurize task).

# %%
probe = (
    spark.range(4 * spark.sparkContext.defaultParallelism, numPartitions=8)
    .mapInPandas(
        lambda frames: (
            f.assign(pid=os.getpid(), nets=model.model_builds())[["pid", "nets"]] for f in frames
        ),
        "pid long, nets long",
    )
    .distinct()
    .toPandas()
)
probe.sort_values("pid")

# %% [markdown]
# ## 6. The PCA: covariance in Spark, decomposition on the driver
#
# `pca.read_features` reads the committed batches' features as ML vectors.
# `pca.centring` counts them and takes their mean in one pass (`Summarizer`); then
# `pca.principal_components` has Spark sum the centred rows' outer products across the cluster
# (`RowMatrix.computeGramianMatrix`: one more pass, partial sums per task; only the 1280 x 1280
# matrix, 13 MB, reaches the driver, whatever the number of images) and decomposes the
# covariance with numpy's `eigh`.
#
# **Why not `pyspark.ml.feature.PCA.fit`?** It decomposes the same matrix with Breeze's SVD.
# Without a native LAPACK on the JVM (`dev.ludovic.netlib` then falls back to `F2jLAPACK`, as on
# a stock Debian or EMR node) that SVD returned wrong components from the third one on for the
# 560 grocery photos' features: nearest-centroid accuracy on PCA(100) fell from **0.825**
# (numpy) to **0.711** (commit 7508d21, "PCA: eigendecompose Spark's covariance with numpy";
# the quality test `tests/spark_jobs/test_pca.py::test_features_separate_real_fruit_classes`
# now checks the job's spectrum against numpy's on real features). Below: which LAPACK this JVM
# has, and both spectra on these features.

# %%
batches = commits.committed_batches(spark, OUTPUT)
vectors = pca.read_features(
    spark,
    contract.dataset_uri(OUTPUT, contract.FEATURES),
    [b for b, r in batches.items() if r[contract.R_FEATURIZED] > 0],
).cache()
centre = pca.centring(vectors, batches)
started = time.perf_counter()
components, explained = pca.principal_components(centre.model.transform(vectors), centre.rows)
print(f"{centre.rows} rows: covariance + eigh in {time.perf_counter() - started:.1f} s")
k_check = min(20, centre.rows - 1)
jvm_lapack = spark._jvm.dev.ludovic.netlib.lapack.LAPACK.getInstance().getClass().getName()
builtin = SparkPCA(k=k_check, inputCol="vector").fit(vectors).explainedVariance.toArray()
vectors.unpersist()
gap = np.abs(builtin - explained[:k_check])
print(f"JVM LAPACK: {jvm_lapack}")
print(f"top-{k_check} explained variance, numpy: {np.round(explained[:k_check], 4)}")
print(f"                     pyspark.ml PCA.fit: {np.round(builtin, 4)}")
print(f"largest gap {gap.max():.2e} (component {gap.argmax() + 1})")

# %% [markdown]
# ## 7. The PCA job, its explained-variance curve and the PC1/PC2 scatter
#
# `pca.run` fits centring + PCA on every committed batch, keeps the smallest k reaching 90%
# of the variance, writes the scores (Parquet), **the CSV matrix** `path,label,pc_1..pc_k`, the
# fitted `PipelineModel` and two plots under a new fit id, then publishes `pca.json`.

# %%
pca_report = pca.run(
    spark,
    pca.build_parser().parse_args(
        [
            "--features",
            contract.dataset_uri(OUTPUT, contract.FEATURES),
            "--output",
            OUTPUT,
            "--variance",
            "0.9",
        ]
    ),
)
fit = pca_report[contract.R_FIT]
print(
    f"fit {fit}: k={pca_report[contract.R_K]} over {pca_report[contract.R_ROWS]} rows, "
    f"{pca_report[contract.R_CUMULATIVE][-1]:.1%} of the variance, {pca_report[contract.R_TIMINGS]}"
)
for name in contract.PCA_PLOTS:
    display(Image(storage.read_bytes(spark, contract.join(OUTPUT, contract.plot_key(fit, name)))))

# %% [markdown]
# ## 8. The CSV matrix

# %%
csv_folder = contract.fit_uri(OUTPUT, contract.PCA_CSV, fit)
(csv_file,) = [u for u in storage.list_files(spark, csv_folder) if u.endswith(".csv")]
matrix = spark.read.csv(csv_file, header=True, inferSchema=True)
print(f"{csv_file}\n{matrix.count()} rows x {len(matrix.columns)} columns")
assert matrix.columns == contract.pca_csv_header(pca_report[contract.R_K])
print(Counter(matrix.select(contract.LABEL).toPandas()[contract.LABEL]).most_common(3))
matrix.select(*matrix.columns[:6]).show(5, truncate=50)

# %%
broadcast.unpersist()
