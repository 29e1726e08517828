"""Shared fixtures: one local SparkSession, the weights file, and real photos.

The photos come from ``../shared`` (``FRUITS_SHARED``) when it is there, else from the 96
Fruits-360 images the repository ships, so ``make test`` passes on a bare clone. Tests pick
labels with :func:`labels`, never by name, so either tree serves them.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fruits_pipeline.config import LOCK_FILE, NODE_ENVS, SAMPLE_IMAGES
from local_emr.runner import STAND_IN_JVM

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FRUITS_SHARED", ROOT.parent / "shared"))
SHARED_GROCERY = SHARED / "data" / "grocery-fruits-sample"
SHARED_FRUITS360 = SHARED / "data" / "fruits360-sample"
HAS_SHARED_PHOTOS = SHARED_GROCERY.is_dir() and SHARED_FRUITS360.is_dir()


def _grocery_like(sample: Path) -> Path:
    """The sample's class folders as ``<Label>/<file>.jpg`` beside its attribution files.

    One read-only copy (96 small images) per version of the sample in the temporary folder,
    made by an atomic rename and shared by every test process: a killed one leaves none behind.
    """
    version = hashlib.sha256((sample / "MANIFEST.csv").read_bytes()).hexdigest()[:12]
    root = Path(tempfile.gettempdir()) / f"fruits-grocery-like-{version}"
    if root.is_dir():
        return root
    building = Path(tempfile.mkdtemp(prefix=f"{root.name}.", dir=root.parent))
    shutil.copytree(sample / "Training", building, dirs_exist_ok=True)
    for name in ("ATTRIBUTION.md", "LICENSE"):
        shutil.copy2(sample / name, building)
    try:
        building.rename(root)
    except OSError:  # another test process made it first
        shutil.rmtree(building, ignore_errors=True)
    return root


GROCERY = SHARED_GROCERY if HAS_SHARED_PHOTOS else _grocery_like(SAMPLE_IMAGES)
"""``<Label>/<file>.jpg`` and ``ATTRIBUTION.md``: the grocery photos, else the sample's."""
FRUITS360 = SHARED_FRUITS360 if HAS_SHARED_PHOTOS else SAMPLE_IMAGES
"""``Training/<Class>/<file>.jpg`` beside ``ATTRIBUTION.md`` and ``LICENSE``."""

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Every Spark JVM the tests start (in-process, spark-submit, Airflow's tasks) lives seconds on
# little data: C1 only and the serial collector halve its CPU. The jobs run the same.
os.environ.setdefault("SPARK_SUBMIT_OPTS", STAND_IN_JVM)
# Airflow reads its configuration on first import: point it at a throwaway home and our folders.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="fruits-airflow-")
atexit.register(shutil.rmtree, os.environ["AIRFLOW_HOME"], ignore_errors=True)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable


REGION = "eu-west-1"
"""The stand-in's region, and its buckets'."""


def stage(item: pytest.Item) -> int:
    """When a test runs: 0 first; 1 on the local EMR stand-in; 2 on the deployed Airflow;
    3 the tests that end the deployed Airflow's services for good (marked ``ends_airflow``)."""
    if item.get_closest_marker("ends_airflow"):
        return 3
    if "deployed" in item.fixturenames:
        return 2
    return 1 if "stand_in" in item.fixturenames else 0


SHARED_ONLY = os.environ.get("FRUITS_TESTS_SHARED_ONLY") == "1"
"""CI's run with ``../shared``: only the modules that read its photos or weights (the bare
clone's run, without it, runs every module)."""
SHARED_FIXTURES = {"weights_file", "tricky_tree"}
"""Fixtures of this file that read ``../shared`` when it is there."""
SHARED_NAMES = ("GROCERY", "FRUITS360", "SHARED", "needs_real_weights", "pretrained_weights")
"""Names of this file whose import by a test module or conftest means it reads ``../shared``."""


def reads_shared(item: pytest.Item) -> bool:
    """Whether a test reads ``../shared``'s photos or weights, through a fixture of this file
    or through any of this file's photo roots imported by its module or a fixture's module."""
    fixtures = item._fixtureinfo.name2fixturedefs
    if SHARED_FIXTURES & set(item.fixturenames):
        return True
    modules = {
        item.module,
        *(sys.modules.get(d.func.__module__) for f in fixtures.values() for d in f),
    }
    here = sys.modules[__name__]
    return any(
        module is not None
        and module is not here
        and any(getattr(module, name, None) is getattr(here, name) for name in SHARED_NAMES)
        for module in modules
    )


AIRFLOW_LANE = ("tests/running_airflow/", "tests/deploy/", "tests/dags/", "tests/notebooks/")
"""Folders whose tests run in the ``airflow`` lane: the deployed Airflow's (every test of the
``deployed`` fixture is in the first), those that start Airflow processes of their own, and
the notebook's, which evens the lanes (JUnit sums of CI's run with ``../shared``: 809 s and
684 s with the notebook's 63 s in the other lane)."""


def lane(nodeid: str) -> str:
    """The lane of the test ``nodeid``: ``airflow`` (see :data:`AIRFLOW_LANE`) or ``spark``
    (the stand-in's, the Spark jobs' and the unit tests). Each lane takes about half of the
    suite's time."""
    return "airflow" if nodeid.startswith(AIRFLOW_LANE) else "spark"


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With ``-n 2 --dist loadscope`` (``make test``), a pytest-xdist worker per lane.

    A lane is the scope: one worker runs all its tests, in this file's order (so each
    process starts its session fixtures once: the stand-in, a SparkSession, a metadata
    database). Other ``--dist`` modes keep pytest-xdist's own scheduling.
    """
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class LaneScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return lane(nodeid)

    return LaneScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the tests that need the stand-in, then the deployed Airflow, last (in file order).

    Each starts once per session and stays up for every test that needs it; no test of the
    first stage (some use moto's in-process ``mock_aws``, whose backends the stand-in shares)
    runs while they are up. With ``FRUITS_TESTS_SHARED_ONLY=1``, the modules none of whose
    tests read ``../shared`` are deselected.
    """
    if SHARED_ONLY:
        keep = {item.module for item in items if reads_shared(item)}
        dropped = [item for item in items if item.module not in keep]
        items[:] = [item for item in items if item.module in keep]
        config.hook.pytest_deselected(items=dropped)
        names = sorted({item.module.__name__ for item in dropped})
        print(
            f"\nFRUITS_TESTS_SHARED_ONLY: {len(names)} modules that do not read ../shared "
            f"deselected: {', '.join(names)}"
        )
    # A module with a test that ends Airflow runs after the other deployed tests, so its
    # module-scoped fixtures are set up once and its tests stay together.
    ending = {item.module for item in items if item.get_closest_marker("ends_airflow")}
    items.sort(key=lambda item: (stage(item), item.module in ending))


