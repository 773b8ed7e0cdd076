"""The one pipeline: frame → (low-light) → faces → upper-face sample → expression → result.

Pure: no camera, no audio, no global state. The wearer loop, `analyze`, `bench`, the offload
server and `export evaluate` all call `Pipeline.analyze`, so what is measured is what is spoken.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from edge.config import LightConfig
from edge.results import FaceResult, FrameResult, Position, reading
from edge.runtime import DEFAULT_BACKEND, default_threads
from edge.vision.enhance import DEFAULT_ENHANCER, Enhancer, day_or_night, load_enhancer, noise_level
from edge.vision.expression import DEFAULT_SIDECAR, ExpressionModel
from edge.vision.faces import Face, FaceMesh
from edge.vision.upperface import UpperFaceSample, eye_centres, sample_or_whole

_LOGGER = logging.getLogger(__name__)

STAGES = ("enhance", "detect", "landmarks", "align", "features", "classify")
"""The pipeline's stages in order; timings_ms has one entry for each, then "total" (their sum). The
detector's passes (detect_near, detect_far, detect_tiles) are reported too, as parts of "detect"."""
HORIZONTAL_FOV_DEG = 62.0
"""Typical Pi camera / UVC module horizontal field of view; used only for clock direction and distance."""
INTERPUPIL_M = 0.063
"""Adult mean inter-pupil distance: turns the eye spacing in pixels into a rough distance."""


def position_of(face: Face | None, width: int, height: int) -> Position:
    if face is None:
        return Position(clock=12, distance_m=0.0, x=0.5)
    left, right = eye_centres(face.landmarks)
    cx = float((left[0] + right[0]) / 2)
    focal = (width / 2) / math.tan(math.radians(HORIZONTAL_FOV_DEG / 2))
    bearing = math.degrees(math.atan2(cx - width / 2, focal))
    clock = int(round(bearing / 30.0)) % 12 or 12
    eye_px = float(np.hypot(*(right - left)))
    distance = INTERPUPIL_M * focal / eye_px if eye_px > 1 else 0.0
    return Position(clock=clock, distance_m=distance, x=cx / max(width, 1))


def find_faces(mesh: FaceMesh, frame: np.ndarray, *, track: bool = False, raw: np.ndarray | None = None,
               timings: dict[str, float] | None = None) -> list[Face]:
    """Faces in a BGR or grey frame, as the glasses find them (the mesh reads RGB).

    raw: the frame as the camera gave it when `frame` is its night-branch enhancement; the detector looks
    at both (FaceMesh.process). The colour conversion is timed as part of "enhance", the frame's preparation.
    Pipeline.analyze, the training-mesh cache (export/landmarks.py) and the ARM parity check call this.
    """
    timings = timings if timings is not None else {}
    start = time.perf_counter()
    rgb = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB if frame.ndim == 2 else cv2.COLOR_BGR2RGB)
    timings["enhance"] = timings.get("enhance", 0.0) + (time.perf_counter() - start) * 1e3
    raw_rgb = None
    if raw is not None:
        raw_rgb = cv2.cvtColor(raw, cv2.COLOR_GRAY2RGB if raw.ndim == 2 else cv2.COLOR_BGR2RGB)
    return mesh.process(rgb, track=track, timings=timings, detect_also=raw_rgb)


def face_samples(frame: np.ndarray, faces: Sequence[Face], assume_face: bool = False,
                 timings: dict[str, float] | None = None) -> list[UpperFaceSample]:
    """One upper-face sample per face, in the faces' order; with no face and `assume_face` (the image is
    known to be one face, e.g. a dataset crop), the whole image as one. timings gets "align" and "features"."""
    if timings is not None:
        timings["align"] = timings["features"] = 0.0
    if not faces:
        return [sample_or_whole(frame, None, timings)] if assume_face else []
    return [sample_or_whole(frame, face.landmarks, timings) for face in faces]


