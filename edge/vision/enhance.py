"""The low-light branch. Until our learned enhancer ships, a classical correction: gamma + CLAHE.

Gamma lifts the shadows where the eyes sit; CLAHE on luma restores local contrast without blowing
out the highlights. Colour is kept by working on the L channel of Lab.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

_LOGGER = logging.getLogger(__name__)

_CLAHE = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
_warned = False

DARK_BRIGHTNESS = 50.0
"""Mean luma (0..255) below which `lowlight=None` (auto, no sensor) takes the night branch."""


def brightness(frame: np.ndarray) -> float:
    """Mean luma of a frame, 0..255, from a sparse grid of about 3,000 pixels (cheap enough for every frame)."""
    step = max(1, int(np.sqrt(frame.shape[0] * frame.shape[1] / 3000)))
    sample = np.ascontiguousarray(frame[::step, ::step])
    gray = sample if sample.ndim == 2 else cv2.cvtColor(sample, cv2.COLOR_BGR2GRAY)
    return float(gray.mean())


def day_or_night(frame: np.ndarray, lowlight: bool | None) -> tuple[np.ndarray, bool, float]:
    """(frame to analyse, night?, brightness): the pipeline's first stage, also applied to training faces.

    lowlight True/False forces the branch (the light sensor's decision); None decides from brightness.
    """
    level = brightness(frame)
    night = level < DARK_BRIGHTNESS if lowlight is None else bool(lowlight)
    return (enhance_classical(frame) if night else frame), night, level


def _gamma_lut(mean_luma: float) -> np.ndarray:
    """A gamma that maps the frame's mean luma to about mid-grey (bounded so noise is not amplified wildly)."""
    target = 0.45
    mean = min(max(mean_luma / 255.0, 1e-3), 0.99)
    gamma = float(np.clip(np.log(target) / np.log(mean), 0.3, 1.0))
    return (np.linspace(0, 1, 256) ** gamma * 255).round().astype(np.uint8)


def enhance_classical(frame: np.ndarray) -> np.ndarray:
    """Gamma/CLAHE correction for a dark BGR or gray frame; returns a new frame of the same shape."""
    global _warned
    if not _warned:
        _LOGGER.info("night branch: classical gamma/CLAHE correction (no learned enhancer installed)")
        _warned = True
    if frame.ndim == 2:
        lut = _gamma_lut(float(frame.mean()))
        return _CLAHE.apply(cv2.LUT(frame, lut))
    lab = cv2.cvtColor(frame, cv2.COLOR_BGR2LAB)
    luma = lab[:, :, 0]
    lab[:, :, 0] = _CLAHE.apply(cv2.LUT(luma, _gamma_lut(float(luma.mean()))))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)