def pretrained_weights() -> Path | None:
    """``FRUITS_WEIGHTS``, else the first ``*.h5`` in ``../shared/models``, else None."""
    if os.environ.get("FRUITS_WEIGHTS"):
        return Path(os.environ["FRUITS_WEIGHTS"])
    found = sorted((SHARED / "models").glob("*.h5"))
    return found[0] if found else None


needs_real_weights = pytest.mark.skipif(
    pretrained_weights() is None or not HAS_SHARED_PHOTOS,
    reason=f"needs the real ImageNet weights ({SHARED / 'models'}/*.h5, or FRUITS_WEIGHTS) "
    f"and the photos in {SHARED / 'data'}: a quality floor means nothing on seeded weights",
)
"""For tests that measure what the real model achieves on the shared photos."""


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real ImageNet weights when shared/ has them, else a seeded MobileNetV2 saved as HDF5.

    Either way the job's loading and broadcast path runs on a real weights file. The seeded
    net's batch-norm statistics are those of a dozen photos (one pass in training mode with
    momentum 0): with Keras' initial ones its features fade to about 1e-11 through the blocks,
    and tests comparing features would compare zeros.
    """
    found = pretrained_weights()
    if found is not None:
        return found
    import keras

    from fruits_jobs.imaging import decode
    from fruits_jobs.model import build_model

    print("no pretrained weights in ../shared/models: using a seeded MobileNetV2")
    keras.utils.set_random_seed(1234)
    net = build_model(1.0, 224)
    for layer in net.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    net(np.stack([decode(p.read_bytes(), 224) for p in sample_images(GROCERY, 2)]), training=True)
    # Keras' HDF5 layout, as the Keras hub's files: the jobs read it with h5py, no TensorFlow.
    path = tmp_path_factory.mktemp("weights") / "seeded_mobilenet_v2.h5"
    net.save(path)
    return path


@pytest.fixture(scope="session")
def spark():
    """One local SparkSession for the whole run (2 cores, small shuffles, no UI)."""
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("fruits-tests")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "4g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def labels(root: Path, count: int) -> list[str]:
    """The names of the first ``count`` label folders under ``root`` (sorted, stable)."""
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(names) < count:
        raise ValueError(f"{root} has {len(names)} label folders, the test needs {count}")
    return names[:count]


def sample_images(root: Path, per_label: int, labels: list[str] | None = None) -> list[Path]:
    """The first ``per_label`` images of each label folder under ``root`` (sorted, stable)."""
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if labels is not None:
        folders = [f for f in folders if f.name in labels]
    return [img for f in folders for img in sorted(f.glob("*.jpg"))[:per_label]]


def copy_images(images: list[Path], dest: Path, rename: str | None = None) -> None:
    """Copy ``images`` to ``dest/<label>/``, optionally under a new label name."""
    for img in images:
        target = dest / (rename or img.parent.name)
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(img, target / img.name)


def _jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def tricky_tree(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A folder of real photos plus every kind of awkward input, and what each should give.

    Returns ``{"root": Path, "good": {name: label}, "bad": {name: reason prefix},
    "photos": {names of the unaltered photo copies}}``.
    """
    root = tmp_path_factory.mktemp("tricky")
    real = Image.open(sample_images(GROCERY, 1)[0]).convert("RGB")
    odd = root / "Pomme Golden é"  # spaces and an accent in the label
    odd.mkdir()
    photos = sample_images(GROCERY, 2, labels(GROCERY, 1))
    copy_images(photos, root, "Pomme Golden é")
    cherries = sample_images(FRUITS360 / "Training", 2, ["Cherry 1"])
    copy_images(cherries, root / "Training")
    rng = np.random.default_rng(0)
    good = {
        "gray.jpg": real.convert("L"),
        "rgba.PNG": real.convert("RGBA"),
        "palette.png": real.convert("P"),
        "cmyk.jpeg": real.convert("CMYK"),
        "huge.JPG": real.resize((4000, 4000)),
    }
    for name, image in good.items():
        image.save(odd / name)
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW on display
    real.save(rotated, format="JPEG", exif=exif)
    (odd / "exif_rotated.jpg").write_bytes(rotated.getvalue())
    good["exif_rotated.jpg"] = real
    jpeg = _jpeg_bytes(real)
    bad = {
        "zero.jpg": (b"", "empty file"),
        "notes.jpg": (b"just some text, not an image\n", "not a decodable image"),
        "corrupt.jpg": (jpeg[:20] + rng.bytes(4000), "not a decodable image"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated image"),
    }
    for name, (content, _) in bad.items():
        (odd / name).write_bytes(content)
    (odd / "README.md").write_text("not an image extension: not an input")
    expected = {name: "Pomme Golden é" for name in good}
    for img in (root / "Pomme Golden é").glob("*.jpg"):
        if img.name not in bad and img.name not in good:
            expected[img.name] = "Pomme Golden é"
    for img in (root / "Training" / "Cherry 1").glob("*.jpg"):
        expected[img.name] = "Cherry 1"
    return {
        "root": root,
        "good": expected,
        "bad": {k: v[1] for k, v in bad.items()},
        "photos": {p.name for p in photos + cherries},
    }


def spark_processes(folder: Path) -> list[int]:
    """Pids of live processes whose command line names ``folder`` (the stand-in's Spark)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if str(folder).encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
    return found


@pytest.fixture(scope="session")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The local EMR stand-in, once per session, with the test keys and its endpoint in the
    environment (boto3, Airflow); stopped, with every Spark process it started, at the end."""
    from local_emr.server import LocalEmr, connection_uri

    workdir = tmp_path_factory.mktemp("local-emr")
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.setenv(name, "testing")
        for name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
            env.delenv(name, raising=False)
        env.setenv("AWS_DEFAULT_REGION", REGION)
        emr = LocalEmr(workdir=workdir, boot_s=0.5)
        try:
            emr.start()
            env.setenv("AWS_ENDPOINT_URL", emr.endpoint)
            env.setenv("AIRFLOW_CONN_AWS_DEFAULT", connection_uri(emr.endpoint, REGION))
            yield emr
        finally:
            emr.stop()
            left = spark_processes(workdir)
            assert not left, f"Spark processes left running: {left}"


@pytest.fixture(scope="session")
def node_env_archive() -> Path:
    """The nodes' Python environment archive of this lock file, where ``upload_code`` keeps
    it (``~/.cache/fruits-pipeline/node-env``): built once per machine and lock file, from
    the wheels pip's cache kept when ``make setup`` installed the same versions."""
    from fruits_pipeline import node_env

    return node_env.ensure(Path(NODE_ENVS).expanduser(), ROOT / LOCK_FILE)


@pytest.fixture(scope="module")
def lake(stand_in: Any, node_env_archive: Path, request: pytest.FixtureRequest) -> Any:
    """The module's bucket (its ``BUCKET``) on the stand-in, as ``make aws-bootstrap`` makes it
    (EU, encrypted, TLS-only policy); an S3 client of the stand-in. The node environment is
    built first, so that no DAG task waits for it (the first run's ``upload_code`` sends it)."""
    from fruits_pipeline.aws_bootstrap import Bootstrap, Names

    outcomes = Bootstrap(Names(request.module.BUCKET, REGION)).up()
    assert outcomes["TLS-only bucket policy"] == "created", outcomes
    return stand_in.client("s3")
