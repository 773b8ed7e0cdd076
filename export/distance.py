"""`python -m export distance`: expression accuracy against face size / distance (issue #16, items 2 and 5, reading).

`export scene` measures whether the glasses *find* a face at 0.5–4 m; this measures how well they
*read* it once found. Every FER2013 PublicTest face (and its masked twin) is degraded to what the
glasses' camera would deliver at each distance and read through the device pipeline exactly as
`export evaluate` reads the plain crops (`Pipeline.analyze(image, lowlight=False, assume_face=True)`,
via export.evaluate.predict, on the shipped int8 model).

Camera model (export.scene.Camera, also written into the JSON): a pinhole with a 66° horizontal
field of view and frame width W, f = (W/2)/tan(33°) px, so a 0.14 m wide face at d metres is
f·0.14/d px wide (W = 640: 138 px at 0.5 m, 69 px at 1 m, 34.5 px at 2 m, 17 px at 4 m; W = 1280
twice that).

Assumption: a FER2013 crop shows a face about FER_FACE_PX = 40 px wide, ~0.83 of the 48-px crop.
The crop therefore stands for a face at s = (f·0.14/d)/40 times FER2013's resolution. Checked on the
face mesh of the 3,371 PublicTest faces with presence ≥ 0.5 (the landmark cache `export mask`
builds): cheek to cheek (points 234–454, export.scene's face width) median 36.5 px (10–90 %:
28–42), mesh box 38.3 px, eye centres 17.4 px apart (0.14 m at a 63 mm eye spacing: 38.7 px). So
40 px is, if anything, generous by up to ~10 %: the real faces are a little smaller in the crop,
a camera face of a given width carries a little more than assumed, and each distance below is then
~5–10 % nearer than the one at which the glasses would see those pixels (conservative).

Degradation (`camera_crop`), per face and distance:
- s ≥ 1: the camera sees the face at least as sharply as FER2013 did. The 48×48 crop is used as is,
  with the same sensor noise as below (no extra blur: the crop already carries FER's own).
- s < 1: area-average (cv2.INTER_AREA) the crop to side = max(6, round(48·s)) px, lens blur
  (Gaussian, sigma 0.7 px at that scale, like export.scene), sensor noise (Gaussian, sigma 2 grey
  levels), rounded and clipped to 8 bits. The computation stays in float until that one rounding.
Noise is drawn from default_rng([seed, face index, side]): the same face delivered at the same size
gets the same pixels whatever (W, d) asked for it, so (W, d) pairs that deliver the same side (all
s ≥ 1 distances; 640 px at 2 m and 1280 px at 4 m) are one evaluation, shared, not re-run.

What the pipeline is given (`pipeline_image`, --resample). Default "none": the degraded crop at its
delivered size, not upsampled. Reading edge/vision: the landmark model cuts its 192×192 view from
the frame with one bilinear warpAffine around the detected face (edge.vision.faces.LandmarkModel),
and the reader cuts the aligned 48×48 sample from the frame with one bilinear warp (its whole-factor
area pre-shrink only starts when the face is over twice the aligned size; edge.vision.upperface.warp).
Both resample *frame pixels*; a face d metres away is side px of frame pixels. Handing them those
pixels lets each stage do the one resampling it does on the glasses, and is what `export evaluate`
does with the 48-px FER crops, so s ≥ 1 and s < 1 take the same path. Pre-upscaling instead
("linear4": cv2.INTER_LINEAR to min(4·side, 192) px) adds a resampling the glasses never do, and
for side ≥ 25 it pushes the reader into its 2× area pre-shrink: extra blur on top of the camera's.
The one stage neither option makes faithful is the detector, which on the glasses sees the whole
frame (how often it finds the face is export scene's measure); here, as in `export evaluate`, the
image is the face and a missed detection falls back to the whole image as the face's region
(assume_face), so accuracy here is "given the face was found". `--resample linear4` is kept to
show how much the choice moves the numbers.

Reported per condition, width and distance: face width in frame px, delivered side, accuracy,
macro-F1 (export.metrics.report), answered (the glasses speak a label, not "not sure"), accuracy
when answered and the aligned share (export.evaluate.split_accuracy), and "reads reliably up to":
the farthest measured distance d ≥ 0.75 m such that accuracy stays ≥ 0.9 × accuracy at 0.75 m at d
and every measured distance between 0.75 m and d (a dip past the bar ends the range even if a
farther distance scrapes back above it by chance). Each condition is also read once as the plain
crops, no camera at all (`export evaluate`'s input, read with lowlight off): the "FER crop as is"
row, which shows what the sensor noise alone costs at the near distances.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from edge.errors import ConfigError, EdgeError

_LOGGER = logging.getLogger(__name__)

SHARED_FER = Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013"
"""Same folder as export.dataset.SHARED_FER (not imported: that module pulls in the training stack)."""
DEFAULT_DATA = SHARED_FER / "fer2013_publictest.npz"
DEFAULT_MASKED = Path("cache") / "publictest_masked.npz"
"""The masked PublicTest set the Makefile builds (`python -m export mask --data ... --out` this)."""

CROP = 48
"""FER2013 crop side in pixels."""
FER_FACE_PX = 40.0
"""Assumed face width inside a FER2013 crop: ~0.83 of its 48 px."""
MIN_SIDE = 6
"""Smallest delivered crop side, px (below this there is no face left to read)."""
BLUR_SIGMA = 0.7
"""Lens blur, Gaussian sigma in delivered pixels (export.scene.Camera.blur_sigma)."""
NOISE_SIGMA = 2.0
"""Sensor noise, Gaussian sigma in grey levels."""
UPSCALE, MAX_SIDE = 4, 192
"""--resample linear4: INTER_LINEAR to min(UPSCALE·side, MAX_SIDE) px (MAX_SIDE = the mesh's view)."""
RESAMPLE = ("none", "linear4")
REFERENCE_M = 0.75
RELIABLE_SHARE = 0.9
WIDTHS = (640, 1280)
CONDITIONS = ("unmasked", "masked")


def scale_factor(distance_m: float, width: int, hfov_deg: float = 66.0) -> float:
    """s: the face's width in frame pixels at `distance_m` over FER_FACE_PX."""
    from export.scene import Camera

    if distance_m <= 0:
        raise ConfigError(f"distance {distance_m}: must be positive (metres)")
    return Camera(width=width, hfov_deg=hfov_deg).face_px(distance_m) / FER_FACE_PX


def delivered_side(s: float) -> int:
    """Side in px of the crop the camera delivers at scale s (CROP when s ≥ 1: used as is)."""
    return CROP if s >= 1.0 else max(MIN_SIDE, int(round(CROP * s)))


def face_rng(seed: int, index: int, side: int) -> np.random.Generator:
    """The noise stream of face `index` delivered at `side` px."""
    return np.random.default_rng([seed, index, side])


def camera_crop(crop: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    """uint8 [side, side] (grey) or [side, side, 3]: `crop` as the camera would deliver it at scale s."""
    crop = np.asarray(crop)
    if crop.dtype != np.uint8 or crop.ndim not in (2, 3) or crop.shape[:2] != (CROP, CROP):
        raise EdgeError(f"camera_crop needs a uint8 {CROP}×{CROP} FER2013-geometry crop, got {crop.dtype} {crop.shape}")
    image = crop.astype(np.float32)
    side = delivered_side(s)
    if s < 1.0:
        image = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
        image = cv2.GaussianBlur(image, (0, 0), BLUR_SIGMA, borderType=cv2.BORDER_REPLICATE)
    image = image + rng.normal(0.0, NOISE_SIGMA, image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def pipeline_image(small: np.ndarray, resample: str = "none") -> np.ndarray:
    """What Pipeline.analyze is given for a delivered crop (see the module docstring)."""
    if resample == "none" or small.shape[0] >= CROP:
        return small  # s ≥ 1 crops go in as is under either option
    if resample != "linear4":
        raise ConfigError(f"--resample {resample}: choose one of {', '.join(RESAMPLE)}")
    side = min(UPSCALE * small.shape[0], MAX_SIDE)
    return cv2.resize(small, (side, side), interpolation=cv2.INTER_LINEAR)


def degrade(crop: np.ndarray, distance_m: float, width: int, seed: int = 0, index: int = 0,
            resample: str = "none", hfov_deg: float = 66.0) -> np.ndarray:
    """The image Pipeline.analyze gets for face `index` of a set at `distance_m` with a `width`-px camera."""
    s = scale_factor(distance_m, width, hfov_deg)
    return pipeline_image(camera_crop(crop, s, face_rng(seed, index, delivered_side(s))), resample)


def reliable_up_to(accuracy: Mapping[float, float], reference: float = REFERENCE_M,
                   share: float = RELIABLE_SHARE) -> float | None:
    """Farthest distance (≥ reference) whose accuracy, and that of every measured distance between the
    reference and it, is ≥ share × accuracy at `reference`; None without a measurement at `reference`."""
    acc = {float(d): a for d, a in accuracy.items()}
    if reference not in acc or acc[reference] is None:
        return None
    bar = share * acc[reference]
    best = reference
    for d in sorted(d for d in acc if d > reference):
        if acc[d] is None or acc[d] < bar - 1e-9:  # on the bar counts (no float-rounding miss)
            break
        best = d
    return best


CLEAN = 0
"""measure()'s side for the FER2013 crops as they are (no camera at all): the reference row."""


def measure(pipeline: Any, x: np.ndarray, y: np.ndarray, sides: Sequence[int], seed: int, resample: str
            ) -> dict[int, dict[str, Any]]:
    """{side: metrics} for the faces `x` delivered at each side (CLEAN: untouched), read as export evaluate reads them."""
    from export.evaluate import predict
    from export.metrics import report

    out: dict[int, dict[str, Any]] = {}
    for side in sides:
        s = 1.0 if side >= CROP else side / CROP  # any s giving this side gives these pixels
        start = time.perf_counter()
        if side == CLEAN:
            images = list(x)
        else:
            images = [pipeline_image(camera_crop(face, s, face_rng(seed, i, side)), resample) for i, face in enumerate(x)]
        preds, extra = predict(pipeline, images, False, y)
        r = report(y, preds)
        out[side] = {
            "n": r["n"], "accuracy": r["accuracy"], "macro_f1": r["macro_f1"],
            "answered": extra["answered"], "accuracy_answered": extra["accuracy_answered"],
            "aligned": extra["aligned"], "detected": extra["detected"],
            "input_px": int(images[0].shape[0]) if images else 0,
            "seconds": round(time.perf_counter() - start, 1),
        }
        _LOGGER.info("side %s px: accuracy %.4f (%d faces, %.0f s)", side, r["accuracy"], r["n"], out[side]["seconds"])
    return out


def run(pipeline: Any, sets: Mapping[str, tuple[np.ndarray, np.ndarray]], distances: Sequence[float],
        widths: Sequence[int], seed: int = 0, resample: str = "none", hfov_deg: float = 66.0, clean: bool = True
        ) -> dict[str, Any]:
    """{condition: {width: {distance: row}}}, the reliable-reading distances and (clean) each condition's
    accuracy on the untouched crops, through `pipeline`."""
    from export.scene import Camera

    plan = {(w, d): delivered_side(scale_factor(d, w, hfov_deg)) for w in widths for d in distances}
    sides = sorted(set(plan.values()), reverse=True)
    results: dict[str, Any] = {}
    reliable: dict[str, dict[str, float | None]] = {}
    references: dict[str, dict[str, Any]] = {}
    for condition, (x, y) in sets.items():
        _LOGGER.info("%s: %d faces at %d delivered sizes %s", condition, len(x), len(sides), sides)
        per_side = measure(pipeline, x, y, sides + [CLEAN] * clean, seed, resample)
        if clean:
            references[condition] = per_side[CLEAN]
        results[condition] = {}
        reliable[condition] = {}
        for w in widths:
            camera = Camera(width=w, hfov_deg=hfov_deg)
            rows = {}
            for d in distances:
                side = plan[(w, d)]
                rows[f"{d:g}"] = {"distance_m": d, "face_px": round(camera.face_px(d), 1),
                                  "scale": round(scale_factor(d, w, hfov_deg), 3), "side_px": side, **per_side[side]}
            results[condition][str(w)] = rows
            reliable[condition][str(w)] = reliable_up_to({r["distance_m"]: r["accuracy"] for r in rows.values()})
    return {"results": results, "reliable_up_to": reliable, "clean_crops": references, "evaluated_sides": sides}


def table(results: Mapping[str, Mapping[str, Mapping[str, Mapping[str, Any]]]],
          reliable: Mapping[str, Mapping[str, float | None]], clean: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    def pct(v: float | None) -> str:
        return "     -" if v is None else f"{100 * v:5.1f}%"

    def cells(r: Mapping[str, Any]) -> str:
        return (f"{pct(r['accuracy']):>8s}  {r['macro_f1']:>8.3f}  {pct(r['answered']):>8s}  "
                f"{pct(r['accuracy_answered']):>12s}  {pct(r['aligned']):>7s}")

    lines = []
    for condition, by_width in results.items():
        for w, rows in by_width.items():
            up_to = reliable[condition][w]
            lines += [f"{condition}, {w} px wide frame: reads reliably up to "
                      + ("-" if up_to is None else f"{up_to:g} m") + f" (accuracy ≥ {RELIABLE_SHARE:g} × at {REFERENCE_M:g} m)",
                      "distance  face px  side px  input px  accuracy  macro-F1  answered  acc answered  aligned"]
            for r in rows.values():
                lines.append(f"{r['distance_m']:>6g} m  {r['face_px']:>7.1f}  {r['side_px']:>7d}  {r['input_px']:>8d}  {cells(r)}")
            if clean and condition in clean:
                lines.append(f"{'FER crop as is, no camera':>35s}  {cells(clean[condition])}")
            lines.append("")
    return "\n".join(lines).rstrip()


def plot(results: Mapping[str, Mapping[str, Mapping[str, Mapping[str, Any]]]], path: Path, title: str) -> None:
    from edge.plotting import matplotlib_or_refuse

    matplotlib_or_refuse("the distance plot")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    for condition, by_width in results.items():
        for w, rows in by_width.items():
            d = [r["distance_m"] for r in rows.values()]
            acc = [100 * r["accuracy"] for r in rows.values()]
            ax.plot(d, acc, marker="o", linestyle="-" if condition == "unmasked" else "--", label=f"{condition}, {w} px")
    ax.set_xlabel("distance (m)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from export.scene import DISTANCES_M

    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="FER2013 PublicTest npz (default %(default)s)")
    parser.add_argument("--masked-data", type=Path, default=DEFAULT_MASKED,
                        help="the masked set (default %(default)s; build it with `python -m export mask --data DATA --out %(default)s`)")
    parser.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=list(CONDITIONS))
    parser.add_argument("--distances", type=float, nargs="+", default=list(DISTANCES_M), metavar="M",
                        help=f"distances in metres (default %(default)s; {REFERENCE_M:g} is always added: the reference)")
    parser.add_argument("--width", type=int, nargs="+", default=list(WIDTHS), metavar="W", help="frame widths in px (default %(default)s)")
    parser.add_argument("--hfov", type=float, default=66.0, help="horizontal field of view, degrees (default %(default)s)")
    parser.add_argument("--resample", choices=RESAMPLE, default="none",
                        help="what the pipeline gets for a shrunk crop: its delivered pixels (none, default) or those "
                             "upscaled 4x bilinear to at most 192 px (linear4)")
    parser.add_argument("--seed", type=int, default=0, help="sensor-noise seed (default %(default)s)")
    parser.add_argument("--no-clean", action="store_true",
                        help="skip the reference read of the untouched crops (no noise, no blur): one evaluation less per condition")
    parser.add_argument("--limit", type=int, default=None, help="only the first N faces")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON object to this file")
    parser.add_argument("--plot", type=Path, default=None, help="write accuracy against distance as a PNG")


def main(args: argparse.Namespace) -> int:
    from edge.pipeline import Pipeline
    from edge.vision.expression import DEFAULT_SIDECAR
    from export.evaluate import load_npz
    from export.scene import Camera, emit

    start = time.perf_counter()
    if args.plot:
        from edge.plotting import matplotlib_or_refuse

        matplotlib_or_refuse("--plot")
    if any(d <= 0 for d in args.distances):
        raise ConfigError(f"--distances {args.distances}: every distance must be positive (metres)")
    if any(w < 64 for w in args.width):
        raise ConfigError(f"--width {args.width}: a frame needs at least 64 px")
    if not 1.0 <= args.hfov < 180.0:
        raise ConfigError(f"--hfov {args.hfov}: must be within 1..180 degrees")
    distances = sorted(set(args.distances) | {REFERENCE_M})
    widths = list(dict.fromkeys(args.width))
    sets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    masked_share = None
    for condition in args.conditions:
        path = args.data if condition == "unmasked" else args.masked_data
        if condition == "masked" and not path.is_file():
            raise EdgeError(f"{path}: no masked set; build it with `python -m export mask --data {args.data} --out {path}`")
        x, y = load_npz(path)
        if args.limit:
            x, y = x[: args.limit], y[: args.limit]
        if condition == "masked":
            with np.load(path) as data:
                if "masked" in data.files:  # written by export.cli_mask: which faces got a mask
                    masked_share = round(float(np.asarray(data["masked"])[: len(x)].mean()), 4)
        sets[condition] = (x, y)

    with Pipeline(model=DEFAULT_SIDECAR, threads=args.threads, max_faces=2) as pipeline:  # as export evaluate builds it
        measured = run(pipeline, sets, distances, widths, args.seed, args.resample, args.hfov, clean=not args.no_clean)
        model_file = pipeline.expression.path.name
    out = {
        "model": model_file,
        "data": {c: str(args.data if c == "unmasked" else args.masked_data) for c in sets},
        "n": {c: len(sets[c][1]) for c in sets},
        "masked_share": masked_share,
        "camera": {"hfov_deg": args.hfov, "face_width_m": Camera.face_width_m, "fer_face_px": FER_FACE_PX, "crop_px": CROP,
                   "focal_px": {str(w): round(Camera(width=w, hfov_deg=args.hfov).focal_px, 2) for w in widths},
                   "blur_sigma_px": BLUR_SIGMA, "noise_sigma": NOISE_SIGMA, "min_side_px": MIN_SIDE,
                   "resample": args.resample, "seed": args.seed},
        "reference_m": REFERENCE_M,
        "reliable_share": RELIABLE_SHARE,
        **measured,
        "seconds": round(time.perf_counter() - start, 1),
    }
    if args.plot:
        n = ", ".join(f"{c} n={k}" for c, k in out["n"].items())
        plot(out["results"], args.plot, f"{model_file} through the device pipeline; {n}; resample {args.resample}")
    emit(out, args.out, args.json)
    if not args.json:
        print(f"{model_file}: HFOV {args.hfov:g}°, FER face = {FER_FACE_PX:g} px of {CROP}; "
              + ", ".join(f"{c} n={k}" for c, k in out["n"].items()) + f"; resample {args.resample}; {out['seconds']} s")
        print(table(out["results"], out["reliable_up_to"], out["clean_crops"]))
    return 0
