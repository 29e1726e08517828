"""The output contract of the Spark jobs: where each artefact lives, its columns, its report keys.

The producers (``featurize.py``, ``pca.py``) and the validators (the DAG's ``validate_outputs``
sensor) import this module; nobody re-types a path, a column name or a report key. It imports
nothing but the standard library, so the Airflow side can use it without Spark or TensorFlow.

Layout under an output root ``OUT`` (a local path, ``file://`` or ``s3://`` URI)::

    OUT/features/batch=<id>/          Parquet  path, label, length, modification_time, features
    OUT/quarantine/batch=<id>/        Parquet  path, length, modification_time, reason
    OUT/_reports/featurize-<id>.json  the batch's report, written last: its commit record
    OUT/_reports/attribution/<id>/    the images' attribution files
    OUT/pca/<fit>/                    Parquet  path, label, batch, pca
    OUT/pca_csv/<fit>/part-*.csv      CSV      path,label,pc_1..pc_k (one file)
    OUT/pca_model/<fit>/              pyspark.ml PipelineModel (centre + PCA)
    OUT/_reports/pca/<fit>/*.png      the two plots
    OUT/_reports/pca.json             the current fit's report, written last: the pointer to it

``batch`` is a partition column: Spark writes it into the folder name, not into the files.

**Commits.** A batch exists once its report does: the report is written after the batch's
data, in one step (a rename, or one PUT on S3), so a reader never sees a partial one. Readers
take the batch ids from the reports and read those batches' folders only; a batch folder
without a report is a left-over of a run that died, ignored until the batch runs again. A
PCA fit is written beside the current one under a new ``<fit>`` id and becomes current when
``pca.json`` naming it replaces the previous one; fits it does not name are left-overs. A
report is published through a temporary ``<name>.<hex>.tmp`` (:func:`temporary_name`).
:func:`classify` sorts a listing of the output root by these rules; the Spark jobs
(``commits.py``) and the Airflow side (``fruits_pipeline.outputs_state``) both use it.

>>> batch_uri("s3://b/out", FEATURES, "2026-11-24")
's3://b/out/features/batch=2026-11-24'
>>> check_counts({"input": 3, "featurized": 2, "quarantined": 1})
[]
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

FEATURE_DIM = 1280
"""Length of a MobileNetV2 (alpha 1.0, global average pooling) feature vector."""

# --- datasets under the output root --------------------------------------------------------
FEATURES = "features"
QUARANTINE = "quarantine"
PCA = "pca"
PCA_CSV = "pca_csv"
PCA_MODEL = "pca_model"
REPORTS = "_reports"

# --- columns --------------------------------------------------------------------------------
PATH = "path"
LABEL = "label"
BATCH = "batch"
LENGTH = "length"
MTIME = "modification_time"
FEATURES_COL = "features"
REASON = "reason"
PCA_COL = "pca"

FEATURES_SCHEMA = (
    f"{PATH} string, {LABEL} string, {LENGTH} bigint, {MTIME} timestamp, "
    f"{FEATURES_COL} array<float>, {BATCH} string"
)
"""Spark DDL of ``features/`` as read back (``batch`` from the folder name, as a string)."""
QUARANTINE_SCHEMA = (
    f"{PATH} string, {LENGTH} bigint, {MTIME} timestamp, {REASON} string, {BATCH} string"
)
"""Spark DDL of ``quarantine/`` as read back."""

# --- quarantine reasons (the prefix of ``reason``; a detail follows after ": ") -------------
REASON_EMPTY = "empty file"
REASON_UNDECODABLE = "not a decodable image"
REASON_TRUNCATED = "truncated image"
REASON_TOO_LARGE = "image too large"
QUARANTINE_REASONS = (REASON_EMPTY, REASON_UNDECODABLE, REASON_TRUNCATED, REASON_TOO_LARGE)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
"""File name endings the featurizer reads, compared case-insensitively."""

# --- report keys ------------------------------------------------------------------------------
R_BATCH = "batch"
R_DISCOVERED = "discovered"
R_SKIPPED = "skipped_existing"
R_INPUT = "input"
R_FEATURIZED = "featurized"
R_QUARANTINED = "quarantined"
R_MODEL = "model"
R_TIMINGS = "timings_s"
R_THROUGHPUT = "images_per_s"
R_K = "k"
R_ROWS = "rows"
R_EXPLAINED = "explained_variance"
R_CUMULATIVE = "cumulative_explained_variance"
R_PLOTS = "plots"
R_ATTRIBUTION = "attribution"
R_IMAGES = "images"
R_SKIP_EXISTING = "skip_existing"
R_FULL_RECOMPUTE = "full_recompute"
R_TARGET_VARIANCE = "target_variance"
R_FEATURES = "features"
R_LAKE = "lake"
"""Featurize report: the :func:`lake_digest` of the lake listing the batch covers, as the DAG
measured it before the job (``--lake``); absent when the job ran without one."""
R_RELIES_ON = "relies_on"
"""Featurize report: the other committed batches whose images it left out as featurized."""
R_QUARANTINE_SAMPLE = "quarantined_files"
"""Featurize report: the first :data:`QUARANTINE_SAMPLE` quarantined files by path, each
``{"path": ..., "reason": ...}`` (all of them are in ``quarantine/``)."""
QUARANTINE_SAMPLE = 100

PCA_PLOTS = ("pca_explained_variance.png", "pca_scatter.png")

ATTRIBUTION_PREFIXES = ("ATTRIBUTION", "LICENSE", "NOTICE")
"""Files at the images' root that must travel with the images' derivatives (CC BY-SA)."""


BATCH_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
"""A batch id is one path segment: letters, digits and ``_ . -``.

