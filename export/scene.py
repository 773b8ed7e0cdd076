"""`python -m export scene`: how often the glasses find the main face at 0.5–4 m (issue #16, item 5).

Real photos of people (default ../shared/data/faces) are rendered into camera frames as if the main
person stood at a given distance, then run through the device pipeline (`edge.pipeline.Pipeline`,
so whatever detector is current is what is measured); the report is the main face's found rate per
distance and condition (day, masked, dark, dark_masked).

Ground truth. Each photo goes once through the pipeline's FaceMesh at full resolution; the *main
face* is the largest non-fallback face found (box area). Photos with no face, with a main face under
MIN_FACE_PX wide (too small to upscale honestly) and the DICM dim scenes (`dicm_*`: their faces are
the dark case, not a source) are skipped.

Assumption: the face width is the distance between mesh landmarks 234 and 454 (cheek to cheek),
FACE_WIDTH_M = 0.14 m on an adult.

Camera model (also written into the JSON output): a pinhole with a horizontal field of view of 66°
(Raspberry Pi Camera Module 3 class), frame at the glasses' camera.width × camera.height by default
(1280×960), focal length f = (W/2)/tan(33°)
pixels, so a face at distance d is f·0.14/d pixels wide (640 px: 138 px at 0.5 m, 69 px at 1 m,
17 px at 4 m). The whole photo is scaled (INTER_AREA down, bilinear up) so the main face has that
width, and a W×H frame is cut with the main face's box centre at a seeded position in the central
60 % of the frame; what the photo does not cover is filled with BORDER_REPLICATE (a reflection
would add mirrored faces). Then the camera: lens blur (Gaussian, sigma 0.7 px at the frame's scale),
sensor noise and 8-bit quantisation (export.darken.render_dark: linear light, Poisson shot noise on
a 4000 e- full well, 3 e- read noise; light 1.0 by day, 0.06 — the project's dark test level — in
the dark), then JPEG quality 85.

Masked: a mask from export.masks (random_style, apply_mask) is drawn on the full-resolution photo's
main face before scaling, a different seeded style per photo, distance and repeat.

Found: the main face counts as found when some non-fallback face's box centre lies inside the main
face's expected box (its mesh box, scaled and shifted with the photo) and that face's width is
within 0.5×–2× of the expected width. Frames go to `Pipeline.analyze(frame, lowlight=None)`: the
device decides day or night from the frame as it would without a light sensor.

Every (photo, distance, repeat) has its own seed, shared by the four conditions: a day frame and
its masked or dark twin have the same placement.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from edge.config import CameraConfig
from edge.errors import ImageError

_LOGGER = logging.getLogger(__name__)

SHARED_FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
CHEEK_LEFT, CHEEK_RIGHT = 234, 454
"""Face-mesh points at the cheekbones: their distance is the face width."""
FACE_WIDTH_M = 0.14
"""Adult cheek-to-cheek (234→454) width assumed for every main face."""
MIN_FACE_PX = 60.0
"""Main faces narrower than this in the photo are not upscaled into near frames: skipped."""
DISTANCES_M = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
CONDITIONS = ("day", "masked", "dark", "dark_masked")
CENTRAL = 0.6
"""The main face's centre is placed within this central fraction of the frame (each axis)."""
MIN_RATIO, MAX_RATIO = 0.5, 2.0
"""A found face's width must be within these multiples of the expected width."""


