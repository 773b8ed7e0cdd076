"""Realistic dark renderings of face images (the low-light test set and, later, enhancer training data).

A camera in dim light collects few photons: scale the *linear* light (undo the sRGB-like 2.2 gamma)
to a fraction of the original, draw Poisson shot noise on the photo-electron count, add Gaussian
read noise, re-apply the gamma and quantise to 8 bits. No auto-exposure: the picture stays dark,
as the glasses' camera delivers it at night before any enhancement.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

_LOGGER = logging.getLogger(__name__)

FULL_WELL_E = 4000.0
"""Photo-electrons for a white pixel at full light (a small-pixel CMOS sensor)."""
READ_NOISE_E = 3.0


def render_dark(
    images: np.ndarray,
    light: float,
    rng: np.random.Generator,
    *,
    cast: np.ndarray | None = None,
    blur_sigma: float = 0.0,
    full_well: float = FULL_WELL_E,
    read_noise: float = READ_NOISE_E,
) -> np.ndarray:
    """uint8 images of any shape at `light` (0..1) of the original illumination, with sensor noise.

    Optional, for enhancer training: `cast` multiplies the linear light per channel (last axis, a
    coloured lamp), `blur_sigma` blurs the linear light of [H,W] / [H,W,C] images (defocus, shake).
    """
    if not 0.0 < light <= 1.0:
        raise ValueError(f"light must be in (0, 1], got {light}")
    linear = (images.astype(np.float32) / 255.0) ** 2.2
    if blur_sigma > 0:
        import cv2

        linear = cv2.GaussianBlur(linear, (0, 0), blur_sigma)
    if cast is not None:
        linear = np.clip(linear * np.asarray(cast, dtype=np.float32), 0.0, 1.0)
    electrons = rng.poisson(linear * light * full_well).astype(np.float32)
    electrons += rng.normal(0.0, read_noise, size=electrons.shape).astype(np.float32)
    encoded = np.clip(electrons / full_well, 0.0, 1.0) ** (1 / 2.2)
    return np.round(encoded * 255.0).astype(np.uint8)


def render_dark_random(image: np.ndarray, rng: np.random.Generator, light_range: tuple[float, float] = (0.02, 0.20)) -> np.ndarray:
    """One varied dark rendering for enhancer training: light drawn log-uniform in `light_range`,
    sensor gain (full well, read noise) varied, a colour cast on colour images, a blur one time in four."""
    lo, hi = light_range
    light = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    cast = None
    if image.ndim == 3:
        warm = rng.normal(0.0, 0.15)  # tungsten/sodium lamps: more red, less blue (BGR order)
        cast = np.exp(np.array([-warm, 0.0, warm]) + rng.normal(0.0, 0.05, 3))
    blur = float(rng.uniform(0.5, 1.3)) if rng.random() < 0.25 else 0.0
    return render_dark(
        image, light, rng, cast=cast, blur_sigma=blur,
        full_well=float(rng.uniform(2500.0, 8000.0)), read_noise=float(rng.uniform(1.5, 5.0)),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--light", type=float, default=0.06, help="fraction of the original light (default 6 %%)")
    parser.add_argument("--seed", type=int, default=6)


def main(args: argparse.Namespace) -> int:
    from export.evaluate import load_npz

    x, y = load_npz(args.data)
    dark = render_dark(x, args.light, np.random.default_rng(args.seed))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.stem + ".tmp.npz")
    np.savez_compressed(tmp, x=dark, y=y)
    tmp.replace(args.out)
    _LOGGER.info("%s at %.0f %% light: mean luma %.1f → %.1f → %s", args.data.name, 100 * args.light, x.mean(), dark.mean(), args.out)
    return 0