No ``:`` (Hadoop reads ``featurize-a:b.json`` as a URI scheme and refuses it), no ``+`` (S3
keys and URLs turn it into a space), no ``/``.
"""


def join(root: str, *parts: str) -> str:
    """Join URI segments with ``/`` whatever the scheme (``s3://``, ``file://`` or a path)."""
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])


def dataset_uri(root: str, dataset: str) -> str:
    """The folder of one dataset (``FEATURES``, ``PCA``, ...) under the output root."""
    return join(root, dataset)


ATTRIBUTION = f"{REPORTS}/attribution"
BATCH_DATASETS = {FEATURES: f"{BATCH}=", QUARANTINE: f"{BATCH}=", ATTRIBUTION: ""}
"""The folders holding one sub-folder per batch, and how that sub-folder's name starts."""


def batch_key(dataset: str, batch: str) -> str:
    """The folder of ``batch`` in one of ``BATCH_DATASETS``, relative to the output root."""
    return f"{dataset}/{BATCH_DATASETS[dataset]}{validate_batch_id(batch)}"


def batch_uri(root: str, dataset: str, batch: str) -> str:
    """The folder of ``batch`` in ``FEATURES``, ``QUARANTINE`` (a partition) or ``ATTRIBUTION``."""
    return join(root, batch_key(dataset, batch))


def attribution_key(batch: str, name: str) -> str:
    """Where the featurizer copies the attribution file ``name`` of ``batch``'s images."""
    return f"{batch_key(ATTRIBUTION, batch)}/{name}"


FEATURIZE_REPORT_PREFIX = f"{REPORTS}/featurize-"
PCA_REPORT_KEY = f"{REPORTS}/pca.json"


def featurize_report_key(batch: str) -> str:
    """The report of ``batch``, relative to the output root."""
    return f"{FEATURIZE_REPORT_PREFIX}{validate_batch_id(batch)}.json"


def featurize_report_uri(root: str, batch: str) -> str:
    """Where ``featurize.py`` writes the report of ``batch``."""
    return join(root, featurize_report_key(batch))


