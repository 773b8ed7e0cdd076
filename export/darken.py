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


MIDTONE = 0.18
"""Linear reflectance of the mid-tone (18 % grey) that auto-exposure brings back to its output level."""
CAMERA_READ_NOISE_E = 2.5
"""Read noise at the sensor, electrons rms (a small-pixel CMOS sensor at high analog gain)."""
EXPOSURE_CAP_E = 100.0
"""Electrons per mid-tone pixel at the longest exposure (1/30 s, the frame rate) at base gain: above this
level auto-exposure shortens the exposure, below it the exposure stays at the cap and the gain goes up."""
EXPOSURE_CAP_S = 1 / 30
HEAD_SPEED_PX_S = 6.0
"""Image motion of a face held still by a wearer, pixels per second at a 48 px face (about 1 deg/s of
head sway at ~6 px/deg): the blur length is this times the exposure time."""
DENOISE_H_PER_LOG2_GAIN = 5.0
"""ISP denoise strength (cv2.fastNlMeansDenoisingColored h and hColor) per doubling of the analog gain."""
JPEG_QUALITY = 85


def camera_parameters(electrons_midtone: float, read_noise: float = CAMERA_READ_NOISE_E) -> dict[str, float]:
    """What the camera model does at `electrons_midtone` (for the results JSON): exposure, gain, blur, denoise."""
    exposure = EXPOSURE_CAP_S * min(1.0, EXPOSURE_CAP_E / electrons_midtone)
    gain = max(1.0, EXPOSURE_CAP_E / electrons_midtone)
    return {
        "electrons_midtone": electrons_midtone, "read_noise_e": read_noise, "exposure_s": round(exposure, 5),
        "analog_gain": round(gain, 3), "motion_blur_px": round(HEAD_SPEED_PX_S * exposure, 3),
        "denoise_h": round(DENOISE_H_PER_LOG2_GAIN * float(np.log2(gain)), 3), "jpeg_quality": JPEG_QUALITY,
    }


def render_camera(
    image_bgr: np.ndarray,
    electrons_midtone: float,
    rng: np.random.Generator,
    *,
    read_noise: float = CAMERA_READ_NOISE_E,
    denoise: bool = True,
    blur: bool = True,
    jpeg: bool = True,
) -> np.ndarray:
    """uint8 BGR [H,W,3]: `image_bgr` (BGR, or grey [H,W] taken as a grey scene) as a colour camera with
    auto-exposure delivers it when a mid-tone (18 % grey) pixel collects `electrons_midtone` photo-electrons.

    - linear light: undo the 2.2 gamma; scale so linear 0.18 collects `electrons_midtone` e⁻;
    - exposure: 1/30 s × min(1, EXPOSURE_CAP_E / electrons); a head sway of HEAD_SPEED_PX_S blurs the
      linear light along a random direction over that time (a line kernel, only when it is ≥ 0.5 px);
    - shot noise: Poisson per pixel and colour channel (a Bayer sensor's channels are independent
      photosites, hence colour noise); read noise N(0, `read_noise`) e⁻ per pixel and channel;
    - analog gain / auto-exposure: the electrons are divided back by the same scale, so the mid-tone
      comes out at its daylight level and the noise is scaled up with it (gain = EXPOSURE_CAP_E /
      electrons below the cap); clip to 0..1, the 2.2 gamma again, 8 bits;
    - ISP denoise: cv2.fastNlMeansDenoisingColored with h = hColor = DENOISE_H_PER_LOG2_GAIN × log2(gain)
      (none at base gain); then JPEG at quality JPEG_QUALITY.
    Daylight-like levels (≥ 100 e⁻) differ from the input only by shot noise and JPEG.
    """
    import cv2

    if electrons_midtone <= 0:
        raise ValueError(f"electrons_midtone must be positive, got {electrons_midtone}")
    image = np.asarray(image_bgr)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    params = camera_parameters(electrons_midtone, read_noise)
    linear = (image.astype(np.float32) / 255.0) ** 2.2
    length = params["motion_blur_px"]
    if blur and length >= 0.5:
        size = int(np.ceil(length)) | 1
        kernel = np.zeros((size, size), np.float32)
        angle = rng.uniform(0.0, np.pi)
        t = np.linspace(-length / 2, length / 2, 4 * size)
        cols = np.clip(np.round(size // 2 + t * np.cos(angle)).astype(int), 0, size - 1)
        rows = np.clip(np.round(size // 2 + t * np.sin(angle)).astype(int), 0, size - 1)
        np.add.at(kernel, (rows, cols), 1.0)
        linear = cv2.filter2D(linear, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)
    scale = electrons_midtone / MIDTONE
    electrons = rng.poisson(linear * scale).astype(np.float32)
    electrons += rng.normal(0.0, read_noise, size=electrons.shape).astype(np.float32)
    encoded = np.clip(electrons / scale, 0.0, 1.0) ** (1 / 2.2)
    out = np.round(encoded * 255.0).astype(np.uint8)
    if denoise and params["denoise_h"] > 0:
        h = float(params["denoise_h"])
        out = cv2.fastNlMeansDenoisingColored(out, None, h, h, 3, 7)
    if jpeg:
        ok, encoded_jpeg = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ValueError("OpenCV could not JPEG-encode a rendered frame")
        out = cv2.imdecode(encoded_jpeg, cv2.IMREAD_COLOR)
    return out
