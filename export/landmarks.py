"""Face-mesh landmarks for every image of a dataset, through the device's own FaceMesh.

Training data goes through the same detector, landmark model and fallback rule as camera frames,
so the alignment the model learns on is the alignment it meets on the glasses. Results are
cached next to the dataset cache (one .npz per source file, keyed by its size and by the TFLite
runtime that ran the face models: another runtime gives slightly other landmarks).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from edge.pipeline import find_faces
from edge.vision.faces import FaceMesh

_LOGGER = logging.getLogger(__name__)


def dataset_landmarks(images: np.ndarray, threads: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(landmarks float32 [N,468,3] or NaN, presence [N], detected bool [N]) for gray/BGR images."""
    n = len(images)
    landmarks = np.full((n, 468, 3), np.nan, dtype=np.float32)
    presence = np.zeros(n, dtype=np.float32)
    detected = np.zeros(n, dtype=bool)
    start = time.perf_counter()
    # min_presence 0: the likeliest mesh is recorded with its presence whatever it is, and
    # edge.vision.upperface.recorded_meshes decides, as for every recording, which ones count as a face.
    with FaceMesh(threads=threads, max_faces=1, min_presence=0.0) as mesh:
        for i, image in enumerate(images):
            faces = find_faces(mesh, image)
            if faces:
                best = max(faces, key=lambda f: f.score)
                landmarks[i], presence[i], detected[i] = best.landmarks, best.score, not best.fallback
            if i and i % 5000 == 0:
                _LOGGER.info("%d/%d faces, %.1f ms each", i, n, (time.perf_counter() - start) * 1e3 / i)
    return landmarks, presence, detected


def cache_path(cache_dir: Path, npz_path: Path, view: str = "") -> Path:
    """Where the landmarks of npz_path (or of a derived `view` of its images, e.g. "masked0") are cached."""
    from importlib.metadata import version

    runtime = f"litert{version('ai-edge-litert')}"
    return cache_dir / f"{npz_path.stem}{'.' + view if view else ''}.landmarks.{npz_path.stat().st_size}.{runtime}.npz"


def cached_landmarks(npz_path: Path, cache_dir: Path) -> dict[str, np.ndarray]:
    """Landmarks for the `x` array of npz_path, computed once and cached."""
    return cached_array_landmarks(lambda: np.load(npz_path)["x"], cache_path(cache_dir, npz_path), npz_path.name)


def cached_array_landmarks(load_images, cache: Path, name: str) -> dict[str, np.ndarray]:
    """Landmarks for the images `load_images()` returns, cached in `cache` (the caller keys its name)."""
    if cache.is_file():
        return dict(np.load(cache))
    cache_dir = cache.parent
    images = load_images()
    landmarks, presence, detected = dataset_landmarks(images)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, landmarks=landmarks.astype(np.float16), presence=presence, detected=detected)
    tmp.replace(cache)
    _LOGGER.info("%s: %d faces detected, %d fallback", name, detected.sum(), (~detected & (presence > 0)).sum())
    return dict(np.load(cache))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("npz", type=Path, nargs="+")
    parser.add_argument("--cache", type=Path, default=Path("cache"))
    for p in parser.parse_args().npz:
        cached_landmarks(p, parser.parse_args().cache)