def pca_report_uri(root: str) -> str:
    """Where ``pca.py`` writes its report."""
    return join(root, PCA_REPORT_KEY)


PLOTS = f"{REPORTS}/pca"
"""The folder of the PCA plots, one ``<fit>`` sub-folder per fit."""
FIT_DATASETS = (PCA, PCA_CSV, PCA_MODEL, PLOTS)
"""The folders that hold one ``<fit>`` sub-folder per PCA fit: scores, CSV, model, plots."""
FIT_ID_PATTERN = r"\d{8}T\d{6}Z-[0-9a-f]{8}"
"""A PCA fit id: its UTC start time and 8 random hex digits (``20261124T093000Z-1a2b3c4d``)."""
R_FIT = "fit"
R_BATCHES = "batches"


def new_fit_id(now: datetime) -> str:
    """A fresh fit id for a fit started at ``now`` (UTC)."""
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def fit_key(dataset: str, fit: str) -> str:
    """The folder of ``fit`` in one of ``FIT_DATASETS``, relative to the output root."""
    if not _matches(FIT_ID_PATTERN, fit):
        raise ValueError(f"invalid PCA fit id {fit!r}: expected {FIT_ID_PATTERN}")
    return f"{dataset}/{fit}"


def fit_uri(root: str, dataset: str, fit: str) -> str:
    """Where ``pca.py`` writes ``dataset`` (one of ``FIT_DATASETS``) of ``fit``."""
    return join(root, fit_key(dataset, fit))


def plot_key(fit: str, name: str) -> str:
    """The plot ``name`` (one of ``PCA_PLOTS``) of ``fit``, relative to the output root."""
    return f"{fit_key(PLOTS, fit)}/{name}"


def batch_of_report(key: str) -> str | None:
    """The batch whose report is at ``key`` (relative to the root), or None for other keys.

    >>> batch_of_report("_reports/featurize-2026-11-24.json"), batch_of_report("_reports/x")
    ('2026-11-24', None)
    """
    return _captured(rf"{FEATURIZE_REPORT_PREFIX}({BATCH_ID_PATTERN})\.json", key)


def parse_report(data: bytes) -> dict[str, Any] | None:
    """A featurize report from its bytes, or None when they are not one (not a commit).

    A commit record is a JSON object with integer ``input``, ``featurized`` and
    ``quarantined``; whether they add up is :func:`check_counts`' business.
    """
    document = _json_object(data)
    counts = (R_INPUT, R_FEATURIZED, R_QUARANTINED)
    if document is None or not all(type(document.get(k)) is int for k in counts):
        return None
    return document


def parse_pointer(data: bytes) -> dict[str, Any] | None:
    """The PCA report ``pca.json`` from its bytes, or None unless it names a valid fit."""
    document = _json_object(data)
    if document is None or not _matches(FIT_ID_PATTERN, document.get(R_FIT)):
        return None
    return document


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return document if isinstance(document, dict) else None


# --- the commit protocol: what counts, what is left over ------------------------------------
TOP_FOLDERS = tuple(
    sorted({n.partition("/")[0] for n in (REPORTS, *BATCH_DATASETS, *FIT_DATASETS)})
)
"""The folders directly under the output root that hold every file of the contract."""
EMRFS_MARKER = "_$folder$"
"""The suffix of the empty objects EMRFS writes for folders (``<folder>_$folder$``)."""
OLD_PLOT_KEYS = tuple(f"{REPORTS}/{name}" for name in PCA_PLOTS)
"""Where the plots were before fits had folders: left-overs now."""
BATCH_UNIT, FIT_UNIT, REPORT_UNIT = "batch", "fit", "report"


def temporary_name(name: str) -> str:
    """A fresh name ``<name>.<random hex>.tmp`` to write ``name`` under before renaming it."""
    return f"{name}.{secrets.token_hex(4)}.tmp"


