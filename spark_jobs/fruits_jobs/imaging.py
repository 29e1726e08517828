"""Decode image bytes into MobileNetV2's input, or say why the bytes cannot be used.

Pillow only, no TensorFlow: executors decode in plain Python, and the reason strings come from
:mod:`fruits_jobs.contract` so the quarantine speaks the contract's words.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fruits_jobs import contract

MAX_PIXELS = 100_000_000
"""Larger images are quarantined before decoding (Pillow's decompression-bomb guard)."""


class QuarantineError(ValueError):
    """The bytes are not a usable image; ``str(err)`` is the quarantine reason."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Return ``image`` as RGB: EXIF rotation applied, transparency composited on white.

    Handles grayscale (L, I, I;16, F), palette (with or without transparency), RGBA/LA and CMYK.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        image = ImageOps.autocontrast(image.convert("F").convert("L"))
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def decode(content: bytes, size: int) -> np.ndarray:
    """Decode ``content`` to a float32 ``(size, size, 3)`` array in MobileNetV2's [-1, 1] range.

    The image is squashed to ``size`` x ``size`` with bilinear filtering (what
    ``keras.utils.load_img(target_size=...)`` does), then scaled as
    ``keras.applications.mobilenet_v2.preprocess_input`` does: ``x / 127.5 - 1``.

    :raises QuarantineError: empty, undecodable, truncated or oversized input; the message is
        one of :data:`fruits_jobs.contract.QUARANTINE_REASONS`, then ``": "`` and a detail.
    """
    if not content:
        raise QuarantineError(f"{contract.REASON_EMPTY}: 0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(content))
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise QuarantineError(
                    f"{contract.REASON_TOO_LARGE}: {width}x{height} > {MAX_PIXELS} pixels"
                )
            if image.format == "JPEG":
                image.draft("RGB", (size, size))
            image.load()
    except QuarantineError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise QuarantineError(f"{contract.REASON_TOO_LARGE}: {err}") from err
    except UnidentifiedImageError as err:
        raise QuarantineError(f"{contract.REASON_UNDECODABLE}: unknown format") from err
    except (OSError, SyntaxError, ValueError) as err:
        reason = (
            contract.REASON_TRUNCATED if "truncated" in str(err) else contract.REASON_UNDECODABLE
        )
        raise QuarantineError(f"{reason}: {err}") from err
    try:
        rgb = to_rgb(image).resize((size, size), Image.Resampling.BILINEAR)
    except (OSError, ValueError) as err:
        raise QuarantineError(f"{contract.REASON_UNDECODABLE}: {image.mode}: {err}") from err
    pixels = np.asarray(rgb, dtype=np.float32)
    return pixels / np.float32(127.5) - np.float32(1.0)
