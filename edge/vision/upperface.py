"""The upper-face sample: one aligned frame for camera faces and training faces alike.

Every face, whether it comes from a 640×480 camera frame or a 48×48 FER2013 crop, is
similarity-aligned on its eye centres into the FER2013 48×48 geometry. The model therefore sees
camera faces the way it saw its training data. From that aligned face we take:

- the grayscale image (the image branch) and its upper part (brows, eyes, forehead, nose bridge);
- the upper-face landmarks (eyes, brows, forehead, nose bridge) normalised to their own bounding
  box (the published method's "infinity shape" normalisation, which removes face size and offset);
- a HOG descriptor around each of those landmarks (20×20 patch on the 2× aligned face, 2×2 cells
  of 18 orientation bins = 72 values) computed by OpenCV, plus the landmark's x, y: 74 per landmark.

The same frame must give the same features on the Pi as on the x86_64 machines that train and test
the model. OpenCV's ARM builds run some resizes through other fixed-point kernels: its 2× linear
resize and its fractional-ratio area resize differ from x86_64 by a grey level in a third of the
pixels, which moved HOG features by up to 0.4 and changed 3 % of the answers (tests/arm). So this
module uses only calls measured to give the same bytes on both under emulation — warpAffine and
remap on 8-bit images, area resize by a whole factor, BGR→grey, the HOG itself. The HOG patches are
sampled at each landmark's sub-pixel position (one remap), so a landmark that moves by a thousandth
of a pixel moves its features by as little, instead of jumping a whole 2× pixel.

The landmarks themselves are not bit-identical across machines: the face models' float kernels
(XNNPACK) accumulate in another order on ARM, about 1e-4 px apart on a 48-pixel face. warpAffine and
remap turn positions into 1/32-pixel fixed point, so such a difference still changed the aligned face
in 70 % of faces and the answer in 0.5 %. The eye centres and the aligned landmarks are therefore
rounded to a coarse grid (EYE_GRID, POINT_GRID) first: two machines then give the same bytes unless
a position sits within 1e-4 px of a grid boundary.

export/ imports this module to build training data: there is no second copy of this code.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from edge.vision.faces import MIN_PRESENCE, eye_centres  # eye_centres: the mesh's eye contours, re-exported for the pipeline

PREPROCESSING_VERSION = "upperface-3"
"""Bump when anything here changes what a model sees; sidecars carry it and the device checks it."""

SIZE = 48
"""Side of the aligned face in pixels (FER2013 geometry)."""

CANONICAL_EYES = np.array([[15.72, 18.29], [32.28, 18.29]], dtype=np.float32)
"""Image-left and image-right eye centres in the 48×48 frame: the mean over the 3,318 detected
FER2013 PublicTest faces (export/landmarks.py), levelled and centred so the frame is symmetric."""

EYE_GRID = 1 / 16
"""Eye centres are rounded to this fraction of an image pixel before the alignment is computed."""

POINT_GRID = 1 / 8
"""Landmarks in the aligned 48×48 frame are rounded to this fraction of a pixel (HOG tile centres
and x, y features). On 1,000 FER2013 faces with the measured ARM/x86 landmark noise added, the two
grids cut the mean score difference tenfold (1e-3 → 1e-4) and the changed answers from 4 to 0, at
the same accuracy."""


def snap(values: np.ndarray, step: float) -> np.ndarray:
    """`values` rounded to the nearest multiple of `step` (a power of two: exact in binary)."""
    return np.round(np.asarray(values, dtype=np.float64) / step) * step


UPPER_ROWS = 30
"""The upper-face crop keeps rows 0..29 of the aligned face: forehead, brows, eyes, nose bridge."""

HOG_SCALE = 2
PATCH = 20
_HOG = cv2.HOGDescriptor((PATCH, PATCH), (PATCH // 2, PATCH // 2), (PATCH // 2, PATCH // 2), (PATCH // 2, PATCH // 2), 18)
HOG_LEN = 72
FEATURES_PER_LANDMARK = HOG_LEN + 2

UPPER_LANDMARKS = np.array(
    [
        # subject's right eye (image left): corners, lids
        33, 160, 159, 158, 133, 153, 145, 144,
        # subject's left eye (image right)
        263, 387, 386, 385, 362, 380, 374, 373,
        # right brow, left brow (MediaPipe FACEMESH_*_EYEBROW)
        46, 52, 53, 55, 63, 65, 66, 70, 105, 107,
        276, 282, 283, 285, 293, 295, 296, 300, 334, 336,
        # forehead and nose bridge, midline and both sides
        10, 151, 9, 8, 168, 6, 197, 109, 338, 67, 297,
    ],
    dtype=np.int64,
)
"""Mesh indices of the upper-face subset, in a fixed order (the feature rows follow it)."""


@dataclass(frozen=True)
class UpperFaceSample:
    """What the expression model consumes for one face."""

    face: np.ndarray
    """uint8 [48, 48]: the aligned grayscale face."""
    features: np.ndarray
    """float32 [L, 74]: per upper-face landmark, 72 HOG values then normalised x, y."""
    landmarks: np.ndarray
    """float32 [L, 2]: the upper-face landmarks in the aligned 48×48 frame."""
    patches: np.ndarray | None = field(default=None, repr=False, compare=False)
    """uint8: the 2× tiles the HOG was computed on (landmark_patches layout), kept so the mirror
    image's tiles are these, mirrored, instead of resampled (the same bytes, for less work)."""

    @property
    def upper(self) -> np.ndarray:
        """uint8 [30, 48]: brows, eyes, forehead and nose bridge."""
        return self.face[:UPPER_ROWS]