class Pipeline:
    """Loads every model once; `analyze` is then cheap and re-entrant per instance (not thread-safe)."""

    def __init__(
        self,
        model: Path | str = DEFAULT_SIDECAR,
        backend: str = DEFAULT_BACKEND,
        threads: int | None = None,
        max_faces: int = 6,
        precision: str = "int8",
        enhancer: Enhancer | Path | str | None = DEFAULT_ENHANCER,
        providers: Sequence[str] | None = None,
        light: LightConfig | None = None,
        classes: int = 7,
    ) -> None:
        self.light = light or LightConfig()
        """Thresholds of the day/night rule when `analyze` is left to decide (lowlight=None)."""
        threads = threads or default_threads()
        self.mesh = FaceMesh(threads=threads, max_faces=max_faces)
        try:
            self.expression = ExpressionModel(model, backend=backend, threads=threads, precision=precision, providers=providers,
                                              classes=classes)
        except Exception:
            self.mesh.close()
            raise
        # The night branch: our learned enhancer from its sidecar, or the classical correction when that
        # file is missing/corrupt (logged once by load_enhancer); an Enhancer object is used as given.
        self._owns_enhancer = not hasattr(enhancer, "enhance")
        self.enhancer: Enhancer = (
            load_enhancer(enhancer, backend=backend, threads=threads) if self._owns_enhancer else enhancer  # type: ignore[arg-type]
        )

    @classmethod
    def from_config(cls, vision: Any, light: LightConfig | None = None) -> "Pipeline":
        """Build from a VisionConfig-like object (model, backend, threads, max_faces, classes) and the [light] section."""
        return cls(model=vision.model_path, backend=vision.backend, threads=vision.threads, max_faces=vision.max_faces, light=light,
                   classes=vision.classes)

    def analyze(
        self,
        frame: np.ndarray,
        lowlight: bool | None = False,
        track: bool = False,
        assume_face: bool = False,
        classes: int | None = None,
    ) -> FrameResult:
        """Faces and expressions in one BGR (or gray) frame.

        lowlight: True = night branch, False = day, None = decide from the frame's brightness with the
        one day/night rule (edge.hw.light.frame_is_night, `self.light`'s thresholds).
        track: reuse the previous frame's landmarks (video); False for unrelated photos.
        assume_face: the image is known to be one face (dataset crops) — never return no face.
        classes: the class set to answer in (7 or 5; the offload server takes the client's); None = the pipeline's own.
        """
        timings: dict[str, float] = {}
        start = time.perf_counter()
        raw = frame
        frame, night, level = day_or_night(frame, lowlight, self.enhancer, self.light)
        timings["enhance"] = (time.perf_counter() - start) * 1e3
        faces = find_faces(self.mesh, frame, track=track, raw=raw if night else None, timings=timings)
        samples = face_samples(frame, faces, assume_face, timings)

        start = time.perf_counter()
        expressions = self.expression.predict(samples, classes)
        timings["classify"] = (time.perf_counter() - start) * 1e3
        threshold = self.expression.unsure_threshold if classes is None else self.expression.threshold(classes)  # of the class set answered in

        h, w = frame.shape[:2]
        results = []
        for i, expr in enumerate(expressions):
            face = faces[i] if i < len(faces) else None
            box = face.box_in(w, h) if face is not None else (0, 0, w, h)
            noise = noise_level(samples[i].upper, step=1)  # how readable the upper face is, at the model's own scale
            unsure, readable = reading(expr.confidence, noise, threshold, self.light)
            results.append(
                FaceResult(
                    box=box,
                    label=expr.label,
                    confidence=expr.confidence,
                    unsure=unsure,
                    scores=expr.scores,
                    position=position_of(face, w, h),
                    fallback=face is None or face.fallback,
                    aligned=face is not None,
                    track_id=face.track_id if face is not None else 0,
                    noise=noise,
                    readable=readable,
                    unsure_threshold=threshold,
                )
            )
        noise = noise_level(raw) if not results else 0.0  # only "no face" needs to know whether a face could be seen
        timings["total"] = sum(timings[stage] for stage in STAGES if stage in timings)  # detect_* are parts of detect
        return FrameResult(faces=tuple(results), lowlight=night, timings_ms=timings, brightness=level, noise=noise)

    def take_notice(self) -> str | None:
        """Nothing to tell the wearer about the pipeline itself (the offloading one has; edge.parts.Analyser)."""
        return None

    def close(self) -> None:
        self.mesh.close()
        self.expression.close()
        if self._owns_enhancer:
            self.enhancer.close()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
