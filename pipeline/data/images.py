"""Image values of a drop, checked before anything trains on them.

Each value must be a PNG or JPEG that decodes completely, in a mode the vision backbone reads (grey, grey with
alpha, palette, RGB, RGBA, CMYK: all become RGB), within a pixel limit that is read from the header, so a
decompression bomb (a small file that declares a huge image) is refused before a single pixel is decoded.
"""

from __future__ import annotations

import io
import warnings

FORMATS = ("PNG", "JPEG")
MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I;16")


def image_problem(data: bytes, max_pixels: int, decode: bool = True) -> str | None:
    """What is wrong with one encoded image, or None. `decode` False checks the header only (for a caller that
    decodes the image next and reports a decode failure itself)."""
    return checked_image(data, max_pixels, decode)[0]


def checked_image(data: bytes, max_pixels: int, decode: bool = True) -> tuple[str | None, int]:
    """(what is wrong with one encoded image or None, the pixels its header declares)."""
    from PIL import Image, UnidentifiedImageError

    pixels = 0

    try:
        with warnings.catch_warnings():
            # Pillow warns (or, past twice its own limit, raises) about large images at open; ours is the limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:  # reads the header only
                if image.format not in FORMATS:
                    return f"is a {image.format} image; PNG or JPEG only", pixels
                width, height = image.size
                pixels = width * height
                if pixels > max_pixels:
                    return f"declares {width}×{height} pixels, over the {max_pixels:,}-pixel limit", pixels
                if image.mode not in MODES:
                    return f"has pixel mode {image.mode!r}, which cannot be read as RGB", pixels
                if decode:
                    image.load()
    except Image.DecompressionBombError as err:
        return f"is refused as a decompression bomb ({err})", pixels
    except UnidentifiedImageError:
        return "is not an image (PNG or JPEG bytes expected)", pixels
    except (OSError, SyntaxError, ValueError) as err:  # truncated or corrupt data
        return f"does not decode: {err}", pixels
    return None, pixels
