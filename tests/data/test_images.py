"""Hostile and ordinary images in a drop's `image` column: refused with the row and the reason, or accepted in
every mode the vision backbone reads."""

import io
import struct
import zlib

import pytest
from PIL import Image

from pipeline.data.images import image_problem
from pipeline.data.task_dataset import DatasetLimits, InvalidDataset, TaskDataset
from tests.orchestrator.conftest import parquet


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A 1×1 PNG whose header (IHDR, with a valid CRC) claims width × height: no pixel data to match."""
    data = bytearray(encoded(Image.new("L", (1, 1))))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    return bytes(data)


LIMIT = DatasetLimits().max_image_pixels


@pytest.mark.parametrize(
    "data, reason",
    [
        (encoded(Image.new("RGB", (32, 32), "red"))[:60], "does not decode"),
        (b"just some text, not pixels", "is not an image"),
        (b"", "is not an image"),
        (encoded(Image.new("P", (8, 8)), "GIF"), "is a GIF image; PNG or JPEG only"),
        (png_declaring(10_000, 10_000), "declares 10000×10000 pixels, over the 25,000,000-pixel limit"),
        # A real bomb: 144 megapixels of one bit each compress to a few kilobytes.
        (encoded(Image.new("1", (12_000, 12_000))), "declares 12000×12000 pixels"),
    ],
    ids=["truncated", "text", "empty", "gif", "100-megapixel-header", "decompression-bomb"],
)
def test_a_hostile_image_is_refused_with_its_reason(data, reason):
    assert reason in (image_problem(data, LIMIT) or "")


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA"])
def test_grey_palette_rgb_and_alpha_images_are_accepted(mode):
    assert image_problem(encoded(Image.new(mode, (16, 12))), LIMIT) is None
    if mode in ("L", "RGB"):
        assert image_problem(encoded(Image.new(mode, (16, 12)), "JPEG"), LIMIT) is None


def test_a_drop_with_one_bad_image_names_its_row_and_is_refused_before_training():
    good = encoded(Image.new("L", (28, 28)))
    files = {
        "train.parquet": parquet(image=[good, good, png_declaring(10_000, 10_000)], label=["a", "b", "a"])
    }
    with pytest.raises(InvalidDataset, match=r"train.parquet: the image in row 2 declares 10000×10000"):
        TaskDataset.from_files("t", files)


def test_images_that_each_fit_but_together_declare_too_many_pixels_are_refused_before_any_is_decoded(
    monkeypatch,
):
    # 400 headers of 5,000 × 5,000 (each under the per-image limit): 10 gigapixels to decode, from a few KB.
    big = png_declaring(5_000, 5_000)
    files = {"train.parquet": parquet(image=[big] * 400, label=["a", "b"] * 200)}
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded an image of a refused drop"))
    with pytest.raises(
        InvalidDataset, match=r"declare 10,000,000,000 pixels, over the 2,000,000,000-pixel limit"
    ):
        TaskDataset.from_files("t", files)
