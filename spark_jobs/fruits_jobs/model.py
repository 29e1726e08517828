"""MobileNetV2 for featurization: resolve and read the weights once, rebuild the net anywhere.

* On the driver, :func:`resolve_weights` turns ``imagenet``, a local path or an ``s3://`` URI
  into one local ``.h5`` file and its sha256; :func:`read_weights` loads it into Keras once and
  returns the weight arrays, which the job broadcasts.
* On an executor, :func:`cached_model` builds the net from those arrays the first time a Python
  worker needs it and keeps it for every later batch, partition and task of that worker.

TensorFlow is imported lazily, so importing this module costs nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from fruits_jobs import contract
from fruits_jobs.errors import JobError

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

KERAS_HUB = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"


class WeightsError(JobError):
    """The weights cannot be found, fetched or loaded into MobileNetV2."""


@dataclass(frozen=True)
class ModelSpec:
    """What identifies the featurizer: architecture settings plus the weights' sha256."""

    alpha: float = 1.0
    image_size: int = 224
    weights_sha256: str = ""

    def as_report(self, weights: str) -> dict[str, Any]:
        """The ``model`` entry of the featurize report."""
        return {
            "name": "MobileNetV2",
            "alpha": self.alpha,
            "image_size": self.image_size,
            "pooling": "avg",
            "feature_dim": contract.FEATURE_DIM,
            "weights": weights,
            "weights_sha256": self.weights_sha256,
        }


def sha256_of(path: str | Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights(weights: str, alpha: float, image_size: int) -> Path:
    """Return a local ``.h5`` file for ``weights``: ``imagenet``, a path or an ``s3://`` URI.

    ``imagenet`` is fetched once from the Keras hub into ``~/.keras/models`` (Keras' own
    cache); an ``s3://`` URI is downloaded with boto3 to a temporary file.

    :raises WeightsError: the file does not exist or cannot be fetched.
    """
    if weights == "imagenet":
        from keras.utils import get_file

        rows = image_size if image_size in (96, 128, 160, 192, 224) else 224
        name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}_no_top.h5"
        try:
            return Path(get_file(name, KERAS_HUB + name, cache_subdir="models"))
        except Exception as err:
            raise WeightsError(f"cannot download imagenet weights {name}: {err}") from err
    parsed = urlparse(weights)
    if parsed.scheme == "s3":
        import boto3

        target = Path(tempfile.mkdtemp(prefix="fruits-weights-")) / Path(parsed.path).name
        try:
            boto3.client("s3").download_file(parsed.netloc, parsed.path.lstrip("/"), str(target))
        except Exception as err:
            raise WeightsError(f"cannot download weights {weights}: {err}") from err
        return target
    path = Path(parsed.path if parsed.scheme == "file" else weights)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {weights}")
    return path


def build_model(alpha: float, image_size: int, weights: str | None = None) -> keras.Model:
    """A headless MobileNetV2 with global average pooling: 1280 features per image."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras.applications.MobileNetV2(
        input_shape=(image_size, image_size, 3),
        alpha=alpha,
        include_top=False,
        weights=weights,
        pooling="avg",
    )


def read_weights(path: Path, alpha: float, image_size: int) -> list[np.ndarray]:
    """Load the ``.h5`` file at ``path`` into MobileNetV2 and return its weight arrays.

    :raises WeightsError: the file is not MobileNetV2 weights for this ``alpha``.
    """
    try:
        model = build_model(alpha, image_size, weights=str(path))
    except Exception as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise WeightsError(
            f"{path} is not MobileNetV2 weights (alpha={alpha}, no top): {detail}"
        ) from err
    return model.get_weights()


_ARRAYS: dict[ModelSpec, list[np.ndarray]] = {}
_MODELS: dict[ModelSpec, Any] = {}


def driver_weights(spec: ModelSpec, path: Path) -> list[np.ndarray]:
    """:func:`read_weights` once per driver process and weights content (``spec``'s sha256).

    A session that featurizes several batches checks and reads the file once, not per batch.
    """
    if spec not in _ARRAYS:
        arrays = read_weights(path, spec.alpha, spec.image_size)
        _ARRAYS.clear()  # one set (about 14 MB) at most
        _ARRAYS[spec] = arrays
    return _ARRAYS[spec]


def cached_model(spec: ModelSpec, weights: Any, threads: int | None = None) -> keras.Model:
    """The worker's MobileNetV2 for ``spec``, built from the broadcast ``weights`` on first use.

    :param weights: a ``pyspark.Broadcast`` of the arrays from :func:`read_weights` (or the
        list itself); its ``.value`` is read only when the model is not cached yet.
    :param threads: CPU threads TensorFlow may use in this process (the task's cores), set
        before the first model is built; ``None`` keeps TensorFlow's default (every core).
    """
    model = _MODELS.get(spec)
    if model is None:
        if threads is not None and not _MODELS:
            limit_threads(threads)
        arrays = getattr(weights, "value", weights)
        model = build_model(spec.alpha, spec.image_size)
        model.set_weights(arrays)
        _MODELS[spec] = model
        log.info("built MobileNetV2 %s in worker pid %d", spec, os.getpid())
    return model


def limit_threads(threads: int) -> None:
    """Run TensorFlow's ops on ``threads`` threads, one op at a time, in this process.

    Spark runs one Python worker per concurrent task; with TensorFlow's default (a thread per
    core in every worker) the workers oversubscribe the cores. No-op once TensorFlow has
    started (it cannot change then), e.g. in a driver that already ran a model.
    """
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        log.info("TensorFlow already started in pid %d: thread count unchanged", os.getpid())


def model_builds() -> int:
    """How many models this process has built (each spec at most once)."""
    return len(_MODELS)
