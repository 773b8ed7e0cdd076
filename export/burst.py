"""`python -m export burst`: what fusing one face's readings over a short burst of frames gains over one frame.

The camera streams 30 frames a second while the wearer holds still for the answer. Each PublicTest face
(a seeded subsample, unmasked and masked) is rendered as FRAMES frames (300 ms at 30 fps) at each light
level through the camera model of export/darken.py (export.lightcurve.render_level: every frame its own
sensor noise), each frame after frame 0 with a small head shake (`shake`). Every frame is read by the
device pipeline as the light curve reads it (export.evaluate.predict, lowlight=None), and the readings of
the first k frames are fused by edge.results.fuse (the one fusion rule the glasses use) — a product of
experts or the plain mean of the probabilities — and judged by the one readability rule at their mean
noise. Reported per k, level and rule: accuracy, share answered and spoken precision (accuracy when answered).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

_LOGGER = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
LEVELS = (200.0, 50.0, 20.0, 10.0, 5.0, 3.0)
"""Photo-electrons per mid-tone pixel (export.lightcurve.LEVELS without the 100 and 2 e⁻ ends)."""
BURSTS = (1, 3, 5, 9)
"""Frames fused; 9 frames are 300 ms at 30 fps."""
SHIFT_PX = 2.0
"""Largest shift of a shaken frame, pixels at the 48 px face scale (a uniformly drawn direction and length)."""
ROTATION_DEG = 3.0
"""Largest in-plane rotation of a shaken frame, degrees (uniform in ±ROTATION_DEG about the face centre)."""
RESULTS = REPO / "docs" / "experiments" / "2026-12-04-burst.json"


def shake(face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`face` moved as by a small head shake: rotated by U(±ROTATION_DEG) about its centre and shifted by a
    vector of length U(0, SHIFT_PX) in a uniform direction (bilinear, borders reflected) — the scene before
    the camera, so sensor noise comes after it."""
    import cv2

    h, w = face.shape[:2]
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), float(rng.uniform(-ROTATION_DEG, ROTATION_DEG)), 1.0)
    length, angle = rng.uniform(0.0, SHIFT_PX), rng.uniform(0.0, 2 * np.pi)
    matrix[:, 2] += (length * np.cos(angle), length * np.sin(angle))
    return cv2.warpAffine(face, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def burst_frames(x: np.ndarray, frame: int, seed: int) -> np.ndarray:
    """Frame `frame` of every face's burst, before the camera: frame 0 is the face as it is, later frames are
    shaken (seeded by (seed, frame, face), the same shake at every light level)."""
    if frame == 0:
        return x
    return np.stack([shake(face, np.random.default_rng([seed, frame, i])) for i, face in enumerate(x)])


def read_bursts(pipeline: Any, x: np.ndarray, y: np.ndarray, electrons: float, frames: int, seed: int) -> list[list[Any]]:
    """[frame][face] FaceResult: the face `predict` reads in each frame of every face's burst at `electrons`."""
    from export.evaluate import predict
    from export.lightcurve import Recording, render_level

    out = []
    for j in range(frames):
        recording = Recording(pipeline)
        predict(recording, render_level(burst_frames(x, j, seed), electrons, seed + 1000 * j), None, y)
        out.append(recording.faces)
    return out


def score(readings: Sequence[Sequence[Any]], y: np.ndarray, labels: Sequence[str], light: Any, bursts: Sequence[int],
          how: str) -> dict[str, dict[str, Any]]:
    """{k: accuracy, answered, spoken precision, spoken n} of the first k readings of each face fused by `how`,
    and `precision_one_frame`: the precision of one frame (frame 0) made to answer as many faces, its most
    confident ones over their threshold (what a stricter single-frame rule would give at the same share)."""
    from edge.results import fuse, threshold_at

    first = readings[0]
    margin = np.array([f.confidence - threshold_at(f.noise, f.unsure_threshold, light) if f.readable else -np.inf for f in first])
    right_one = np.array([labels.index(f.label) == t for f, t in zip(first, y)])
    rows = {}
    for k in bursts:
        fused = [fuse([readings[j][i] for j in range(k)], light, how) for i in range(len(y))]
        right = np.array([labels.index(f.label) == t for f, t in zip(fused, y)])
        said = np.array([not f.unsure for f in fused])
        best = np.argsort(-margin, kind="stable")[: int(said.sum())]
        rows[str(k)] = {"accuracy": round(float(right.mean()), 4), "answered": round(float(said.mean()), 4),
                        "precision": round(float(right[said].mean()), 4) if said.any() else None, "spoken": int(said.sum()),
                        "precision_one_frame": round(float(right_one[best].mean()), 4) if said.any() else None,
                        "too_dark": round(float(np.mean([not f.readable for f in fused])), 4)}
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from export.lightcurve import add_face_arguments

    add_face_arguments(parser, n=400, levels=LEVELS)
    parser.add_argument("--bursts", type=int, nargs="+", default=list(BURSTS), help="frames fused (default %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help=f"results JSON (e.g. {RESULTS.relative_to(REPO)})")


def main(args: argparse.Namespace) -> int:
    from edge.errors import EdgeError
    from edge.files import write_atomic
    from edge.pipeline import Pipeline
    from edge.results import FUSIONS, LABELS
    from export.evaluate import load_npz
    from export.lightcurve import subsample

    if min(args.bursts) < 1:
        raise EdgeError(f"--bursts {' '.join(map(str, args.bursts))}: a burst is at least 1 frame")
    start = time.perf_counter()
    x, y = load_npz(args.data)
    xm, ym = load_npz(args.masked)
    pick = subsample(len(x), args.n, args.seed)
    frames = max(args.bursts)
    results: dict[str, dict[str, Any]] = {}
    with Pipeline(threads=args.threads, max_faces=2) as pipeline:
        for condition, (images, labels) in {"unmasked": (x[pick], y[pick]), "masked": (xm[pick], ym[pick])}.items():
            results[condition] = {}
            for electrons in args.levels:
                t0 = time.perf_counter()
                readings = read_bursts(pipeline, images, labels, electrons, frames, args.seed)
                row: dict[str, Any] = {how: score(readings, labels, LABELS, pipeline.light, args.bursts, how) for how in FUSIONS}
                row["seconds"] = round(time.perf_counter() - t0, 1)
                results[condition][f"{electrons:g}"] = row
                one, most = row["product"][str(min(args.bursts))], row["product"][str(frames)]
                _LOGGER.info("%s %g e-: accuracy %.3f -> %.3f, answered %.3f -> %.3f, precision %s -> %s (product, k %d -> %d; %.0f s)",
                             condition, electrons, one["accuracy"], most["accuracy"], one["answered"], most["answered"],
                             one["precision"], most["precision"], min(args.bursts), frames, row["seconds"])
        light = pipeline.light
        model = pipeline.expression.path.name
    out = {
        "command": "python -m export burst " + " ".join(f"--{k} {v}" for k, v in (("n", args.n), ("seed", args.seed))),
        "data": [args.data.name, args.masked.name], "n": int(len(pick)), "seed": args.seed, "model": model,
        "frames_per_s": 30, "bursts": list(args.bursts),
        "shake": {"frame_0": "unshaken", "shift_px_max": SHIFT_PX, "rotation_deg_max": ROTATION_DEG, "face_px": int(x.shape[1])},
        "rule": {"readable_noise": light.readable_noise, "unsure_per_noise": light.unsure_per_noise, "unreadable_noise": light.unreadable_noise},
        "results": results, "seconds": round(time.perf_counter() - start, 1),
    }
    text = json.dumps(out, indent=2) + "\n"
    if args.out:
        write_atomic(args.out, text.encode("utf-8"))
    print(text, end="")
    return 0