@dataclass(frozen=True)
class Camera:
    """The glasses' camera as the renderer models it (see the module docstring)."""

    width: int = CameraConfig.width
    height: int = CameraConfig.height
    hfov_deg: float = 66.0
    face_width_m: float = FACE_WIDTH_M
    blur_sigma: float = 0.7
    """Lens blur, Gaussian sigma in frame pixels."""
    jpeg_quality: int = 85
    dark_light: float = 0.06
    """Fraction of the original light in the dark conditions (export.darken)."""

    @property
    def focal_px(self) -> float:
        return (self.width / 2) / math.tan(math.radians(self.hfov_deg / 2))

    def face_px(self, distance_m: float) -> float:
        """Width in frame pixels of a FACE_WIDTH_M face at `distance_m`."""
        return self.focal_px * self.face_width_m / distance_m

    def to_json(self) -> dict[str, Any]:
        from export.darken import FULL_WELL_E, READ_NOISE_E

        return {
            **asdict(self),
            "focal_px": round(self.focal_px, 2),
            "model": "pinhole; face width = landmarks 234-454 = face_width_m; photo scaled (INTER_AREA down, linear up), "
                     "BORDER_REPLICATE fill, Gaussian lens blur, render_dark sensor (light 1 day / dark_light dark), JPEG",
            "full_well_e": FULL_WELL_E,
            "read_noise_e": READ_NOISE_E,
            "face_px": {f"{d:g}": round(self.face_px(d), 1) for d in DISTANCES_M},
        }


Box = tuple[float, float, float, float]
"""(x, y, w, h) in frame pixels."""


def face_width_px(landmarks: np.ndarray) -> float:
    """Cheek-to-cheek distance (mesh points 234 and 454) in the landmarks' pixels."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return float(np.hypot(*(lm[CHEEK_RIGHT, :2] - lm[CHEEK_LEFT, :2])))


def mesh_box(landmarks: np.ndarray) -> Box:
    """(x, y, w, h) around the landmarks (NaN rows ignored): the same box the pipeline reports."""
    xy = np.asarray(landmarks, dtype=np.float64)[:, :2]
    x0, y0 = np.nanmin(xy, axis=0)
    x1, y1 = np.nanmax(xy, axis=0)
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def found(expected: Box, boxes: Sequence[Sequence[float]]) -> bool:
    """Whether one of `boxes` (x, y, w, h) is the expected face: its centre inside `expected` and its
    width within MIN_RATIO..MAX_RATIO of the expected width."""
    ex, ey, ew, eh = expected
    for x, y, w, h in boxes:
        cx, cy = x + w / 2, y + h / 2
        if ex <= cx <= ex + ew and ey <= cy <= ey + eh and MIN_RATIO * ew <= w <= MAX_RATIO * ew:
            return True
    return False


def render_frame(
    photo_bgr: np.ndarray,
    main_face_landmarks: np.ndarray,
    distance_m: float,
    camera: Camera,
    rng: np.random.Generator,
    masked: bool = False,
    dark: bool = False,
) -> tuple[np.ndarray, Box]:
    """(uint8 BGR frame of camera.height×camera.width, the main face's expected box in it).

    The photo is scaled so the main face (landmarks in photo pixels) is camera.face_px(distance_m)
    wide cheek to cheek, placed at a position drawn from `rng` and passed through the camera model.
    The rng is split into independent streams first, so the placement does not depend on `masked`
    or `dark`: the same seed gives the same scene in every condition.
    """
    if distance_m <= 0:
        raise ValueError(f"distance must be positive, got {distance_m}")
    if photo_bgr.dtype != np.uint8 or photo_bgr.ndim != 3 or photo_bgr.shape[2] != 3:
        raise ImageError(f"render_frame needs a uint8 BGR photo, got {photo_bgr.dtype} {photo_bgr.shape}")
    from export.darken import render_dark

    place_rng, mask_rng, sensor_rng = (np.random.default_rng(int(s)) for s in rng.integers(0, 2**63, size=3))
    W, H = camera.width, camera.height
    landmarks = np.asarray(main_face_landmarks, dtype=np.float32)
    cheek = face_width_px(landmarks)
    if not cheek > 1.0:
        raise ImageError(f"main face is {cheek:.1f} px wide cheek to cheek: not a usable face")
    scale = camera.face_px(distance_m) / cheek
    centre_x = place_rng.uniform((1 - CENTRAL) / 2 * W, (1 + CENTRAL) / 2 * W)
    centre_y = place_rng.uniform((1 - CENTRAL) / 2 * H, (1 + CENTRAL) / 2 * H)

    image = photo_bgr
    if masked:
        from export.masks import apply_mask, random_style

        image = apply_mask(photo_bgr, landmarks, random_style(mask_rng), mask_rng)

    bx, by, bw, bh = mesh_box(landmarks)
    if scale < 1.0:
        # Area-average down first (no aliasing); the frame is then an exact whole-pixel shift of it.
        ph, pw = image.shape[:2]
        size = (max(1, round(pw * scale)), max(1, round(ph * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        sx, sy = size[0] / pw, size[1] / ph
        # cv2.resize maps pixel centres: x' = (x + 0.5)·s − 0.5
        bx, by, bw, bh = (bx + 0.5) * sx - 0.5, (by + 0.5) * sy - 0.5, bw * sx, bh * sy
        tx, ty = round(centre_x - (bx + bw / 2)), round(centre_y - (by + bh / 2))
        matrix = np.float32([[1, 0, tx], [0, 1, ty]])
        interpolation = cv2.INTER_NEAREST
    else:
        # Bilinear up, computed only for the frame's pixels (the whole upscaled photo can be huge).
        sx = sy = scale
        bx, by, bw, bh = bx * sx, by * sy, bw * sx, bh * sy
        tx, ty = centre_x - (bx + bw / 2), centre_y - (by + bh / 2)
        matrix = np.float32([[sx, 0, tx], [0, sy, ty]])
        interpolation = cv2.INTER_LINEAR
    frame = cv2.warpAffine(image, matrix, (W, H), flags=interpolation, borderMode=cv2.BORDER_REPLICATE)
    expected = (bx + tx, by + ty, bw, bh)

    if camera.blur_sigma > 0:
        frame = cv2.GaussianBlur(frame, (0, 0), camera.blur_sigma)
    frame = render_dark(frame, camera.dark_light if dark else 1.0, sensor_rng)
    ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, camera.jpeg_quality])
    if not ok:
        raise ImageError("OpenCV could not JPEG-encode a rendered frame")
    frame = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    return frame, expected


@dataclass
class Source:
    """One usable photo and its main face (ground truth, detected once per run)."""

    name: str
    image: np.ndarray
    landmarks: np.ndarray
    face_px: float

    def to_json(self) -> dict[str, Any]:
        h, w = self.image.shape[:2]
        x, y, bw, bh = mesh_box(self.landmarks)
        return {"name": self.name, "size": [w, h], "face_px": round(self.face_px, 1),
                "box": [round(x), round(y), round(bw), round(bh)]}


def photo_paths(folder: Path) -> list[Path]:
    """The photos in `folder` (sorted), without the DICM dim scenes."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: no such photo folder; pass --photos DIR with photos of people "
                         f"(the project's are in ../shared/data/faces next to the repository)")
    paths = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES and not p.name.startswith("dicm_"))
    if not paths:
        raise ImageError(f"{folder}: no .jpg/.png photos in it; pass --photos DIR with photos of people")
    return paths


