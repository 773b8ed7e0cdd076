"""Face detection and 468-point landmarks with the models bundled in the mediapipe wheel.

We run BlazeFace short-range and the face-landmark model directly through our runtime layer
(ai-edge-litert + XNNPACK) rather than through MediaPipe's graph, so every stage is timed and the
thread count is ours. For video we do what FaceMesh does: the landmarks of one frame give the
region of interest for the next, and the detector runs only when tracking is lost (and every
`redetect_every` frames, to pick up people who step into view).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
import time
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import cv2
import numpy as np

from edge.errors import ModelError
from edge.runtime import Backend, open_model

_LOGGER = logging.getLogger(__name__)

DETECTOR_SIZE = 128
FULL_RANGE_SIZE = 192
LANDMARK_SIZE = 192
NUM_LANDMARKS = 468
MIN_PRESENCE = 0.5
"""Landmark model's face-presence probability below which a crop is not taken as a face (a tracked
face is lost, the whole-image fallback refused)."""
SURE_DETECTION = 0.6
"""Detector score above which a face is kept even when the mesh doubts it (see MIN_DETECTED_OVERLAP);
weaker detections must convince the mesh too (a flag's stripes scored 0.50 with presence 0.02)."""
WEAK_DETECTION = 0.3
"""Detections scoring from here up to the detector's min_score are meshed too, but kept only when the
mesh is all but certain (SURE_PRESENCE): a masked face 50 px wide at 3 m scored 0.34 in the detector and
0.99 in the mesh (docs/detection.md)."""
SURE_PRESENCE = 0.9
"""Mesh presence a weak detection needs to be taken as a face."""
WEAK_SHARE = 0.2
"""A weak detection (or its mesh) sharing this much of the smaller box with a face already found is
that face's part, not another face."""
MIN_DETECTED_OVERLAP = 0.3
"""A face the detector found is kept when the mesh laid on it overlaps the detector's box by this much
(IoU), whatever the mesh's presence score: that score falls for faces the mesh model was not trained
on (masked, a few dozen pixels wide) while the detector still finds them (docs/detection.md), and
MediaPipe's own FaceMesh keeps detected faces without it too."""
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263
"""Subject's right eye outer corner (image left on a facing person) and left eye outer corner."""


def bundled_model_path(name: str) -> Path:
    """Path of a face model shipped inside the mediapipe wheel (no download, ever)."""
    # Find the package folder without importing it: importing mediapipe costs seconds and memory.
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("mediapipe is not installed: run `make setup` (it carries the face models)")
    folder = "face_detection" if "detection" in name else "face_landmark"
    path = Path(list(spec.submodule_search_locations)[0]) / "modules" / folder / name
    if not path.is_file():
        raise ModelError(f"{path} is missing from the mediapipe wheel: reinstall mediapipe==0.10.18 (`make setup`)")
    return path


@dataclass(frozen=True)
class Roi:
    """A rotated square in image pixels: the crop the landmark model sees."""

    cx: float
    cy: float
    size: float
    angle: float
    """Radians; the crop's x axis points along (cos a, sin a) in image coordinates (y down)."""

    def crop_matrix(self, out_size: int) -> np.ndarray:
        """Affine matrix mapping image pixels into the out_size×out_size crop."""
        u = np.array([math.cos(self.angle), math.sin(self.angle)]) * self.size / 2
        v = np.array([-math.sin(self.angle), math.cos(self.angle)]) * self.size / 2
        c = np.array([self.cx, self.cy])
        src = np.float32([c - u - v, c + u - v, c - u + v])
        dst = np.float32([[0, 0], [out_size, 0], [0, out_size]])
        return cv2.getAffineTransform(src, dst)


@dataclass(frozen=True)
class Face:
    """One face: its landmarks in image pixels and how it was found."""

    landmarks: np.ndarray
    """float32 [468, 3]: x, y in image pixels; z in the same scale as x."""
    score: float
    """Landmark model's face-presence probability."""
    fallback: bool
    """True when nothing was detected and the whole image was taken as the face."""
    roi: Roi
    track_id: int = 0
    """The same number for the same person while FaceMesh follows them from frame to frame (track=True);
    a new number for each face that had to be found by the detector. 0 for the whole-image fallback."""
    weak: bool = False
    """Found from a weak detection (WEAK_DETECTION) that the mesh was sure of."""

    @cached_property
    def box(self) -> tuple[int, int, int, int]:
        """(x, y, w, h) around the landmarks, in whole pixels (computed once: sorting, position and output all ask)."""
        xy = self.landmarks[:, :2]
        x0, y0 = np.floor(xy.min(axis=0))
        x1, y1 = np.ceil(xy.max(axis=0))
        return int(x0), int(y0), int(x1 - x0), int(y1 - y0)

    def box_in(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The box to report in a width×height frame: clipped to it (the mesh of a face cut by the frame's
        edge runs past it, to negative x or y), and the whole frame for a whole-image fallback, which is
        what was read there."""
        if self.fallback:
            return 0, 0, width, height
        x, y, w, h = self.box
        x0, y0 = min(max(x, 0), width), min(max(y, 0), height)
        x1, y1 = min(max(x + w, 0), width), min(max(y + h, 0), height)
        return x0, y0, x1 - x0, y1 - y0

    @property
    def eye_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """(image-left eye, image-right eye) centres from the eye-contour landmarks."""
        left, right = eye_centres(self.landmarks)
        return left, right


EYE_RINGS = np.array(
    [
        [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246],
        [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466],
    ]
)
"""Eye contours (face-mesh topology): the subject's right eye (image left), then the left eye."""


def eye_centres(landmarks: np.ndarray) -> np.ndarray:
    """float32 [2, 2]: image-left and image-right eye centres, the mean of each eye contour."""
    return landmarks[EYE_RINGS, :2].mean(axis=1).astype(np.float32)


@lru_cache(maxsize=2)
def _anchors(full_range: bool) -> np.ndarray:
    """BlazeFace SSD anchor centres (0..1). Short range (128 px): 16×16×2 at stride 8, then 8×8×6 at
    stride 16 (896). Full range (192 px): 48×48×1 at stride 4 (2,304)."""
    layers = ((48, 1),) if full_range else ((16, 2), (8, 6))
    centres = []
    for grid, per_cell in layers:
        ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
        cells = np.stack([(xs.ravel() + 0.5) / grid, (ys.ravel() + 0.5) / grid], axis=1)
        centres.append(np.repeat(cells, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


@dataclass(frozen=True)
class Detection:
    box: np.ndarray
    """x0, y0, x1, y1 in image pixels."""
    keypoints: np.ndarray
    """[6, 2] in image pixels: right eye, left eye, nose tip, mouth, right ear, left ear."""
    score: float

    def roi(self) -> Roi:
        (rx, ry), (lx, ly) = self.keypoints[0], self.keypoints[1]
        x0, y0, x1, y1 = self.box
        return Roi(
            cx=(x0 + x1) / 2,
            cy=(y0 + y1) / 2,
            size=max(x1 - x0, y1 - y0) * 1.5,
            angle=math.atan2(ly - ry, lx - rx),
        )


def _weighted_nms(boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray, iou: float) -> list[Detection]:
    """MediaPipe's weighted NMS: overlapping candidates are averaged by score, not dropped."""
    order = np.argsort(-scores)
    boxes, kps, scores = boxes[order], kps[order], scores[order]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    alive = np.ones(len(scores), dtype=bool)
    out = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        ix0 = np.maximum(boxes[i, 0], boxes[:, 0])
        iy0 = np.maximum(boxes[i, 1], boxes[:, 1])
        ix1 = np.minimum(boxes[i, 2], boxes[:, 2])
        iy1 = np.minimum(boxes[i, 3], boxes[:, 3])
        inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
        overlap = inter / (area[i] + area - inter + 1e-9)
        group = alive & (overlap > iou)
        w = scores[group][:, None]
        out.append(
            Detection(
                box=(boxes[group] * w).sum(0) / w.sum(),
                keypoints=(kps[group] * w[:, :, None]).sum(0) / w.sum(),
                score=float(scores[i]),
            )
        )
        alive &= ~group
    return out


class BlazeFace:
    """One BlazeFace model on a letterboxed square view of an image region: candidate boxes, eye/nose/
    mouth/ear keypoints and scores in frame pixels, before suppression.

    Short range (128 px input) is made for faces that fill a good part of its view (arm's length);
    full range (192 px, stride-4 anchors) for faces down to about 4 % of its view."""

    def __init__(self, full_range: bool, threads: int = 2, backend: Backend | None = None) -> None:
        name = "face_detection_full_range_sparse.tflite" if full_range else "face_detection_short_range.tflite"
        self._model = backend or open_model(bundled_model_path(name), "tflite", threads)
        self.full_range = full_range
        self.size = FULL_RANGE_SIZE if full_range else DETECTOR_SIZE

    def __call__(self, rgb: np.ndarray, min_score: float, region: tuple[int, int, int, int] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes [K,4] x0 y0 x1 y1, keypoints [K,6,2], scores [K]) above min_score in `region`
        (x0, y0, x1, y1 of the frame; the whole frame by default), in frame pixels."""
        ox, oy = (region[0], region[1]) if region else (0, 0)
        view = rgb[region[1]:region[3], region[0]:region[2]] if region else rgb
        h, w = view.shape[:2]
        side = max(h, w)
        pad_x, pad_y = (side - w) / 2, (side - h) / 2
        square = cv2.copyMakeBorder(
            view, int(pad_y), int(math.ceil(pad_y)), int(pad_x), int(math.ceil(pad_x)), cv2.BORDER_CONSTANT
        )
        small = cv2.resize(square, (self.size, self.size), interpolation=cv2.INTER_AREA)
        x = (small.astype(np.float32) / 127.5 - 1.0)[None]
        regressors, logits = self._model.run([x])
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[0, :, 0], -50, 50)))
        keep = scores >= min_score
        raw, anchors, scores = regressors[0, keep], _anchors(self.full_range)[keep], scores[keep]
        centre = anchors + raw[:, 0:2] / self.size
        half = raw[:, 2:4] / self.size / 2
        shift = np.array([pad_x - ox, pad_y - oy], np.float32)
        boxes = np.concatenate([centre - half, centre + half], axis=1) * side - np.tile(shift, 2)
        kps = (anchors[:, None, :] + raw[:, 4:16].reshape(-1, 6, 2) / self.size) * side - shift
        return boxes.astype(np.float32), kps.astype(np.float32), scores.astype(np.float32)

    def close(self) -> None:
        self._model.close()


TILE_BAND = 0.75
"""Share of a landscape frame's height the tiles cover, centred: faces far enough away to need a tile
are near the wearer's eye level, give or take a seated or a taller person and a tilted head."""


def tiles(width: int, height: int, side: int, overlap: float = 0.15) -> list[tuple[int, int, int, int]]:
    """Square regions of `side` px across the frame, neighbours overlapping by at least `overlap` of a
    side: 53 px of a 352-px tile, so a face cut by one tile's edge lies whole in the next (the tiles
    are there for faces under about 30 px; larger ones the whole-frame passes find).

    In a landscape frame only the central TILE_BAND of the height, in as few rows as cover it: a face
    far enough away to need a tile is at about the wearer's eye level (the top and bottom strips are
    ceiling, floor and the bodies of nearer people, whose faces the whole-frame passes find). Taller
    frames are covered whole."""
    def starts(length: int) -> list[int]:
        if length <= side:
            return [0]
        n = math.ceil((length - side) / (side * (1 - overlap))) + 1
        return [int(round(i * (length - side) / (n - 1))) for i in range(n)]

    if width < height:
        rows = starts(height)
    else:  # the central TILE_BAND of the height, in as few rows as cover it
        band = max(side, int(round(height * TILE_BAND)))
        top = (height - band) // 2
        rows = [top + y for y in (starts(band) if band > side * 1.1 else [(band - side) // 2])]
    return [(x, y, min(x + side, width), min(y + side, height)) for y in rows for x in starts(width)]


class FaceDetector:
    """Faces from arm's length to across the room: the passes below, merged by one weighted suppression.

    - near: BlazeFace short range on the whole frame (faces wider than about a tenth of the frame);
    - far: BlazeFace full range on the whole frame (down to about 4 % of the frame's long side);
    - tiles: full range again on overlapping squares over the middle of the frame (`tiles`), at each
      `tile_fraction` of the frame's width (0.55: two squares; 0.4: two rows of three), so a face
      3–4 m away is as large in the model's view as one at 1.5–2 m is in the whole frame. The tiles are cut from
      the frame as given (at 1280×960 they carry twice the detail of 640×480).
    Why these passes, and their found rates per distance: docs/detection.md.
    """

    def __init__(self, threads: int = 2, min_score: float = 0.5, tile_fraction: float | tuple[float, ...] = (0.55, 0.4),
                 passes: tuple[str, ...] = ("near", "far", "tiles"), weak_score: float | None = None) -> None:
        unknown = set(passes) - {"near", "far", "tiles"}
        if unknown:
            raise ModelError(f"unknown detection pass {sorted(unknown)}: use near, far and/or tiles")
        self.passes = passes
        self._near = BlazeFace(False, threads) if "near" in passes else None
        self._far = BlazeFace(True, threads) if {"far", "tiles"} & set(passes) else None
        self.min_score = min_score  # every pass: MediaPipe's solutions default (0.6 on full range lost 16 points masked at 2 m)
        self.tile_fractions = (tile_fraction,) if isinstance(tile_fraction, float) else tuple(tile_fraction)
        self.weak_score = weak_score
        """Also return detections from weak_score up to min_score (after the others; each merged only with
        its weak peers, and dropped where it overlaps a detection at min_score): the caller decides."""

    def __call__(self, rgb: np.ndarray, timings: dict[str, float] | None = None, also: np.ndarray | None = None) -> list[Detection]:
        """Detections in `rgb` (and in `also`, the same frame otherwise processed, when given), merged;
        then the weak ones (score < min_score, see weak_score)."""
        h, w = rgb.shape[:2]
        floor = min(self.min_score, self.weak_score) if self.weak_score is not None else self.min_score
        found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for image in (rgb, also) if also is not None else (rgb,):
            for name in self.passes:
                start = time.perf_counter()
                if name == "near":
                    found.append(self._near(image, floor))
                elif name == "far":
                    found.append(self._far(image, floor))
                else:
                    for fraction in self.tile_fractions:
                        side = int(round(w * fraction))
                        if FULL_RANGE_SIZE <= side < max(w, h):  # never upsampled: small images need no tiles
                            found.extend(self._far(image, floor, region) for region in tiles(w, h, side))
                if timings is not None:
                    timings[f"detect_{name}"] = timings.get(f"detect_{name}", 0.0) + (time.perf_counter() - start) * 1e3
        boxes = np.concatenate([f[0] for f in found]) if found else np.zeros((0, 4), np.float32)
        if not len(boxes):
            return []
        kps = np.concatenate([f[1] for f in found])
        scores = np.concatenate([f[2] for f in found])
        strong = scores >= self.min_score
        detections = _weighted_nms(boxes[strong], kps[strong], scores[strong], iou=0.3)
        if strong.all():
            return detections
        weak = _weighted_nms(boxes[~strong], kps[~strong], scores[~strong], iou=0.3)
        return detections + [d for d in weak  # not a part of a face found already (a chin and a hand: 0.33 shared)
                             if not any(_same_face(_xywh(d.box), _xywh(s.box), WEAK_SHARE) for s in detections)]

    def close(self) -> None:
        for model in (self._near, self._far):
            if model is not None:
                model.close()


class LandmarkModel:
    """The 468-point face-mesh model on a rotated 192×192 crop."""

    def __init__(self, threads: int = 2, backend: Backend | None = None) -> None:
        self._model = backend or open_model(bundled_model_path("face_landmark.tflite"), "tflite", threads)

    def __call__(self, rgb: np.ndarray, roi: Roi) -> tuple[np.ndarray, float]:
        matrix = roi.crop_matrix(LANDMARK_SIZE)
        crop = cv2.warpAffine(rgb, matrix, (LANDMARK_SIZE, LANDMARK_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        mesh, flag = self._model.run([np.multiply(crop, np.float32(1 / 255), dtype=np.float32)[None]])  # one pass, 0..1
        points = mesh.reshape(NUM_LANDMARKS, 3).astype(np.float32)
        inverse = cv2.invertAffineTransform(matrix)
        xy = points[:, :2] @ inverse[:, :2].T + inverse[:, 2]
        z = points[:, 2:3] * roi.size / LANDMARK_SIZE
        score = float(1.0 / (1.0 + math.exp(-float(np.clip(flag.ravel()[0], -50, 50)))))
        return np.concatenate([xy, z], axis=1).astype(np.float32), score

    def close(self) -> None:
        self._model.close()


def roi_from_landmarks(landmarks: np.ndarray) -> Roi:
    """Next frame's crop from this frame's mesh: eye-line rotation, 1.5× the rotated extent."""
    a, b = landmarks[RIGHT_EYE_OUTER, :2], landmarks[LEFT_EYE_OUTER, :2]
    angle = math.atan2(b[1] - a[1], b[0] - a[0])
    u = np.array([math.cos(angle), math.sin(angle)])
    v = np.array([-math.sin(angle), math.cos(angle)])
    pu, pv = landmarks[:, :2] @ u, landmarks[:, :2] @ v
    cu, cv_ = (pu.min() + pu.max()) / 2, (pv.min() + pv.max()) / 2
    centre = cu * u + cv_ * v
    size = max(pu.max() - pu.min(), pv.max() - pv.min()) * 1.5
    return Roi(cx=float(centre[0]), cy=float(centre[1]), size=float(size), angle=angle)


def _agrees(face: Face, detected: Detection) -> bool:
    """A mesh the model doubts is still taken when a sure detection and the mesh agree on where the face
    is: boxes overlapping (MIN_DETECTED_OVERLAP) and both eyes within a quarter of the face's width of
    the detector's eye keypoints."""
    if detected.score < SURE_DETECTION or _iou(face.box, _xywh(detected.box)) < MIN_DETECTED_OVERLAP:
        return False
    width = float(detected.box[2] - detected.box[0])
    eyes = eye_centres(face.landmarks)  # image-left (the subject's right), image-right
    return float(np.linalg.norm(eyes - detected.keypoints[:2], axis=1).max()) < 0.25 * width


def _xywh(box: np.ndarray) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return int(x0), int(y0), int(round(x1 - x0)), int(round(y1 - y0))


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int]:
    """(intersection, area of a, area of b) of two (x, y, w, h) boxes."""
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    iw = max(0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    ih = max(0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    return iw * ih, aw * ah, bw * bh


def _same_face(a: tuple[int, int, int, int], b: tuple[int, int, int, int], share: float = 0.5) -> bool:
    """Two mesh boxes of one face: they share at least `share` of the smaller one (a second, weaker
    detection of part of a face, or two tracks that converged, lands inside the first)."""
    inter, area_a, area_b = _overlap(a, b)
    return inter >= share * max(1, min(area_a, area_b))


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    inter, area_a, area_b = _overlap(a, b)
    return inter / max(1e-9, area_a + area_b - inter)


class FaceMesh:
    """Several faces per frame, sorted left to right; tracked between frames of a video."""

    def __init__(
        self,
        threads: int = 2,
        max_faces: int = 6,
        min_detection_score: float = 0.5,
        min_presence: float = MIN_PRESENCE,
        weak_detection_score: float | None = WEAK_DETECTION,
        redetect_every: int = 15,
    ) -> None:
        self.detector = FaceDetector(threads=threads, min_score=min_detection_score, weak_score=weak_detection_score)
        self.landmarks = LandmarkModel(threads=threads)
        self.max_faces = max_faces
        self.min_presence = min_presence
        self.redetect_every = redetect_every
        self._tracked: list[tuple[int, Roi]] = []
        self._since_detect = 0
        self._last_id = 0

    def reset(self) -> None:
        """Forget tracked faces (a new, unrelated image comes next)."""
        self._tracked = []
        self._since_detect = 0

    def process(
        self, rgb: np.ndarray, track: bool = False, allow_fallback: bool = True, timings: dict[str, float] | None = None,
        detect_also: np.ndarray | None = None,
    ) -> list[Face]:
        """Faces in an RGB frame. With track=True, reuse the last frame's landmarks as the crop.

        detect_also: the same frame as the camera gave it, when `rgb` is its night-branch enhancement:
        the detector looks at both (the enhancer helps the mesh and the reader more than the detector,
        which found masked faces at 3 m in the dark 31 times in 36 with both, 26 on the enhanced frame
        alone; docs/detection.md). Landmarks always come from `rgb`."""
        timings = timings if timings is not None else {}
        tracked = list(self._tracked) if track else []
        if not track:
            self._last_id = 0  # an unrelated image: its faces are numbered 1, 2, … left to right of detection
        detect = not tracked or (track and self._since_detect >= self.redetect_every)
        faces: list[Face] = []
        detect_ms = 0.0
        landmark_ms = 0.0
        if tracked:
            start = time.perf_counter()
            faces = self._mesh(rgb, tracked, fallback=False)
            faces = [f for i, f in enumerate(faces) if not any(_same_face(f.box, g.box) for g in faces[:i])]  # two tracks, one face
            landmark_ms += (time.perf_counter() - start) * 1e3
            detect = detect or not faces
        if detect:
            start = time.perf_counter()
            detections = self.detector(rgb, timings, also=detect_also)
            detect_ms = (time.perf_counter() - start) * 1e3
            self._since_detect = 0
            start = time.perf_counter()
            candidates: list[Face] = []
            for det in sorted(detections, key=lambda d: -d.score)[: self.max_faces + 2]:  # bound the mesh passes
                candidates += self._mesh(rgb, [(0, det.roi())], fallback=False, detected=det)
            # faces the mesh is sure of first (then by detector score): a doubtful box over a group must not hide them
            for candidate in sorted(candidates, key=lambda f: f.score < self.min_presence):
                share = WEAK_SHARE if candidate.weak else 0.5
                if not any(_same_face(candidate.box, f.box, share) for f in faces):
                    self._last_id += 1
                    faces.append(dataclasses.replace(candidate, track_id=self._last_id))
            landmark_ms += (time.perf_counter() - start) * 1e3
        else:
            self._since_detect += 1
        if not faces and allow_fallback:
            start = time.perf_counter()
            h, w = rgb.shape[:2]
            whole = Roi(cx=w / 2, cy=h / 2, size=float(max(h, w)), angle=0.0)
            faces = self._mesh(rgb, [(0, whole)], fallback=True)
            landmark_ms += (time.perf_counter() - start) * 1e3
        faces = sorted(faces, key=lambda f: -f.box[2] * f.box[3])[: self.max_faces]  # the nearest (largest) ones
        faces = sorted(faces, key=lambda f: f.box[0] + f.box[2] / 2)
        self._tracked = [(f.track_id, roi_from_landmarks(f.landmarks)) for f in faces if not f.fallback] if track else []
        timings["detect"] = timings.get("detect", 0.0) + detect_ms
        timings["landmarks"] = timings.get("landmarks", 0.0) + landmark_ms
        return faces

    def _mesh(self, rgb: np.ndarray, rois: list[tuple[int, Roi]], fallback: bool, detected: Detection | None = None) -> list[Face]:
        out = []
        for track_id, roi in rois:
            points, score = self.landmarks(rgb, roi)
            weak = detected is not None and detected.score < self.detector.min_score
            face = Face(landmarks=points, score=score, fallback=fallback, roi=roi, track_id=track_id, weak=weak)
            if weak:
                keep = score >= SURE_PRESENCE  # the mesh must be all but certain
            else:
                keep = score >= self.min_presence or (detected is not None and _agrees(face, detected))
            if keep:
                out.append(face)
        return out

    def close(self) -> None:
        self.detector.close()
        self.landmarks.close()

    def __enter__(self) -> "FaceMesh":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
