"""The low-light branch: our learned gain-map enhancer, with a classical gamma + CLAHE fallback.

The learned enhancer (models/enhancer.json, trained by `python -m export enhancer`) looks at a 64×64
thumbnail of the frame and predicts, on a coarse grid, a gain per colour channel and how much to
smooth; the gains are interpolated to full resolution and applied to the lightly smoothed frame. The
network never sees full resolution, so a 640×480 frame costs little more than a face crop. A dark
camera picture is, to first order, the bright one times a gain in gamma space (fewer photons,
same scene) plus shot noise, which is what the two maps undo.

The classical correction runs when the learned model is missing or refused: gamma lifts the shadows
where the eyes sit; CLAHE on luma restores local contrast without blowing out the highlights.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge.config import LightConfig
from edge.errors import ModelError
from edge.hw.light import frame_is_night
from edge.runtime import DEFAULT_BACKEND, Backend, open_model
from edge.vision.expression import MODELS_DIR, load_sidecar, verified_file

_LOGGER = logging.getLogger(__name__)

_CLAHE = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))

DEFAULT_ENHANCER = MODELS_DIR / "enhancer.json"
ENHANCER_VERSION = "gainmap-1"
"""The contract between the enhancer network and `apply_maps`: BGR 0..255 thumbnail (cv2 INTER_AREA)
in; 3 channel gains + one weight per SMOOTHING level out, bilinearly upsampled, applied as nested blends
towards ever smoother Gaussian blurs of the frame, then the gains. export/enhancer.py trains through the
same operations; a sidecar with another version is refused."""
SMOOTHING = ((5, 1.0), (9, 2.5))
"""(kernel size, sigma) of the Gaussian blur behind each smoothing weight, in the order of the maps."""
ENHANCER_KEYS = ("kind", "preprocessing", "inputs", "outputs", "files")


def brightness(frame: np.ndarray) -> float:
    """Mean luma of a frame, 0..255, from a sparse grid of about 3,000 pixels (cheap enough for every frame)."""
    step = max(1, int(np.sqrt(frame.shape[0] * frame.shape[1] / 3000)))
    sample = np.ascontiguousarray(frame[::step, ::step])
    gray = sample if sample.ndim == 2 else cv2.cvtColor(sample, cv2.COLOR_BGR2GRAY)
    return float(gray.mean())


_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def noise_level(frame: np.ndarray, step: int = 2) -> float:
    """Sensor-noise estimate in grey levels (Immerkær's Laplacian-difference estimator) on every other
    pixel of every other row: a camera's denoise and JPEG smooth the noise over neighbouring pixels,
    which the estimator would miss at full resolution. Daylight frames measure about 1–10, a camera at
    full gain with a few photo-electrons per pixel 12 and above (docs/detection.md). step=1: every
    pixel, for the 48×48 aligned face the model reads (its scale is the model's, not the camera's)."""
    gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    sub = np.ascontiguousarray(gray[::step, ::step], dtype=np.float32)
    if min(sub.shape) < 3:
        return 0.0
    residual = cv2.filter2D(sub, -1, _NOISE_KERNEL)[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) * np.abs(residual).mean() / 6)


class Enhancer(Protocol):
    """A night-branch correction: a uint8 BGR or gray frame in, a frame of the same shape out."""

    name: str

    def enhance(self, frame: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def day_or_night(
    frame: np.ndarray, lowlight: bool | None, enhancer: Enhancer | None = None, light: LightConfig | None = None
) -> tuple[np.ndarray, bool, float]:
    """(frame to analyse, night?, brightness): the pipeline's first stage, also applied to training faces.

    lowlight True/False forces the branch (the wearer loop's day/night switch decided); None decides
    from this frame's brightness with the one day/night rule (edge.hw.light.frame_is_night, the
    thresholds of `light`, default LightConfig()). enhancer: the night branch's correction (None: the
    classical one).
    """
    level = brightness(frame)
    night = frame_is_night(level, light) if lowlight is None else bool(lowlight)
    if not night:
        return frame, night, level
    return (enhance_classical(frame) if enhancer is None else enhancer.enhance(frame)), night, level


def _gamma_lut(mean_luma: float) -> np.ndarray:
    """A gamma that maps the frame's mean luma to about mid-grey (bounded so noise is not amplified wildly)."""
    target = 0.45
    mean = min(max(mean_luma / 255.0, 1e-3), 0.99)
    gamma = float(np.clip(np.log(target) / np.log(mean), 0.3, 1.0))
    return (np.linspace(0, 1, 256) ** gamma * 255).round().astype(np.uint8)


def enhance_classical(frame: np.ndarray) -> np.ndarray:
    """Gamma/CLAHE correction for a dark BGR or gray frame; returns a new frame of the same shape."""
    if frame.ndim == 2:
        lut = _gamma_lut(float(frame.mean()))
        return _CLAHE.apply(cv2.LUT(frame, lut))
    lab = cv2.cvtColor(frame, cv2.COLOR_BGR2LAB)
    luma = lab[:, :, 0]
    lab[:, :, 0] = _CLAHE.apply(cv2.LUT(luma, _gamma_lut(float(luma.mean()))))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