def published_name(name: str) -> str | None:
    """The name a temporary file (see :func:`temporary_name`) stands for; None for others.

    >>> published_name("_reports/pca.json.0a1b2c3d.tmp"), published_name("_reports/pca.json")
    ('_reports/pca.json', None)
    """
    return _captured(r"(.+)\.[0-9a-f]+\.tmp", name)


@dataclass(frozen=True)
class Unit:
    """Files under the output root that stand or fall together.

    :param name: one batch's or one fit's folder in one dataset (ends with ``/``), or one
        report file (a temporary one included), relative to the root.
    :param kind: ``BATCH_UNIT``, ``FIT_UNIT`` or ``REPORT_UNIT``.
    :param owner: the batch or fit id it belongs to; None for a folder named by no id, the
        PCA report and the plots of the old layout.
    :param keys: its files (Hadoop checksums and EMRFS markers included), as listed.
    :param size: their bytes.
    :param left_over: not part of a committed batch or of the current fit: ignored by the
        readers, left by a run that died.
    """

    name: str
    kind: str
    owner: str | None
    keys: tuple[str, ...]
    size: int
    left_over: bool

    @property
    def roots(self) -> tuple[str, ...]:
        """What to delete (recursively) to remove the unit: its folder or file, then its markers.

        The EMRFS markers and checksums of a folder unit lie beside the folder, not in it.

        >>> Unit("pca/f/", FIT_UNIT, None, ("pca/f/a", "pca/f_$folder$"), 0, True).roots
        ('pca/f', 'pca/f_$folder$')
        """
        beside = (key for key in self.keys if not key.startswith(self.name))
        return (self.name.removesuffix("/"), *beside)


@dataclass
class OutputState:
    """What :func:`classify` found in a listing of the output root."""

    committed: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Batch id -> its report, for every committed batch."""
    pca: dict[str, Any] | None = None
    """The current fit's report (``_reports/pca.json``), None when there is none."""
    units: list[Unit] = field(default_factory=list)
    """Every file of the contract's names in its unit, by unit name."""

    @property
    def fit(self) -> str | None:
        """The current fit's id."""
        return None if self.pca is None else self.pca[R_FIT]

    @property
    def fit_keys(self) -> list[str]:
        """The keys of the current fit's files."""
        return [k for u in self.units if u.kind == FIT_UNIT and not u.left_over for k in u.keys]

    @property
    def fit_csvs(self) -> list[str]:
        """The keys of the current fit's CSV part files, sorted (the contract wants one)."""
        if self.fit is None:
            return []
        folder = f"{fit_key(PCA_CSV, self.fit)}/"
        return sorted(k for k in self.fit_keys if k.startswith(folder) and k.endswith(".csv"))

    @property
    def left_overs(self) -> list[Unit]:
        """The units no reader sees."""
        return [unit for unit in self.units if unit.left_over]