def main_faces(paths: Sequence[Path], min_face_px: float = MIN_FACE_PX) -> tuple[list[Source], list[dict[str, str]]]:
    """(usable sources, skipped [{name, reason}]): each photo through FaceMesh once, at full resolution."""
    from edge.images import read
    from edge.vision.faces import FaceMesh

    sources, skipped = [], []
    with FaceMesh(max_faces=64) as mesh:  # the ground truth must see every face, not the device's first few
        for path in paths:
            image = read(path)
            faces = [f for f in mesh.process(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), track=False, allow_fallback=False)
                     if not f.fallback]
            if not faces:
                skipped.append({"name": path.name, "reason": "no face found at full resolution"})
                continue
            main = max(faces, key=lambda f: f.box[2] * f.box[3])
            width = face_width_px(main.landmarks)
            if width < min_face_px:
                skipped.append({"name": path.name, "reason": f"main face {width:.0f} px wide (< {min_face_px:g})"})
                continue
            sources.append(Source(path.name, image, np.asarray(main.landmarks, np.float32), width))
    return sources, skipped


SAME_ANSWER_REFERENCE_M = 0.75
"""Distance whose answer the others are compared with ("the same answer at 2 m as at 0.75 m"):
among frames where the main face was found at both, the share where the glasses would say the same
words of it (the label, or "not sure")."""


