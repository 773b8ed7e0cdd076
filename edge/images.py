"""Reading images from disk or bytes, with errors that say what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from edge.errors import ImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"})
MAX_PIXELS = 40_000_000
"""Refuse anything larger (decompression bombs, panoramas): the glasses capture 1280×960."""
DEMO_PORTRAIT = Path(__file__).resolve().parent / "data" / "grace_hopper.jpg"
"""The demo face (public domain; source, licence and sha256 in edge/data/README.md)."""


def walk(paths: list[Path]) -> Iterator[Path]:
    """Files as given; folders walked (sorted) for image files."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path


def decode(data: bytes, name: str = "image") -> np.ndarray:
    """BGR (or gray → BGR) uint8 image from encoded bytes."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size == 0:
        raise ImageError(f"{name}: empty file")
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageError(f"{name}: cannot decode ({exc.err})") from exc
    if image is None:
        raise ImageError(f"{name}: not a readable image (corrupt, truncated or not an image format OpenCV reads)")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ImageError(f"{name}: {image.shape[1]}×{image.shape[0]} is too large; resize it below {MAX_PIXELS // 1_000_000} MP")
    return image


def read(path: Path) -> np.ndarray:
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise ImageError(f"{path}: is a folder") from exc
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror})") from exc
    return decode(data, str(path))


def demo_portrait() -> np.ndarray:
    """The demo portrait, BGR 512×600: the face of the demo camera source, the bench scenes and the tests."""
    try:
        return read(DEMO_PORTRAIT)
    except ImageError as exc:
        raise ImageError(f"demo portrait {exc}: it ships with the code; restore it with `git checkout -- edge/data`") from exc
