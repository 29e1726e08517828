"""MobileNetV2 for featurization: resolve and read the weights once, rebuild the net anywhere.

* On the driver, :func:`resolve_weights` turns ``imagenet``, a local path or an ``s3://`` URI
  into one local ``.h5`` file and its sha256; :func:`read_weights` reads and checks the weight
  arrays, which the job broadcasts. Keras' HDF5 layout (the Keras hub's files) is read with
  h5py, so the driver never starts TensorFlow.
* On an executor, :func:`prepare` imports TensorFlow and builds the bare net ahead of the data
  (the job runs it while the driver lists the images), and :func:`cached_model` gives it the
  broadcast weights the first time a Python worker needs it, then keeps it for every later
  batch, partition and task of that worker. The net (:class:`Net`) is MobileNetV2 written
  with TensorFlow's ops from :func:`layout`, each batch norm folded into the convolution
  before it (:func:`fold_batch_norms`): Keras' features, at 1.5 times Keras' speed.
  :func:`build_model` (Keras' own) stays the reference the tests compare it with.

TensorFlow is imported lazily, so importing this module costs nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse
from urllib.request import urlopen

import numpy as np

from fruits_jobs import contract
from fruits_jobs.errors import JobError

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

KERAS_HUB = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
FIRST_FILTERS = {0.35: 16, 0.5: 16, 0.75: 24, 1.0: 32}
"""Widths (alpha) whose net ends in ``contract.FEATURE_DIM`` features, and the filters of their
first convolution (``Conv1``): the Keras hub has weights for each."""
BLOCKS = (
    (16, 1, 1, 1),
    (24, 6, 2, 2),
    (32, 6, 3, 2),
    (64, 6, 4, 2),
    (96, 6, 3, 1),
    (160, 6, 3, 2),
    (320, 6, 1, 1),
)
"""MobileNetV2's inverted residual stages: (output filters, expansion, blocks, first stride)."""
BATCH_NORM_EPSILON = 1e-3
"""The epsilon of every batch norm of Keras' ``MobileNetV2``."""
MIN_IMAGE_SIZE = 32
"""The smallest input side Keras' ``MobileNetV2`` accepts, and :class:`Net` too."""


@dataclass(frozen=True)
class Conv:
    """One convolution of MobileNetV2, followed by its batch norm and maybe ReLU6.

    ``kernel`` is Keras' shape for it: ``(h, w, in, out)``, or ``(h, w, channels, 1)`` for a
    depthwise one. ``"SAME"`` padding everywhere: for a stride of 2 it pads as Keras'
    ``ZeroPadding2D(correct_pad(...))`` then ``"valid"`` does, on even and odd sides alike.
    """

    kernel: tuple[int, int, int, int]
    depthwise: bool = False
    stride: int = 1
    relu6: bool = True

    @property
    def width(self) -> int:
        """The channels out, which its batch norm's four arrays have."""
        return self.kernel[2] if self.depthwise else self.kernel[3]


@dataclass(frozen=True)
class Block:
    """Convolutions run in order; ``residual``: the block's input is added to their output."""

    convs: tuple[Conv, ...]
    residual: bool = False


def layout(alpha: float) -> list[Block]:
    """A headless MobileNetV2 of width ``alpha``, as Keras' ``MobileNetV2`` builds it."""
    channels = FIRST_FILTERS[alpha]
    blocks = [Block((Conv((3, 3, 3, channels), stride=2),))]
    for filters, expansion, count, first_stride in BLOCKS:
        out = _make_divisible(filters * alpha)
        for i in range(count):
            stride = first_stride if i == 0 else 1
            inner = channels * expansion
            expand = (Conv((1, 1, channels, inner)),) if expansion != 1 else ()
            convs = (
                *expand,
                Conv((3, 3, inner, 1), depthwise=True, stride=stride),
                Conv((1, 1, inner, out), relu6=False),
            )
            blocks.append(Block(convs, residual=stride == 1 and channels == out))
            channels = out
    return [*blocks, Block((Conv((1, 1, channels, contract.FEATURE_DIM)),))]


def weight_shapes(alpha: float) -> list[tuple[int, ...]]:
    """The shape of each weight array of a headless MobileNetV2 of width ``alpha``, in order.

    Keras' ``MobileNetV2`` layer by layer: a convolution's kernel, then its batch norm's
    gamma, beta, moving mean and moving variance.
    """
    return [
        shape
        for block in layout(alpha)
        for conv in block.convs
        for shape in (conv.kernel, *[(conv.width,)] * 4)
    ]