def classify(files: Mapping[str, int], read: Callable[[str], bytes]) -> OutputState:
    """Sort a listing of the output root into committed batches, the current fit, left-overs.

    * A batch is committed when ``_reports/featurize-<id>.json`` is a report
      (:func:`parse_report`); the current fit is the one a readable ``_reports/pca.json``
      names (:func:`parse_pointer`). Nothing else is read.
    * Every file of the contract's names goes to a :class:`Unit`: a batch's folder in one
      of ``BATCH_DATASETS``, a fit's folder in one of ``FIT_DATASETS``, or one report or
      temporary report file. A Hadoop checksum ``.name.crc`` goes with ``name``, an EMRFS
      marker ``<folder>_$folder$`` with ``<folder>/``; other files, and S3 folder objects
      (``key/``), are left out.
    * A unit is a left-over unless it belongs to a committed batch or the current fit, or is
      the report of one of them.

    A listing of part of the root classifies that part: with ``FIT_DATASETS`` only, say, it
    finds no current fit, but the same units.

    :param files: key (relative to the root) -> bytes, of the files under ``TOP_FOLDERS``.
    :param read: the content of a key; called for the reports only.

    >>> committed = b'{"input": 2, "featurized": 1, "quarantined": 1}'
    >>> state = classify(
    ...     {
    ...         "_reports/featurize-a.json": 50,
    ...         "_reports/featurize-b.json.0a1b2c3d.tmp": 20,
    ...         "features/batch=a/part-0.parquet": 900,
    ...         "features/batch=b/part-0.parquet": 900,
    ...         "features/batch=b/.part-0.parquet.crc": 16,
    ...         "_reports/notes.txt": 5,
    ...     },
    ...     {"_reports/featurize-a.json": committed}.__getitem__,
    ... )
    >>> sorted(state.committed), state.fit
    (['a'], None)
    >>> [(u.name, u.owner, len(u.keys), u.size) for u in state.left_overs]
    [('_reports/featurize-b.json.0a1b2c3d.tmp', 'b', 1, 20), ('features/batch=b/', 'b', 2, 916)]
    """
    state = OutputState()
    for key in files:
        if key == PCA_REPORT_KEY:
            state.pca = parse_pointer(read(key))
        elif (batch := batch_of_report(key)) and (report := parse_report(read(key))):
            state.committed[batch] = report
    current = {featurize_report_key(b) for b in state.committed}
    current |= {PCA_REPORT_KEY} if state.pca is not None else set()
    grouped: dict[tuple[str, str, str | None], list[str]] = defaultdict(list)
    for key in files:
        unit = _unit(_without_checksum(key))
        if unit is not None:
            grouped[unit].append(key)
    for (name, kind, owner), keys in sorted(grouped.items(), key=lambda item: item[0][0]):
        live = (
            (kind == BATCH_UNIT and owner in state.committed)
            or (kind == FIT_UNIT and owner is not None and owner == state.fit)
            or (kind == REPORT_UNIT and name in current)
        )
        size = sum(files[k] for k in keys)
        state.units.append(Unit(name, kind, owner, tuple(keys), size, left_over=not live))
    return state


def _without_checksum(key: str) -> str:
    """The key of the file a Hadoop checksum ``dir/.name.crc`` belongs to, else ``key``."""
    folder, _, name = key.rpartition("/")
    if name.startswith(".") and name.endswith(".crc"):
        return f"{folder}/{name[1:-4]}".lstrip("/")
    return key


def _unit(key: str) -> tuple[str, str, str | None] | None:
    """The name, kind and owner of the unit of ``key``; None outside the contract's names."""
    if key.endswith("/"):
        return None
    for kind, datasets in ((BATCH_UNIT, BATCH_DATASETS), (FIT_UNIT, FIT_DATASETS)):
        for dataset in datasets:
            if key.startswith(f"{dataset}/"):
                segment, _, rest = key[len(dataset) + 1 :].partition("/")
                folder = segment.removesuffix(EMRFS_MARKER) or segment
                name = f"{dataset}/{folder}{'/' if rest or folder != segment else ''}"
                if kind == FIT_UNIT:
                    return name, kind, folder if _matches(FIT_ID_PATTERN, folder) else None
                batch = folder.removeprefix(BATCH_DATASETS[dataset])
                named = folder.startswith(BATCH_DATASETS[dataset])
                return name, kind, batch if named and _matches(BATCH_ID_PATTERN, batch) else None
    published = published_name(key) or key
    if published == PCA_REPORT_KEY or published in OLD_PLOT_KEYS:
        return key, REPORT_UNIT, None
    batch = batch_of_report(published)
    return None if batch is None else (key, REPORT_UNIT, batch)


def _matches(pattern: str, text: object) -> bool:
    """Whether ``text`` is a string that ``pattern`` matches whole."""
    return isinstance(text, str) and re.fullmatch(pattern, text) is not None


def _captured(pattern: str, text: str) -> str | None:
    """What the group of ``pattern`` captures when it matches ``text`` whole, else None."""
    found = re.fullmatch(pattern, text)
    return found.group(1) if found else None


