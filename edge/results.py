"""What the pipeline returns: plain dataclasses that turn into the `analyze --json` objects."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""FER2013 label order: every model's output and every dataset's labels use it."""

CLASS_SETS: dict[int, dict[str, tuple[str, ...]]] = {
    7: {name: (name,) for name in LABELS},
    5: {
        "angry_disgust": ("angry", "disgust"),
        "fear_surprise": ("fear", "surprise"),
        "happy": ("happy",),
        "sad": ("sad",),
        "neutral": ("neutral",),
    },
}
"""What the glasses report (vision.classes): each label and the FER2013 labels whose probabilities it sums.
Above the nose anger and disgust, fear and surprise look alike (the model confuses them), so the 5-class
set says only what the upper face can tell apart; the model itself always gives the 7 FER2013 scores."""


def labels_for(classes: int) -> tuple[str, ...]:
    """The labels of one class set, in its order: LABELS for 7."""
    return tuple(CLASS_SETS[classes])


def class_index(classes: int) -> tuple[int, ...]:
    """For each FER2013 label (LABELS order), the index of the label that holds it in the class set."""
    groups = list(CLASS_SETS[classes].values())
    return tuple(next(i for i, members in enumerate(groups) if name in members) for name in LABELS)


@dataclass(frozen=True)
class Position:
    """Where a face is, as a wearer would want it said."""

    clock: int
    """Clock direction seen from the wearer: 12 straight ahead, 9 hard left, 3 hard right."""
    distance_m: float
    """Rough distance from the eye spacing (adult inter-pupil distance, camera field of view)."""
    x: float
    """Horizontal centre of the face, 0 = left edge of the frame, 1 = right edge."""

    def to_json(self) -> dict[str, Any]:
        return {"clock": self.clock, "distance_m": round(self.distance_m, 2), "x": round(self.x, 3)}


@dataclass(frozen=True)
class FaceResult:
    """One face: where it is and what it looks like."""

    box: tuple[int, int, int, int]
    label: str
    confidence: float
    unsure: bool
    scores: dict[str, float]
    position: Position
    fallback: bool
    """True when no face was detected and the whole image was taken as one aligned face."""
    aligned: bool = True
    """False when not even the landmark model took the image as a face, so it was read whole and
    unaligned (only for images known to be one face: `analyze(assume_face=True)`, dataset crops)."""
    track_id: int = 0
    """The same number for the same person from frame to frame while the face is followed (video,
    continuous mode); 0 for a whole-image fallback."""
    noise: float = 0.0
    """Noise estimate (enhance.noise_level, every pixel) of the aligned 48×48 upper face the model read:
    how readable the face is, what `reading` decides "not sure" and "too dark" on."""
    readable: bool = True
    """False when the face is too noisy for any label to be right often enough (`reading`): then
    `unsure` too, and a frame with no readable face is "too dark"."""
    unsure_threshold: float = 0.0
    """The model's own "not sure" threshold (of the class set answered in) that `reading` raised with the
    noise to judge this face: what `fuse` judges a burst of readings of the face against."""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.track_id,
            "box": list(self.box),
            "label": self.label,
            "confidence": round(self.confidence, 4),
            "unsure": self.unsure,
            "scores": {k: round(v, 4) for k, v in self.scores.items()},
            "position": self.position.to_json(),
            "fallback": self.fallback,
            "aligned": self.aligned,
            "noise": round(self.noise, 2),
            "readable": self.readable,
        }


