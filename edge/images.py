"""Reading images from disk or bytes, with errors that say what is wrong.

The header is read before anything is decoded, so a decompression bomb (16000×16000 in a few hundred
KB) costs its header, not gigabytes; `decode_scaled` also lets libjpeg decode a large JPEG straight at
1/2, 1/4 or 1/8 scale, so the full-size frame is never held when the pipeline would not use it.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from edge.errors import ImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"})
READ_FORMATS = ("JPEG", "PNG", "BMP", "WEBP", "TIFF", "PPM")
"""The formats of IMAGE_SUFFIXES as Pillow names them (PPM covers .pgm): the headers we read."""
MAX_PIXELS = 40_000_000
"""Refuse anything larger (decompression bombs, panoramas): the glasses capture 1280×960."""
_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
DEMO_PORTRAIT = Path(__file__).resolve().parent / "data" / "grace_hopper.jpg"
"""The demo face (public domain; source, licence and sha256 in edge/data/README.md)."""


def walk(paths: list[Path]) -> Iterator[Path]:
    """Files as given; folders walked (sorted) for image files."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path


def check_header(data: bytes, name: str = "image", max_pixels: int = MAX_PIXELS,
                 formats: Sequence[str] = READ_FORMATS, fix: str | None = None) -> tuple[str, int, int]:
    """(format, width, height) from the image header alone (Pillow reads no pixel data for it);
    ImageError for an empty file, one that is not an image in `formats`, or one over `max_pixels`
    (`fix` says what to do then; by default, resize it below the limit)."""
    fix = fix or f"resize it below {max_pixels / 1e6:g} MP"
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageError(f"{name}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we refuse at max_pixels, far lower
            with Image.open(io.BytesIO(data), formats=list(formats)) as image:
                fmt, (width, height) = image.format, image.size
    except Image.DecompressionBombError as exc:  # over twice Pillow's own limit: it gives no size, only a sentence
        raise ImageError(_bomb_message(name, str(exc), max_pixels, fix)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        kinds = " or ".join([", ".join(formats[:-1]), formats[-1]] if len(formats) > 1 else formats)
        raise ImageError(f"{name}: not a readable image (corrupt, truncated or not {kinds})") from None
    if width * height > max_pixels:
        raise ImageError(f"{name}: {width}×{height} is too large (over the {max_pixels:,} pixel limit); {fix}")
    return str(fmt), width, height


def _bomb_message(name: str, pillow_says: str, max_pixels: int, fix: str) -> str:
    """The one line for an image Pillow refuses to open, in the words of the check above: its pixel count
    (from Pillow's sentence, which quotes its own, different limit) and our limit."""
    from PIL import Image

    found = re.search(r"\((\d+) pixels\)", pillow_says)
    size = f"{int(found.group(1)):,} pixels" if found else "its size"
    limit = min(max_pixels, 2 * Image.MAX_IMAGE_PIXELS) if Image.MAX_IMAGE_PIXELS else max_pixels
    return f"{name}: {size} is too large (over the {limit:,} pixel limit); {fix}"


def reduction(fmt: str, width: int, height: int, min_side: int) -> int:
    """The largest of 8, 4, 2 that keeps a JPEG's long side at least `min_side` pixels, else 1: libjpeg
    decodes at those scales directly (other formats would be decoded whole and then shrunk)."""
    if fmt != "JPEG" or min_side <= 0:
        return 1
    return next((f for f in (8, 4, 2) if max(width, height) // f >= min_side), 1)


def decode_scaled(data: bytes, name: str = "image", min_side: int = 0) -> tuple[np.ndarray, tuple[int, int]]:
    """(BGR uint8 image, the image's full (width, height) as decoded whole): a JPEG whose long side is
    at least twice `min_side` is decoded at the smallest of 1/2, 1/4, 1/8 scale that keeps `min_side`."""
    fmt, width, height = check_header(data, name)
    factor = reduction(fmt, width, height, min_side)
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _REDUCED[factor])
    except cv2.error as exc:
        raise ImageError(f"{name}: cannot decode ({exc.err})") from exc
    if image is None:
        raise ImageError(f"{name}: not a readable image (corrupt, truncated or not an image format OpenCV reads)")
    # OpenCV turns the image by its EXIF orientation; the header gives the size before that turn
    upright = (-(-width // factor), -(-height // factor)) == (image.shape[1], image.shape[0])
    return image, ((width, height) if upright else (height, width))


def decode(data: bytes, name: str = "image") -> np.ndarray:
    """BGR (or gray → BGR) uint8 image from encoded bytes, at full size."""
    return decode_scaled(data, name)[0]


def read_scaled(path: Path, min_side: int = 0) -> tuple[np.ndarray, tuple[int, int]]:
    """`decode_scaled` of a file, with errors that name the path."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise ImageError(f"{path}: is a folder") from exc
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror})") from exc
    return decode_scaled(data, str(path), min_side)


def read(path: Path) -> np.ndarray:
    return read_scaled(path)[0]


def demo_portrait() -> np.ndarray:
    """The demo portrait, BGR 512×600: the face of the demo camera source, the bench scenes and the tests."""
    try:
        return read(DEMO_PORTRAIT)
    except ImageError as exc:
        raise ImageError(f"demo portrait {exc}: it ships with the code; restore it with `git checkout -- edge/data`") from exc