def align_matrix(landmarks: np.ndarray) -> np.ndarray:
    """2×3 similarity transform taking image pixels to the canonical 48×48 frame.

    Two points define a similarity exactly: rotation levels the eyes, scale fixes their distance,
    translation puts them where FER2013 has them.
    """
    src = snap(eye_centres(landmarks), EYE_GRID)
    dst = CANONICAL_EYES
    sv, dv = src[1] - src[0], dst[1] - dst[0]
    scale = float(np.hypot(*dv) / max(np.hypot(*sv), 1e-6))
    angle = float(np.arctan2(dv[1], dv[0]) - np.arctan2(sv[1], sv[0]))
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    rot = np.array([[c, -s], [s, c]], dtype=np.float64)
    t = dst[0] - rot @ src[0]
    return np.hstack([rot, t[:, None]]).astype(np.float64)


def to_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[:, :, 0]
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def warp(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """uint8 48×48 grey face: dst(x, y) = image(matrix⁻¹ · (x, y)), bilinear, edges replicated.

    Only the part of the frame that lands in the 48×48 square is converted and filtered, so the cost
    does not grow with the camera resolution or the number of faces. Shrinking a large camera face
    first area-averages it by a whole factor k (to 1–2× the final size), so the 48×48 face looks like
    FER2013's (which were downsampled), not an aliased point sample. A whole factor on a crop trimmed
    to whole blocks takes OpenCV's exact integer path, which gives the same bytes on ARM and x86 (its
    fractional-ratio area resize and its 2× linear resize do not: OpenCV's ARM builds run them
    through other fixed-point kernels).
    """
    scale = min(float(np.hypot(matrix[0, 0], matrix[1, 0])), float(np.hypot(matrix[0, 1], matrix[1, 1])))
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0], [SIZE, 0], [0, SIZE], [SIZE, SIZE]], dtype=np.float64) @ inverse[:, :2].T + inverse[:, 2]
    h, w = image.shape[:2]
    k = max(1, math.ceil(0.5 / max(scale, 1e-6) - 1e-6))
    x0, y0 = np.clip(np.floor(corners.min(axis=0)).astype(int) - 2 * k, 0, [w - 1, h - 1])
    x1, y1 = np.clip(np.ceil(corners.max(axis=0)).astype(int) + 2 * k, [x0 + 1, y0 + 1], [w, h])
    if k > 1:
        x0, y0 = x0 - x0 % k, y0 - y0 % k  # blocks on the frame's own grid: the result does not depend on the crop
        blocks_x, blocks_y = (x1 - x0) // k, (y1 - y0) // k
        if blocks_x < 1 or blocks_y < 1:
            k = 1
        else:
            x1, y1 = x0 + blocks_x * k, y0 + blocks_y * k
    gray = to_gray(image[y0:y1, x0:x1])
    local = matrix.copy()
    local[:, 2] += matrix[:, :2] @ np.array([x0, y0], dtype=np.float64)
    if k > 1:
        gray = cv2.resize(gray, (gray.shape[1] // k, gray.shape[0] // k), interpolation=cv2.INTER_AREA)
        # block b covers crop pixels b·k … b·k + k − 1: p_crop = k · p_small + (k − 1) / 2
        to_crop = np.array([[k, 0, (k - 1) / 2], [0, k, (k - 1) / 2]], dtype=np.float64)
        local = local[:, :2] @ to_crop + np.hstack([np.zeros((2, 2)), local[:, 2:]])
    return cv2.warpAffine(gray, local, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def align(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(aligned uint8 48×48 gray face, all landmarks [N, 2] in that frame)."""
    matrix = align_matrix(landmarks)
    face = warp(image, matrix)
    points = snap(landmarks[:, :2] @ matrix[:, :2].T + matrix[:, 2], POINT_GRID)
    return face, points.astype(np.float32)


_TILE = PATCH + 2
"""A HOG window plus one pixel of context on each side, so the gradients at its edge are the face's."""
_OFFSETS = ((np.arange(_TILE) - (_TILE - 1) / 2) / HOG_SCALE).astype(np.float32)
"""Sample offsets of a tile in 48×48 face pixels around its landmark (step ½: the 2× face)."""


@lru_cache(maxsize=4)
def _grid(n: int) -> tuple[int, int, tuple[tuple[int, int], ...]]:
    """(rows, columns, top-left of the HOG window in each tile) for n tiles laid out row by row."""
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    return rows, cols, tuple(((k % cols) * _TILE + 1, (k // cols) * _TILE + 1) for k in range(n))


def landmark_patches(face: np.ndarray, points: np.ndarray) -> np.ndarray:
    """uint8 [n, 22, 22]: the 2× face around each landmark, sampled at its sub-pixel position."""
    return _tiles(_patch_grid(face, points), len(points))


def _patch_grid(face: np.ndarray, points: np.ndarray) -> np.ndarray:
    """All landmark tiles in one image (rows × columns of 22×22), made by one cv2.remap (bilinear, edges replicated)."""
    rows, cols, _ = _grid(len(points))
    pts = np.zeros((rows * cols, 2), dtype=np.float32)
    pts[: len(points)] = points
    pts = pts.reshape(rows, 1, cols, 1, 2)
    map_x = np.broadcast_to(pts[..., 0] + _OFFSETS[None, None, None, :], (rows, _TILE, cols, _TILE)).reshape(rows * _TILE, cols * _TILE)
    map_y = np.broadcast_to(pts[..., 1] + _OFFSETS[None, :, None, None], (rows, _TILE, cols, _TILE)).reshape(rows * _TILE, cols * _TILE)
    return cv2.remap(face, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _tiles(grid: np.ndarray, n: int) -> np.ndarray:
    rows, cols = grid.shape[0] // _TILE, grid.shape[1] // _TILE
    return grid.reshape(rows, _TILE, cols, _TILE).transpose(0, 2, 1, 3).reshape(rows * cols, _TILE, _TILE)[:n]


def _untiles(tiles: np.ndarray) -> np.ndarray:
    rows, cols, _ = _grid(len(tiles))
    full = np.zeros((rows * cols, _TILE, _TILE), dtype=tiles.dtype)
    full[: len(tiles)] = tiles
    return np.ascontiguousarray(full.reshape(rows, cols, _TILE, _TILE).transpose(0, 2, 1, 3).reshape(rows * _TILE, cols * _TILE))


def _features(grid: np.ndarray, upper: np.ndarray) -> np.ndarray:
    hog = _HOG.compute(grid, (PATCH // 2, PATCH // 2), (0, 0), _grid(len(upper))[2])
    lo, hi = upper.min(axis=0), upper.max(axis=0)
    shape = (upper - lo) / np.maximum(hi - lo, 1e-6)
    return np.concatenate([hog.reshape(len(upper), HOG_LEN), shape], axis=1).astype(np.float32)


def landmark_features(face: np.ndarray, points: np.ndarray) -> np.ndarray:
    """[L, 74] per upper-face landmark: OpenCV HOG on a 20×20 patch of the 2× face, then x, y.

    x, y are normalised to the upper-face box (min..max of the subset → 0..1), which removes the
    face's size and position and keeps only its shape.
    """
    upper = points[UPPER_LANDMARKS] if len(points) != len(UPPER_LANDMARKS) else points
    return _features(_patch_grid(face, upper), upper)


def sample(image: np.ndarray, landmarks: np.ndarray, timings: dict[str, float] | None = None) -> UpperFaceSample:
    """Aligned face + upper-face landmark features for one face given its mesh (image pixels).

    timings, when given, accumulates milliseconds under "align" and "features".
    """
    start = time.perf_counter()
    face, points = align(image, landmarks)
    upper = points[UPPER_LANDMARKS]
    mid = time.perf_counter()
    grid = _patch_grid(face, upper)
    features = _features(grid, upper)
    if timings is not None:
        timings["align"] = timings.get("align", 0.0) + (mid - start) * 1e3
        timings["features"] = timings.get("features", 0.0) + (time.perf_counter() - mid) * 1e3
    return UpperFaceSample(face=face, features=features, landmarks=upper, patches=grid)


CANONICAL_UPPER = np.array(
    [
        [12.2, 18.1], [13.9, 17.3], [15.3, 17.1], [16.7, 17.1], [19.4, 18.7], [17.2, 19.2], [15.9, 19.3], [14.5, 19.2],
        [35.9, 18.1], [34.1, 17.3], [32.7, 17.1], [31.3, 17.1], [28.6, 18.7], [30.8, 19.2], [32.1, 19.3], [33.5, 19.2],
        [10.2, 15.0], [13.7, 13.4], [11.6, 13.9], [20.5, 15.0], [10.8, 12.8], [16.6, 13.7], [16.3, 12.3], [9.3, 14.2],
        [13.2, 12.1], [20.0, 12.9], [37.9, 15.0], [34.2, 13.4], [36.4, 13.9], [27.3, 15.0], [37.2, 12.8], [31.3, 13.7],
        [31.6, 12.3], [38.8, 14.1], [34.8, 12.1], [27.8, 12.9], [23.9, 5.1], [23.9, 9.2], [23.9, 13.2], [23.9, 15.4],
        [23.9, 17.4], [23.9, 19.7], [23.9, 21.6], [19.0, 5.2], [29.0, 5.1], [14.8, 5.7], [33.2, 5.7],
    ],
    dtype=np.float32,
)
"""Mean aligned position of each upper-face landmark over detected FER2013 PublicTest faces."""


def whole_matrix(shape: tuple[int, ...]) -> np.ndarray:
    """2×3 transform taking the whole image onto the 48×48 square, pixel centres onto pixel centres."""
    h, w = shape[:2]
    sx, sy = SIZE / w, SIZE / h
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])


def sample_unaligned(image: np.ndarray) -> UpperFaceSample:
    """The whole image taken as an already aligned face (no usable mesh): resize and use the mean shape."""
    face = warp(image, whole_matrix(image.shape))
    return UpperFaceSample(face=face, features=landmark_features(face, CANONICAL_UPPER), landmarks=CANONICAL_UPPER.copy())


def sample_or_whole(image: np.ndarray, landmarks: np.ndarray | None, timings: dict[str, float] | None = None) -> UpperFaceSample:
    """The one rule for camera and training faces: align on the mesh when there is one, else take the whole image.

    Pipeline.analyze, the training data (export/dataset.py), the build's parity set and the ARM parity
    check all make their samples here. timings, as for `sample` (the whole image counts as "features").
    """
    if landmarks is not None:
        return sample(image, landmarks, timings)
    start = time.perf_counter()
    whole = sample_unaligned(image)
    if timings is not None:
        timings["features"] = timings.get("features", 0.0) + (time.perf_counter() - start) * 1e3
    return whole


def recorded_meshes(landmarks: np.ndarray, presence: np.ndarray) -> list[np.ndarray | None]:
    """Meshes recorded one per image with their face-presence probability (export/landmarks.py keeps the
    likeliest whatever its presence), as `sample_or_whole` takes them: float32 landmarks where the presence
    reaches MIN_PRESENCE, None (read the image whole) where it does not or nothing was found."""
    points = np.asarray(landmarks, dtype=np.float32)
    return [points[i] if presence[i] >= MIN_PRESENCE else None for i in range(len(points))]


def flip_sample(s: UpperFaceSample) -> UpperFaceSample:
    """The mirror image of a sample, with landmarks swapped to their mirror partners (augmentation, test-time flip)."""
    face = np.ascontiguousarray(s.face[:, ::-1])
    points = s.landmarks.copy()
    points[:, 0] = SIZE - 1 - points[:, 0]
    points = points[_mirror_order()]
    if s.patches is None or len(points) != len(UPPER_LANDMARKS):
        grid = _patch_grid(face, points)
    else:
        # the mirror face's tile at a mirrored landmark is the original tile, mirrored (offsets are symmetric)
        grid = _untiles(_tiles(s.patches, len(points))[_mirror_order()][:, :, ::-1])
    return UpperFaceSample(face=face, features=_features(grid, points), landmarks=points, patches=grid)


@lru_cache(maxsize=1)
def _mirror_order() -> np.ndarray:
    """For each upper-face landmark, the position of its mirror partner in UPPER_LANDMARKS."""
    pairs = {
        33: 263, 160: 387, 159: 386, 158: 385, 133: 362, 153: 380, 145: 374, 144: 373,
        46: 276, 52: 282, 53: 283, 55: 285, 63: 293, 65: 295, 66: 296, 70: 300, 105: 334, 107: 336,
        109: 338, 67: 297,
    }
    pairs.update({v: k for k, v in list(pairs.items())})
    index = {int(m): i for i, m in enumerate(UPPER_LANDMARKS)}
    return np.array([index[pairs.get(int(m), int(m))] for m in UPPER_LANDMARKS], dtype=np.int64)