@dataclass(frozen=True)
class FrameResult:
    """Everything the pipeline found in one frame, with per-stage timings in milliseconds."""

    faces: tuple[FaceResult, ...]
    lowlight: bool
    timings_ms: dict[str, float] = field(default_factory=dict)
    brightness: float = 0.0
    """Mean luma of the frame, 0..255, before any enhancement."""
    noise: float = 0.0
    """Sensor-noise estimate of the frame before enhancement (enhance.noise_level), measured only
    when no face was found (0.0 otherwise): with `brightness`, what `too_dark` decides on."""

    def in_image(self, frame_size: tuple[int, int], image_size: tuple[int, int]) -> "FrameResult":
        """This result with its boxes taken from the (width, height) frame it was read from to the image's
        own pixels (a photo decoded at reduced scale, edge.images.decode_scaled); positions are fractions
        and ratios, the same at any scale."""
        if frame_size == image_size:
            return self
        (fw, fh), (iw, ih) = frame_size, image_size

        def box(b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
            x0, y0 = min(iw, round(b[0] * iw / fw)), min(ih, round(b[1] * ih / fh))
            x1, y1 = min(iw, round((b[0] + b[2]) * iw / fw)), min(ih, round((b[1] + b[3]) * ih / fh))
            return x0, y0, x1 - x0, y1 - y0

        return dataclasses.replace(self, faces=tuple(dataclasses.replace(f, box=box(f.box)) for f in self.faces))

    def to_json(self) -> dict[str, Any]:
        return {
            "faces": [f.to_json() for f in self.faces],
            "lowlight": self.lowlight,
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
        }


def too_dark(result: FrameResult, too_dark_luma: float, too_noisy: float) -> bool:
    """The one rule for "too dark": faces were found but none is readable (`reading`), or nothing was
    found and the frame is too dark (mean luma under `too_dark_luma`) or too noisy (noise_level over
    `too_noisy`, a camera that turned its gain all the way up) for a face in it to have been found
    (light.too_dark_luma / light.too_noisy) — rather than "no face"."""
    if result.faces:
        return not any(f.readable for f in result.faces)
    return result.brightness < too_dark_luma or result.noise > too_noisy


def reading(confidence: float, noise: float, unsure_threshold: float, light: Any) -> tuple[bool, bool]:
    """(unsure, readable) for one face: the one rule for "not sure" and "too dark" at every light level.

    The model's own "not sure" threshold (its sidecar's) holds up to `light.readable_noise`; above it the
    threshold rises by `light.unsure_per_noise` per grey level of noise, so that a spoken label stays right
    about as often in the dark as by day; above `light.unreadable_noise` no label is spoken ("too dark").
    The noise level is that of the face's box (FaceResult.noise); thresholds and provenance: LightConfig."""
    if noise > light.unreadable_noise:
        return True, False
    return confidence < threshold_at(noise, unsure_threshold, light), True


def threshold_at(noise: float, unsure_threshold: float, light: Any) -> float:
    """The confidence `reading` asks of a readable face at `noise`: the model's own threshold, raised above
    `light.readable_noise`."""
    return unsure_threshold + light.unsure_per_noise * max(0.0, noise - light.readable_noise)


FUSIONS = ("product", "mean")
"""How `fuse` combines a face's readings: "product" of the probabilities (the mean of their logarithms,
renormalised: a product of experts) or their plain "mean"."""


def fuse(faces: Sequence[FaceResult], light: Any, how: str = "product") -> FaceResult:
    """One reading of one face from its readings in a burst of frames (the same track, oldest first).

    The class probabilities are combined (`FUSIONS`), and the one readability rule (`reading`) judges the
    fused confidence at the readings' mean noise against the faces' own threshold (FaceResult.unsure_threshold)
    with `light`'s thresholds. Box, position and id are the newest reading's. One reading comes back as it was
    judged. The gain over one frame: docs/experiments/2026-12-04-burst.md."""
    if not faces:
        raise ValueError("fuse needs at least one reading")
    if how not in FUSIONS:
        raise ValueError(f"fusion {how!r}: choose one of {', '.join(FUSIONS)}")
    if len(faces) == 1:
        return faces[0]
    labels = list(faces[-1].scores)
    p = np.array([[f.scores.get(label, 0.0) for label in labels] for f in faces], dtype=np.float64)
    if how == "product":
        fused = np.exp(np.log(np.clip(p, 1e-6, 1.0)).mean(axis=0))
    else:
        fused = p.mean(axis=0)
    fused /= fused.sum()
    best = int(fused.argmax())
    noise = float(np.mean([f.noise for f in faces]))
    unsure, readable = reading(float(fused[best]), noise, faces[-1].unsure_threshold, light)
    return dataclasses.replace(faces[-1], scores={label: float(v) for label, v in zip(labels, fused)}, label=labels[best],
                               confidence=float(fused[best]), unsure=unsure, noise=noise, readable=readable)