class ClassicalEnhancer:
    """`enhance_classical` behind the Enhancer interface (the fallback, and a comparison baseline)."""

    name = "classical"

    def enhance(self, frame: np.ndarray) -> np.ndarray:
        return enhance_classical(frame)

    def close(self) -> None:
        pass


def apply_maps(frame: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """Apply the network's coarse maps [3 + levels, h, w] (3 gains, then smoothing weights) to a uint8 BGR frame.

    out = gains · s_L, where s_0 = frame and s_k = s_{k-1} + w_k · (blur_k(frame) − s_{k-1}).
    """
    # OpenCV in place rather than numpy broadcasting: measured 2.4 ms vs 67 ms (p50) per 640×480 frame here.
    h, w = frame.shape[:2]
    maps = np.asarray(maps, dtype=np.float32)
    if not 3 < maps.shape[0] <= 3 + len(SMOOTHING):
        raise ModelError(f"enhancer maps have {maps.shape[0]} channels; expected 3 gains and 1..{len(SMOOTHING)} smoothing weights")
    x = frame.astype(np.float32)
    out = x
    for (ksize, sigma), weight_map in zip(SMOOTHING, maps[3:]):
        weight = cv2.resize(np.ascontiguousarray(weight_map), (w, h), interpolation=cv2.INTER_LINEAR)
        step = cv2.GaussianBlur(x, (ksize, ksize), sigma)
        cv2.subtract(step, out, dst=step)
        cv2.multiply(step, cv2.merge([weight, weight, weight]), dst=step)
        out = cv2.add(out, step)
    gains = cv2.resize(np.ascontiguousarray(maps[:3].transpose(1, 2, 0)), (w, h), interpolation=cv2.INTER_LINEAR)
    cv2.multiply(out, gains, dst=out)
    return cv2.convertScaleAbs(out)


class LearnedEnhancer:
    """Our gain-map enhancer from its sidecar, run through the device runtime (onnxruntime or TFLite)."""

    def __init__(self, sidecar: Path | str = DEFAULT_ENHANCER, backend: str = DEFAULT_BACKEND, threads: int = 1, precision: str = "fp32") -> None:
        self.sidecar = Path(sidecar)
        self.spec = load_sidecar(self.sidecar, required=ENHANCER_KEYS)
        if self.spec["kind"] != "lowlight-enhancer" or self.spec["preprocessing"] != ENHANCER_VERSION:
            raise ModelError(
                f"{self.sidecar} is a {self.spec['kind']!r} model with preprocessing {self.spec['preprocessing']!r}, but this "
                f"code applies 'lowlight-enhancer' {ENHANCER_VERSION!r}: install the enhancer that ships with this version, or re-export"
            )
        self.variant = f"{backend}-{precision}"
        self.path = verified_file(self.sidecar, self.spec, self.variant)
        entry = self.spec["files"][self.variant]
        name = self.spec["inputs"][0]["name"]
        self._model: Backend = open_model(self.path, backend, threads, tensor_names=[entry.get("tensors", {}).get(name, name)])
        _, _, self.height, self.width = (int(d) for d in self.spec["inputs"][0]["shape"])
        self._channels_last = entry.get("output_layout", "NCHW") == "NHWC"
        self.name = f"learned ({self.path.name}, {backend})"

    def maps(self, frame: np.ndarray) -> np.ndarray:
        """The coarse maps [4, h, w] for a uint8 BGR frame."""
        thumb = cv2.resize(frame, (self.width, self.height), interpolation=cv2.INTER_AREA)
        out = self._model.run([thumb.transpose(2, 0, 1)[None].astype(np.float32)])[0][0]
        return out.transpose(2, 0, 1) if self._channels_last else out

    def enhance(self, frame: np.ndarray) -> np.ndarray:
        if frame.ndim == 2:
            bgr = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
            return cv2.cvtColor(apply_maps(bgr, self.maps(bgr)), cv2.COLOR_BGR2GRAY)
        return apply_maps(frame, self.maps(frame))

    def close(self) -> None:
        self._model.close()


def load_enhancer(sidecar: Path | str | None = DEFAULT_ENHANCER, backend: str = DEFAULT_BACKEND, threads: int = 1) -> Enhancer:
    """The learned enhancer, or — when its sidecar/file is missing, corrupt or refused — the classical one.

    A broken enhancer must not silence the glasses at night: say so once in the log and carry on with
    the correction that needs no model file.
    """
    if sidecar is None:
        return ClassicalEnhancer()
    try:
        enhancer = LearnedEnhancer(sidecar, backend=backend, threads=threads)
    except ModelError as exc:
        _LOGGER.warning("night branch: learned enhancer unavailable (%s); using the classical gamma/CLAHE correction", exc)
        return ClassicalEnhancer()
    _LOGGER.info("night branch: %s", enhancer.name)
    return enhancer