def validate_batch_id(batch: str) -> str:
    """Return ``batch`` if it is a valid batch id, else raise ``ValueError`` naming it."""
    if not _matches(BATCH_ID_PATTERN, batch):
        raise ValueError(
            f"invalid batch id {batch!r}: use 1-64 letters, digits or '_.-', "
            "starting with a letter or digit"
        )
    return batch


def pca_csv_header(k: int) -> list[str]:
    """The header of the PCA matrix CSV: ``path,label,pc_1..pc_k``."""
    return [PATH, LABEL, *(f"pc_{i}" for i in range(1, k + 1))]


def check_counts(report: Mapping[str, Any]) -> list[str]:
    """Problems with a featurize report's accounting; empty when every input is accounted for."""
    missing = [key for key in (R_INPUT, R_FEATURIZED, R_QUARANTINED) if key not in report]
    if missing:
        return [f"featurize report lacks {', '.join(missing)}"]
    n_in, n_ok, n_bad = report[R_INPUT], report[R_FEATURIZED], report[R_QUARANTINED]
    if n_in != n_ok + n_bad:
        return [f"input {n_in} != featurized {n_ok} + quarantined {n_bad}"]
    return []


def check_pca_report(report: Mapping[str, Any], feature_rows: int) -> list[str]:
    """Problems with a PCA report, given the feature rows of the batches it covers."""
    problems = []
    k, rows = report.get(R_K), report.get(R_ROWS)
    if rows != feature_rows:
        problems.append(f"PCA rows {rows} != feature rows {feature_rows}")
    explained = report.get(R_EXPLAINED) or []
    if not isinstance(k, int) or k < 1 or len(explained) != k:
        problems.append(f"PCA report k={k!r} does not match {len(explained)} explained variances")
    return problems


def check_csv_sample(header: list[str], rows: Iterable[list[str]], k: int) -> list[str]:
    """Problems in the PCA CSV's header and a sample of its rows (arity, NaN, non-numbers)."""
    expected = pca_csv_header(k)
    if header != expected:
        return [f"PCA CSV header {header[:4]}... != {expected[:4]}... (k={k})"]
    problems = []
    for n, row in enumerate(rows, start=2):
        if len(row) != len(expected):
            problems.append(f"PCA CSV line {n}: {len(row)} fields, expected {len(expected)}")
            continue
        try:
            values = [float(v) for v in row[2:]]
        except ValueError:
            problems.append(f"PCA CSV line {n}: non-numeric component for {row[0]}")
            continue
        if not all(math.isfinite(v) for v in values):
            problems.append(f"PCA CSV line {n}: NaN or infinite component for {row[0]}")
    return problems


# --- the work a run has ------------------------------------------------------------------------
def is_image_key(key: str) -> bool:
    """Whether the featurizer reads the lake file ``key``: an image name, no hidden segment.

    Spark's file listing leaves out every name starting with ``.`` or ``_``.

    >>> [is_image_key(k) for k in ("Apple/a.JPG", "Apple/.a.jpg", "_tmp/a.jpg", "a.txt")]
    [True, False, False, False]
    """
    hidden = any(segment.startswith((".", "_")) for segment in key.split("/"))
    return not hidden and key.lower().endswith(IMAGE_EXTENSIONS)


def lake_digest(files: Iterable[tuple[str, int, int]]) -> str:
    """``<images>-<hex>``: the images among ``files`` (key, bytes, mtime in whole seconds).

    The hex is the sum of each image's 60-bit sha256 prefix: independent of the listing's
    order, computed in one pass over any number of pages. A file added, removed, resized or
    touched changes it.

    >>> lake_digest([("A/1.jpg", 10, 5), ("B/2.png", 3, 7), ("notes.txt", 1, 1)])
    '2-135792d2f2c834e0'
    >>> lake_digest([("B/2.png", 3, 7), ("A/1.jpg", 10, 5)])
    '2-135792d2f2c834e0'
    """
    images = total = 0
    for key, size, mtime_s in files:
        if is_image_key(key):
            images += 1
            total += int(hashlib.sha256(f"{key}\n{size}\n{mtime_s}".encode()).hexdigest()[:15], 16)
    return f"{images}-{total:x}"


