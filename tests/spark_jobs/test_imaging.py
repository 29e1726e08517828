"""Decoding: every image mode the app may send, and the reasons for what cannot be used."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fruits_jobs import contract
from fruits_jobs.imaging import QuarantineError, decode
from tests.conftest import GROCERY, sample_images


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.open(sample_images(GROCERY, 1)[0]).convert("RGB")


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_rgb_photo_is_scaled_to_minus_one_one(photo):
    pixels = decode(encode(photo, "PNG"), 224)
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.float32
    assert -1.0 <= pixels.min() < -0.5 and 0.5 < pixels.max() <= 1.0
    expected = np.asarray(photo.resize((224, 224), Image.Resampling.BILINEAR), np.float32)
    np.testing.assert_allclose(pixels, expected / 127.5 - 1, atol=1e-6)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "I;16"])
def test_other_modes_become_rgb(photo, mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    converted = photo.convert(mode) if mode != "I;16" else photo.convert("L").convert("I;16")
    pixels = decode(encode(converted, fmt), 64)
    assert pixels.shape == (64, 64, 3)
    assert pixels.std() > 0.05  # the picture survived, not a blank frame


def test_transparent_pixels_become_white(photo):
    rgba = photo.convert("RGBA")
    rgba.putalpha(0)
    assert np.allclose(decode(encode(rgba, "PNG"), 32), 1.0)


def test_exif_orientation_is_applied(photo):
    wide = photo.resize((300, 150))
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    rotated = decode(encode(wide, "PNG", exif=exif), 64)
    upright = decode(encode(wide.transpose(Image.Transpose.ROTATE_270), "PNG"), 64)
    np.testing.assert_allclose(rotated, upright, atol=1e-6)
    assert not np.allclose(rotated, decode(encode(wide, "PNG"), 64), atol=0.05)


def test_large_jpeg_is_decoded_at_reduced_scale(photo):
    pixels = decode(encode(photo.resize((4000, 4000)), "JPEG"), 224)
    assert pixels.shape == (224, 224, 3)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", contract.REASON_EMPTY),
        (b"plain text, named .jpg", contract.REASON_UNDECODABLE),
        (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8, contract.REASON_UNDECODABLE),
    ],
)
def test_unusable_bytes_raise_the_contract_reason(content, reason):
    with pytest.raises(QuarantineError, match=f"^{reason}: "):
        decode(content, 224)


def test_truncated_jpeg_is_reported_as_truncated(photo):
    data = encode(photo, "JPEG")
    with pytest.raises(QuarantineError, match=f"^{contract.REASON_TRUNCATED}: "):
        decode(data[: len(data) // 2], 224)


def test_oversized_image_is_refused_before_decoding(monkeypatch, photo):
    from fruits_jobs import imaging

    monkeypatch.setattr(imaging, "MAX_PIXELS", photo.width * photo.height - 1)
    size = f"{photo.width}x{photo.height}"
    with pytest.raises(QuarantineError, match=f"^{contract.REASON_TOO_LARGE}: {size} "):
        decode(encode(photo, "PNG"), 224)