def _seed(seed: int, photo: int, distance_m: float, repeat: int) -> np.random.Generator:
    return np.random.default_rng([seed, photo, int(round(distance_m * 1000)), repeat])


def measure(
    pipeline: Any,
    sources: Sequence[Source],
    camera: Camera,
    distances: Sequence[float],
    conditions: Sequence[str],
    repeats: int,
    seed: int = 0,
    save_frames: Path | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """{condition: {distance: {found, n, faces_per_frame, ms, wall_ms, lowlight}}} through `pipeline.analyze`.

    ms is the mean of FrameResult.timings_ms["total"]; wall_ms the mean wall-clock time of the call
    (a check on the stage sum); lowlight the share of frames the pipeline sent down the night branch."""
    rates: dict[str, dict[str, dict[str, float]]] = {}
    for condition in conditions:
        masked, dark = "masked" in condition, condition.startswith("dark")
        rates[condition] = {}
        spoken: dict[float, dict[tuple[int, int], str]] = {}  # distance → (photo, repeat) → what is said of the main face
        for distance in distances:
            hits, faces, ms, wall, night, n = 0, 0, [], [], 0, 0
            spoken[distance] = {}
            for i, source in enumerate(sources):
                for r in range(repeats):
                    frame, expected = render_frame(source.image, source.landmarks, distance, camera,
                                                   _seed(seed, i, distance, r), masked=masked, dark=dark)
                    t0 = time.perf_counter()
                    result = pipeline.analyze(frame, lowlight=None)
                    wall.append((time.perf_counter() - t0) * 1e3)
                    boxes = [f.box for f in result.faces if not f.fallback]
                    hit = found(expected, boxes)
                    hits += hit
                    if hit:
                        main = next(f for f in result.faces if not f.fallback and found(expected, [f.box]))
                        spoken[distance][(i, r)] = "not sure" if main.unsure else main.label
                    faces += len(boxes)
                    ms.append(float(result.timings_ms.get("total", 0.0)))
                    night += bool(result.lowlight)
                    n += 1
                    if save_frames is not None:
                        name = f"{condition}_{distance:g}m_{Path(source.name).stem}_r{r}_{'found' if hit else 'missed'}.jpg"
                        cv2.imwrite(str(save_frames / name), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
            rates[condition][f"{distance:g}"] = {
                "found": round(hits / n, 4) if n else float("nan"),
                "n": n,
                "faces_per_frame": round(faces / n, 3) if n else float("nan"),
                "ms": round(float(np.mean(ms)), 1) if ms else float("nan"),
                "wall_ms": round(float(np.mean(wall)), 1) if wall else float("nan"),
                "lowlight": round(night / n, 3) if n else float("nan"),
            }
            _LOGGER.info("%s %gm: found %d/%d", condition, distance, hits, n)
        reference = spoken.get(SAME_ANSWER_REFERENCE_M)
        for distance in distances:
            if reference is None:
                break
            pairs = [(reference[k], v) for k, v in spoken[distance].items() if k in reference]
            rates[condition][f"{distance:g}"]["same_answer_as_0.75m"] = (
                round(sum(a == b for a, b in pairs) / len(pairs), 4) if pairs else float("nan"))
    return rates


def table(rates: dict[str, dict[str, dict[str, float]]]) -> str:
    """Rows = distance; found % (n) per condition, then faces per frame and ms per frame."""
    conditions = list(rates)
    distances = list(next(iter(rates.values()), {}))
    lines = ["found % of the main face (n frames)",
             "distance  " + "".join(f"{c:>16s}" for c in conditions)]
    for d in distances:
        cells = "".join(f"{100 * rates[c][d]['found']:>9.0f} % ({rates[c][d]['n']:>3d})" for c in conditions)
        lines.append(f"{d + ' m':>8s}  {cells}")
    lines += ["", "faces per frame / ms per frame (timings total) / ms wall-clock",
              "distance  " + "".join(f"{c:>22s}" for c in conditions)]
    for d in distances:
        cells = "".join(f"{rates[c][d]['faces_per_frame']:>8.2f} /{rates[c][d]['ms']:>6.1f} /{rates[c][d]['wall_ms']:>6.1f}"
                        for c in conditions)
        lines.append(f"{d + ' m':>8s}  {cells}")
    return "\n".join(lines)


def emit(out: dict[str, Any], path: Path | None, as_json: bool) -> None:
    """A measuring command's results: written whole to `path` (if given), and printed as one JSON line
    with --json (the caller prints its table otherwise). Shared by `export scene` and `export distance`."""
    from edge.files import write_atomic

    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, (json.dumps(out, indent=1) + "\n").encode("utf-8"))
    if as_json:
        print(json.dumps(out))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--photos", type=Path, default=SHARED_FACES, help="folder of photos of people (default %(default)s)")
    parser.add_argument("--width", type=int, default=Camera.width, help="frame width in pixels (default %(default)s)")
    parser.add_argument("--height", type=int, default=Camera.height, help="frame height in pixels (default %(default)s)")
    parser.add_argument("--hfov", type=float, default=Camera.hfov_deg, help="horizontal field of view, degrees (default %(default)s)")
    parser.add_argument("--distances", type=float, nargs="+", default=list(DISTANCES_M), metavar="M",
                        help="distances in metres (default %(default)s)")
    parser.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=list(CONDITIONS))
    parser.add_argument("--repeats", type=int, default=2, help="frames per photo per distance, each its own placement and noise (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="only the first N usable photos")
    parser.add_argument("--max-faces", type=int, default=None, help="the pipeline's max_faces (default: the Pipeline's own)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON object to this file")
    parser.add_argument("--save-frames", type=Path, default=None, metavar="DIR", help="write every rendered frame as JPEG, to eyeball")


def main(args: argparse.Namespace) -> int:
    from edge.errors import ConfigError

    start = time.perf_counter()
    paths = photo_paths(args.photos)
    if args.width < 64 or args.height < 64:
        raise ConfigError(f"--width {args.width} --height {args.height}: a frame needs at least 64×64 pixels")
    if not 1.0 <= args.hfov < 180.0:
        raise ConfigError(f"--hfov {args.hfov}: must be within 1..180 degrees")
    if any(d <= 0 for d in args.distances):
        raise ConfigError(f"--distances {args.distances}: every distance must be positive (metres)")
    if args.repeats < 1:
        raise ConfigError(f"--repeats {args.repeats}: must be at least 1")
    camera = Camera(width=args.width, height=args.height, hfov_deg=args.hfov)
    sources, skipped = main_faces(paths)
    if args.limit:
        sources = sources[: args.limit]
    if not sources:
        raise ImageError(f"{args.photos}: no photo has a main face of at least {MIN_FACE_PX:g} px; pass --photos DIR with clearer photos")
    _LOGGER.info("%d photos with a main face, %d skipped (%s)", len(sources), len(skipped),
                 ", ".join(s["name"] for s in skipped) or "none")
    if args.save_frames is not None:
        args.save_frames.mkdir(parents=True, exist_ok=True)

    from edge.pipeline import Pipeline

    options = {"max_faces": args.max_faces} if args.max_faces else {}
    with Pipeline(threads=args.threads, **options) as pipeline:
        max_faces = pipeline.mesh.max_faces
        rates = measure(pipeline, sources, camera, args.distances, args.conditions, args.repeats, args.seed, args.save_frames)
    out = {
        "camera": camera.to_json(),
        "photos": [s.to_json() for s in sources],
        "skipped": skipped,
        "repeats": args.repeats,
        "seed": args.seed,
        "max_faces": max_faces,
        "rates": rates,
        "seconds": round(time.perf_counter() - start, 1),
    }
    emit(out, args.out, args.json)
    if not args.json:
        print(f"camera {camera.width}×{camera.height}, HFOV {camera.hfov_deg:g}°, f = {camera.focal_px:.1f} px; "
              f"{len(sources)} photos × {args.repeats} repeats; {out['seconds']} s")
        print(table(rates))
    return 0