def digest_images(digest: str) -> int:
    """The number of images a :func:`lake_digest` counts."""
    return int(digest.partition("-")[0])


@dataclass(frozen=True)
class Work:
    """What a run has to do, decided from the lake's listing and the commit records only."""

    featurize: bool
    pca: bool
    reason: str
    fit_rows: int
    """The most rows the run's PCA may fit: the committed batches' ``featurized``, plus the
    lake's images when the run featurizes."""

    @property
    def anything(self) -> bool:
        """Whether the run has any job to run."""
        return self.featurize or self.pca


def plan_work(
    state: OutputState,
    lake: str,
    *,
    full_recompute: bool = False,
    k: int | None = None,
    variance: float | None = None,
) -> Work:
    """What a run over the lake listed as ``lake`` (:func:`lake_digest`) has to do.

    * Featurize (and refit), unless a committed batch covers that exact listing: its report
      holds the same :data:`R_LAKE`, and every batch it relied on is still committed. A run
      that failed before its commit recorded nothing, so its images stay to do.
    * Refit only, when the current fit does not cover exactly the committed batches, or its
      ``k`` (or target variance) is not the one asked for.
    * Nothing, otherwise; everything, on a full recompute.

    >>> state = OutputState(committed={"b1": {R_LAKE: "2-ab", R_RELIES_ON: []}},
    ...                     pca={R_FIT: "f", R_K: 3, R_BATCHES: ["b1"]})
    >>> print(plan_work(state, "2-ab", k=3).reason)  # doctest: +NORMALIZE_WHITESPACE
    nothing new: the 2 images in the lake are in committed batches (b1 covers them);
    fit f covers the 1 committed batches with k=3
    >>> plan_work(state, "3-ff", k=3).featurize, plan_work(state, "2-ab", k=4).featurize
    (True, False)
    """
    images, committed = digest_images(lake), state.committed
    rows = sum(int(report.get(R_FEATURIZED, 0)) for report in committed.values())
    if full_recompute:
        return Work(True, True, f"full recompute of the {images} images in the lake", rows + images)
    covering = sorted(
        batch
        for batch, report in committed.items()
        if report.get(R_LAKE) == lake and set(report.get(R_RELIES_ON, ())) <= committed.keys()
    )
    if not covering:
        return Work(
            True,
            True,
            f"{images} images in the lake, and no committed batch covers them all "
            f"({len(committed)} committed)",
            rows + images,
        )
    lake_part = (
        f"the {images} images in the lake are in committed batches ({covering[-1]} covers them)"
    )
    fit = state.pca
    asked = f"k={k}" if k is not None else f"variance={variance}"
    if fit is None:
        return Work(False, True, f"{lake_part}; no current PCA fit", rows)
    fitted = (
        f"k={fit.get(R_K)}"
        if fit.get(R_TARGET_VARIANCE) is None
        else (f"variance={fit.get(R_TARGET_VARIANCE)}")
    )
    if set(fit.get(R_BATCHES, ())) != committed.keys():
        return Work(
            False,
            True,
            f"{lake_part}; fit {fit.get(R_FIT)} covers {sorted(fit.get(R_BATCHES, ()))}, "
            f"not the committed {sorted(committed)}",
            rows,
        )
    if (k is not None or variance is not None) and asked != fitted:
        return Work(
            False, True, f"{lake_part}; fit {fit.get(R_FIT)} has {fitted}, asked {asked}", rows
        )
    return Work(
        False,
        False,
        f"nothing new: {lake_part}; fit {fit.get(R_FIT)} covers the {len(committed)} committed "
        f"batches with {fitted}",
        rows,
    )