def fold_batch_norms(arrays: list[np.ndarray], alpha: float) -> list[np.ndarray]:
    """Keras' weight arrays (:func:`weight_shapes`) as each convolution's kernel and bias.

    Inference-mode batch norm is ``(x - mean) * gamma / sqrt(variance + eps) + beta``, an
    affine map per channel: it goes into the convolution before it (kernel times the scale,
    bias ``beta - mean * scale``), so the net runs one fused op where Keras runs several.
    """
    folded = []
    convs = [conv for block in layout(alpha) for conv in block.convs]
    for i, conv in enumerate(convs):
        kernel, gamma, beta, mean, variance = arrays[5 * i : 5 * i + 5]
        scale = gamma / np.sqrt(variance + BATCH_NORM_EPSILON)
        per_channel = scale.reshape(1, 1, -1, 1) if conv.depthwise else scale
        folded += [
            (kernel * per_channel).astype(np.float32),
            (beta - mean * scale).astype(np.float32),
        ]
    return folded


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Keras' rounding of a layer's filters to a multiple of 8, never 10% below ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class WeightsError(JobError):
    """The weights cannot be found, fetched or loaded into MobileNetV2."""


BAD_FILE_ERRORS = (OSError, KeyError, ValueError, RuntimeError)
"""What h5py and Keras raise for a file that is not intact weights, found by truncating and
corrupting real ones: ``OSError`` (not HDF5, truncated, unreadable data), ``KeyError`` (an
object the file names is missing), ``ValueError`` (names that are not text, Keras' mismatched
layers or shapes) and ``RuntimeError`` (h5py's other HDF5 errors). Other exceptions are bugs."""


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

    ``imagenet`` is fetched once from the Keras hub into Keras' own cache
    (``$KERAS_HOME/models``, by default ``~/.keras/models``) with the standard library, so the
    driver does not import Keras; where that cache cannot be created (a YARN container in
    cluster mode has Hadoop's unwritable ``/home/`` as ``HOME``), into a temporary folder. An
    ``s3://`` URI is downloaded with boto3 to a temporary file.

    :raises WeightsError: the file does not exist or cannot be fetched.
    """
    if weights == "imagenet":
        rows = image_size if image_size in (96, 128, 160, 192, 224) else 224
        name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}_no_top.h5"
        cached = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models" / name
        if not cached.is_file():
            try:
                cached.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                log.warning("no Keras cache at %s (%s): using a temporary folder", cached, err)
                cached = Path(tempfile.mkdtemp(prefix="fruits-weights-")) / name
            partial = cached.with_name(f".{name}.{os.getpid()}.part")
            try:
                with urlopen(KERAS_HUB + name, timeout=60) as response, open(partial, "wb") as out:
                    shutil.copyfileobj(response, out)
            except (OSError, HTTPException) as err:
                partial.unlink(missing_ok=True)
                detail = _first_line(err)
                raise WeightsError(f"cannot download imagenet weights {name}: {detail}") from err
            partial.replace(cached)
        return cached
    parsed = urlparse(weights)
    if parsed.scheme == "s3":
        import boto3
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        target = Path(tempfile.mkdtemp(prefix="fruits-weights-")) / Path(parsed.path).name
        try:
            boto3.client("s3").download_file(parsed.netloc, parsed.path.lstrip("/"), str(target))
        except (BotoCoreError, ClientError, Boto3Error, OSError) as err:
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
    """The weight arrays of the MobileNetV2 file at ``path``, in ``Model.get_weights`` order.

    Keras' HDF5 layout (``layer_names`` and ``weight_names`` attributes: the Keras hub's files,
    ``model.save("x.h5")``) is read with h5py, the order Keras' own loader uses, in 0.05 s
    where loading it into Keras takes 5 s (TensorFlow's import and a model build). Other files
    (Keras 3 ``.weights.h5``) are loaded into a Keras model.

    :raises WeightsError: the file is not headless MobileNetV2 weights for this ``alpha``.
    """
    import h5py

    def refuse(detail: str) -> WeightsError:
        return WeightsError(f"{path} is not MobileNetV2 weights (alpha={alpha}, no top): {detail}")

    try:
        with h5py.File(path, "r") as h5:
            group = h5.get("model_weights", h5)
            layers = _hdf5_layers(group) if "layer_names" in group.attrs else None
    except BAD_FILE_ERRORS as err:
        raise refuse(_first_line(err)) from err
    if layers is None:
        return _read_with_keras(path, alpha, image_size, refuse)
    named = [(f"{layer}[{i}]", a) for layer, arrays in layers.items() for i, a in enumerate(arrays)]
    shapes = weight_shapes(alpha)
    if len(named) != len(shapes):
        raise refuse(f"{len(named)} weight arrays, a headless MobileNetV2 has {len(shapes)}")
    for (name, array), shape in zip(named, shapes, strict=True):
        if array.shape != shape:
            raise refuse(f"{name} has shape {array.shape}, this width needs {shape}")
    return [array for _, array in named]


def _hdf5_layers(group: Any) -> dict[str, list[np.ndarray]]:
    """Each layer's arrays in a Keras HDF5 weights group, in file order (Keras' load order)."""
    layers = {}
    for name in map(_text, group.attrs["layer_names"]):
        weight_names = [_text(w) for w in group[name].attrs.get("weight_names", [])]
        if weight_names:
            layers[name] = [np.asarray(group[name][w]) for w in weight_names]
    return layers


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _first_line(err: Exception) -> str:
    """The first line of ``err``'s message, or its type's name when it has none."""
    lines = str(err).splitlines()
    return lines[0] if lines else type(err).__name__


def _read_with_keras(
    path: Path, alpha: float, image_size: int, refuse: Callable[[str], WeightsError]
) -> list[np.ndarray]:
    try:
        model = build_model(alpha, image_size, weights=str(path))
    except BAD_FILE_ERRORS as err:
        raise refuse(_first_line(err)) from err
    return model.get_weights()


_ARRAYS: dict[ModelSpec, list[np.ndarray]] = {}
_MODELS: dict[ModelSpec, Net] = {}


def driver_weights(spec: ModelSpec, path: Path) -> list[np.ndarray]:
    """:func:`read_weights` once per driver process and weights content (``spec``'s sha256).

    A session that featurizes several batches checks and reads the file once, not per batch.
    """
    if spec not in _ARRAYS:
        arrays = read_weights(path, spec.alpha, spec.image_size)
        _ARRAYS.clear()  # one set (about 14 MB) at most
        _ARRAYS[spec] = arrays
    return _ARRAYS[spec]


_BARE: dict[tuple[float, int], Net] = {}


@dataclass(frozen=True)
class Net:
    """MobileNetV2 as TensorFlow ops, batch norms folded, traced once for any batch size.

    Keras' ``MobileNetV2`` runs each batch norm as separate element-wise ops; folded into the
    convolutions (:func:`fold_batch_norms`), TensorFlow fuses convolution, bias and ReLU6 into
    one op: on one core, 27 ms an image against Keras' 41 to 45 ms, the same features to
    ``2.5e-6`` of their largest (the real weights, 64 grocery photos), and 0.45 s to build and
    trace against 1.6 s. The weights are variables, so a net is built and traced before they
    arrive (:func:`prepare`). One input signature with no batch size makes a single trace.
    """

    alpha: float
    variables: list[Any]
    infer: Callable[[Any], Any]

    @classmethod
    def build(cls, alpha: float, image_size: int) -> Net:
        """Build the net with zero weights and its not yet traced inference function.

        :raises ValueError: ``image_size`` is below :data:`MIN_IMAGE_SIZE`.
        """
        if image_size < MIN_IMAGE_SIZE:
            raise ValueError(
                f"MobileNetV2 needs images of at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}"
            )
        tf = import_tensorflow()

        blocks = layout(alpha)
        variables = [
            tf.Variable(tf.zeros(shape), trainable=False)
            for block in blocks
            for conv in block.convs
            for shape in (conv.kernel, (conv.width,))
        ]

        def apply(conv: Conv, x: tf.Tensor, kernel: tf.Variable, bias: tf.Variable) -> tf.Tensor:
            if conv.depthwise:
                strides = [1, conv.stride, conv.stride, 1]
                x = tf.nn.depthwise_conv2d(x, kernel, strides, "SAME")
            else:
                x = tf.nn.conv2d(x, kernel, conv.stride, "SAME")
            x = tf.nn.bias_add(x, bias)
            return tf.nn.relu6(x) if conv.relu6 else x

        @tf.autograph.experimental.do_not_convert  # plain Python: nothing to convert
        def infer(images: tf.Tensor) -> tf.Tensor:
            weights = iter(variables)
            x = images
            for block in blocks:
                y = x
                for conv in block.convs:
                    y = apply(conv, y, next(weights), next(weights))
                x = x + y if block.residual else y
            return tf.reduce_mean(x, axis=[1, 2])  # global average pooling

        signature = [tf.TensorSpec([None, image_size, image_size, 3], tf.float32)]
        return cls(alpha, variables, tf.function(infer, input_signature=signature))

    def set_weights(self, arrays: list[np.ndarray]) -> None:
        """Load Keras' weight arrays (:func:`read_weights`' order), batch norms folded."""
        for variable, value in zip(
            self.variables, fold_batch_norms(arrays, self.alpha), strict=True
        ):
            variable.assign(value)

    def features(self, pixels: np.ndarray) -> np.ndarray:
        """The 1280 features of each image of ``pixels`` (``n x side x side x 3`` float32)."""
        return np.asarray(self.infer(pixels), dtype=np.float32)


def prepare(spec: ModelSpec, threads: int | None = None) -> None:
    """Import TensorFlow, build and trace a net without weights for ``spec``'s shape.

    What a Python worker would otherwise do on its first batch (about 3 s of one core, most of
    it TensorFlow's import), done before the data arrives; :func:`cached_model` then only sets
    the weights. No-op where the process has a net of that shape already (``spec``'s weights
    do not matter).

    :param threads: as in :func:`cached_model`.
    """
    shape = (spec.alpha, spec.image_size)
    if shape in _BARE or any((s.alpha, s.image_size) == shape for s in _MODELS):
        return
    net = _build(spec, threads)
    net.features(np.zeros((1, spec.image_size, spec.image_size, 3), np.float32))  # the trace
    _BARE[shape] = net


def cached_model(spec: ModelSpec, weights: Any, threads: int | None = None) -> Net:
    """The worker's MobileNetV2 for ``spec``, given the broadcast ``weights`` on first use.

    Takes the net :func:`prepare` built in this process, or builds one.

    :param weights: a ``pyspark.Broadcast`` of the arrays from :func:`read_weights` (or the
        list itself); its ``.value`` is read only when the model is not cached yet.
    :param threads: CPU threads TensorFlow may use in this process (the task's cores), set
        before the first net is built; ``None`` keeps TensorFlow's default (every core).
    """
    net = _MODELS.get(spec)
    if net is None:
        net = _BARE.pop((spec.alpha, spec.image_size), None)
        if net is None:
            net = _build(spec, threads)
        net.set_weights(getattr(weights, "value", weights))
        _MODELS[spec] = net
        log.info("MobileNetV2 %s ready in worker pid %d", spec, os.getpid())
    return net


def _build(spec: ModelSpec, threads: int | None) -> Net:
    if threads is not None and not (_MODELS or _BARE):
        limit_threads(threads)
    return Net.build(spec.alpha, spec.image_size)


def limit_threads(threads: int) -> None:
    """Run TensorFlow's ops on ``threads`` threads, one op at a time, in this process.

    Spark runs one Python worker per concurrent task; with TensorFlow's default (a thread per
    core in every worker) the workers oversubscribe the cores. No-op once TensorFlow has
    started (it cannot change then), e.g. in a driver that already ran a model.
    """
    tf = import_tensorflow()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        log.info("TensorFlow already started in pid %d: thread count unchanged", os.getpid())


def model_builds() -> int:
    """How many models this process has built (each spec at most once)."""
    return len(_MODELS)


def import_tensorflow() -> Any:
    """``import tensorflow``, without the import of Keras it makes on its own.

    TensorFlow's ``__init__`` imports ``keras.src.optimizers`` (for SavedModel's registry of
    optimizers) inside a ``try``/``except ImportError``: about 1.5 s of a Python worker's 4 s
    TensorFlow import, for Keras code :class:`Net` never runs. That one name is held as not
    importable while TensorFlow imports; Keras imports as usual afterwards, if anything asks.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # read at import: no TensorFlow INFO
    eager = "keras.src.optimizers"
    held = "tensorflow" not in sys.modules and eager not in sys.modules
    if held:
        sys.modules[eager] = None  # type: ignore[assignment]  # import_module raises ImportError
    try:
        import tensorflow as tf
    finally:
        if held and sys.modules.get(eager, eager) is None:
            del sys.modules[eager]
    return tf
