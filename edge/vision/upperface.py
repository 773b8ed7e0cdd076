"""The upper-face sample: one aligned frame for camera faces and training faces alike.

Every face, whether it comes from a 640×480 camera frame or a 48×48 FER2013 crop, is
similarity-aligned on its eye centres into the FER2013 48×48 geometry. The model therefore sees
camera faces the way it saw its training data. From that aligned face we take:

- the grayscale image (the image branch) and its upper part (brows, eyes, forehead, nose bridge);
- the upper-face landmarks (eyes, brows, forehead, nose bridge) normalised to their own bounding
  box (the published method's "infinity shape" normalisation, which removes face size and offset);
- a HOG descriptor around each of those landmarks (20×20 patch on the 2× aligned face, 2×2 cells
  of 18 orientation bins = 72 values) computed by OpenCV, plus the landmark's x, y: 74 per landmark.

export/ imports this module to build training data: there is no second copy of this code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

PREPROCESSING_VERSION = "upperface-1"
"""Bump when anything here changes what a model sees; sidecars carry it and the device checks it."""

SIZE = 48
"""Side of the aligned face in pixels (FER2013 geometry)."""

CANONICAL_EYES = np.array([[15.72, 18.29], [32.28, 18.29]], dtype=np.float32)
"""Image-left and image-right eye centres in the 48×48 frame: the mean over the 3,318 detected
FER2013 PublicTest faces (export/landmarks.py), levelled and centred so the frame is symmetric."""

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

_EYE_RINGS = (
    np.array([33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246]),
    np.array([263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]),
)


@dataclass(frozen=True)
class UpperFaceSample:
    """What the expression model consumes for one face."""

    face: np.ndarray
    """uint8 [48, 48]: the aligned grayscale face."""
    features: np.ndarray
    """float32 [L, 74]: per upper-face landmark, 72 HOG values then normalised x, y."""
    landmarks: np.ndarray
    """float32 [L, 2]: the upper-face landmarks in the aligned 48×48 frame."""

    @property
    def upper(self) -> np.ndarray:
        """uint8 [30, 48]: brows, eyes, forehead and nose bridge."""
        return self.face[:UPPER_ROWS]


def eye_centres(landmarks: np.ndarray) -> np.ndarray:
    """[2, 2]: image-left and image-right eye centres from the eye-contour landmarks."""
    return np.stack([landmarks[ring, :2].mean(axis=0) for ring in _EYE_RINGS]).astype(np.float32)


def align_matrix(landmarks: np.ndarray) -> np.ndarray:
    """2×3 similarity transform taking image pixels to the canonical 48×48 frame.

    Two points define a similarity exactly: rotation levels the eyes, scale fixes their distance,
    translation puts them where FER2013 has them.
    """
    src = eye_centres(landmarks)
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


def align(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(aligned uint8 48×48 gray face, all landmarks [N, 2] in that frame).

    Only the part of the frame that lands in the 48×48 square is converted and filtered, so the cost
    does not grow with the camera resolution or the number of faces.
    """
    matrix = align_matrix(landmarks)
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0], [SIZE, 0], [0, SIZE], [SIZE, SIZE]], dtype=np.float64) @ inverse[:, :2].T + inverse[:, 2]
    h, w = image.shape[:2]
    x0, y0 = np.clip(np.floor(corners.min(axis=0)).astype(int) - 2, 0, [w - 1, h - 1])
    x1, y1 = np.clip(np.ceil(corners.max(axis=0)).astype(int) + 2, [x0 + 1, y0 + 1], [w, h])
    gray = to_gray(image[y0:y1, x0:x1])
    local = matrix.copy()
    local[:, 2] += matrix[:, :2] @ np.array([x0, y0], dtype=np.float64)
    if scale < 0.5:
        # Shrinking a large camera face: area-average it to twice the final size first, so the
        # 48×48 face looks like FER2013's (which were downsampled), not an aliased point sample.
        ch, cw = gray.shape
        nw, nh = max(1, round(cw * 2 * scale)), max(1, round(ch * 2 * scale))
        gray = cv2.resize(gray, (nw, nh), interpolation=cv2.INTER_AREA)
        sx, sy = nw / cw, nh / ch
        # pixel centres: p_crop = (p_small + 0.5) / s - 0.5
        to_crop = np.array([[1 / sx, 0, 0.5 / sx - 0.5], [0, 1 / sy, 0.5 / sy - 0.5]])
        local = local[:, :2] @ to_crop + np.hstack([np.zeros((2, 2)), local[:, 2:]])
    face = cv2.warpAffine(gray, local, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    points = landmarks[:, :2] @ matrix[:, :2].T + matrix[:, 2]
    return face, points.astype(np.float32)


def landmark_features(face: np.ndarray, points: np.ndarray) -> np.ndarray:
    """[L, 74] per upper-face landmark: OpenCV HOG on a 20×20 patch of the 2× face, then x, y.

    x, y are normalised to the upper-face box (min..max of the subset → 0..1), which removes the
    face's size and position and keeps only its shape.
    """
    upper = points[UPPER_LANDMARKS] if len(points) != len(UPPER_LANDMARKS) else points
    big = cv2.resize(face, (SIZE * HOG_SCALE, SIZE * HOG_SCALE), interpolation=cv2.INTER_LINEAR)
    top_left = np.clip(np.round(upper * HOG_SCALE - PATCH / 2), 0, SIZE * HOG_SCALE - PATCH).astype(int)
    hog = _HOG.compute(big, (PATCH // 2, PATCH // 2), (0, 0), [tuple(map(int, p)) for p in top_left])
    lo, hi = upper.min(axis=0), upper.max(axis=0)
    shape = (upper - lo) / np.maximum(hi - lo, 1e-6)
    return np.concatenate([hog.reshape(len(upper), HOG_LEN), shape], axis=1).astype(np.float32)


def sample(image: np.ndarray, landmarks: np.ndarray, timings: dict[str, float] | None = None) -> UpperFaceSample:
    """Aligned face + upper-face landmark features for one face given its mesh (image pixels).

    timings, when given, accumulates milliseconds under "align" and "features".
    """
    start = time.perf_counter()
    face, points = align(image, landmarks)
    upper = points[UPPER_LANDMARKS]
    mid = time.perf_counter()
    features = landmark_features(face, upper)
    if timings is not None:
        timings["align"] = timings.get("align", 0.0) + (mid - start) * 1e3
        timings["features"] = timings.get("features", 0.0) + (time.perf_counter() - mid) * 1e3
    return UpperFaceSample(face=face, features=features, landmarks=upper)


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


def sample_unaligned(image: np.ndarray) -> UpperFaceSample:
    """The whole image taken as an already aligned face (no usable mesh): resize and use the mean shape."""
    face = cv2.resize(to_gray(image), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return UpperFaceSample(face=face, features=landmark_features(face, CANONICAL_UPPER), landmarks=CANONICAL_UPPER.copy())


def sample_or_whole(image: np.ndarray, landmarks: np.ndarray | None) -> UpperFaceSample:
    """The one rule for camera and training faces: align on the mesh when there is one, else take the whole image."""
    return sample(image, landmarks) if landmarks is not None else sample_unaligned(image)


def flip_sample(s: UpperFaceSample) -> UpperFaceSample:
    """The mirror image of a sample, with landmarks swapped to their mirror partners (augmentation, test-time flip)."""
    face = np.ascontiguousarray(s.face[:, ::-1])
    points = s.landmarks.copy()
    points[:, 0] = SIZE - 1 - points[:, 0]
    points = points[_mirror_order()]
    return UpperFaceSample(face=face, features=landmark_features(face, points), landmarks=points)


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
