"""Faces, alignment and upper-face features on real photos."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from edge.vision import upperface
from edge.vision.faces import FaceMesh, Roi, roi_from_landmarks


def rgb(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_finds_grace_hopper_with_mesh_on_her_face(face_mesh, grace_hopper):
    faces = face_mesh.process(rgb(grace_hopper))
    assert len(faces) == 1
    face = faces[0]
    assert not face.fallback and face.score > 0.9
    x, y, w, h = face.box
    # her face sits in the upper middle of the 512×600 portrait
    assert 120 < x < 220 and 90 < y < 180 and 150 < w < 260 and 150 < h < 260
    left, right = face.eye_centres
    assert left[0] < right[0] and abs(left[1] - right[1]) < 15


def test_matches_mediapipe_own_facemesh(face_mesh, grace_hopper):
    import mediapipe as mp

    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True) as theirs:
        ref = theirs.process(rgb(grace_hopper)).multi_face_landmarks[0].landmark
    h, w = grace_hopper.shape[:2]
    ref_xy = np.array([[p.x * w, p.y * h] for p in ref])
    ours = face_mesh.process(rgb(grace_hopper))[0].landmarks[:, :2]
    assert np.abs(ours - ref_xy).mean() < 2.0


def test_several_faces_sorted_left_to_right(grace_hopper):
    small = cv2.resize(grace_hopper, (256, 300))
    canvas = np.full((300, 800, 3), 90, np.uint8)
    canvas[:, 20:276] = small
    canvas[:, 520:776] = cv2.flip(small, 1)
    with FaceMesh(threads=1) as mesh:
        faces = mesh.process(rgb(canvas))
    assert len(faces) == 2
    assert faces[0].box[0] < 276 < 520 <= faces[1].box[0] + faces[1].box[2]


def test_no_face_in_a_plain_scene_gives_nothing(face_mesh):
    rng = np.random.default_rng(0)
    scene = cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), (0, 0), 8)
    assert face_mesh.process(rgb(scene)) == []


def test_undetected_face_falls_back_to_whole_image(grace_hopper):
    crop = cv2.resize(cv2.cvtColor(grace_hopper[140:330, 170:350], cv2.COLOR_BGR2GRAY), (48, 48), interpolation=cv2.INTER_AREA)
    with FaceMesh(threads=1, min_detection_score=1.01, weak_detection_score=None) as mesh:  # a detector that never fires
        found = mesh.process(cv2.cvtColor(crop, cv2.COLOR_GRAY2RGB))
        assert len(found) == 1 and found[0].fallback and found[0].score > 0.5
        assert mesh.process(cv2.cvtColor(crop, cv2.COLOR_GRAY2RGB), allow_fallback=False) == []


def test_tracking_reuses_landmarks_and_skips_the_detector(grace_hopper):
    with FaceMesh(threads=1, redetect_every=100) as mesh:
        first: dict[str, float] = {}
        mesh.process(rgb(grace_hopper), track=True, timings=first)
        shifted = np.roll(grace_hopper, 6, axis=1)
        second: dict[str, float] = {}
        faces = mesh.process(rgb(shifted), track=True, timings=second)
    assert first["detect"] > 0 and second["detect"] == 0.0
    assert len(faces) == 1 and not faces[0].fallback


def test_roi_round_trip_recovers_rotation(face_mesh, grace_hopper):
    h, w = grace_hopper.shape[:2]
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), 20, 1.0)
    tilted = cv2.warpAffine(grace_hopper, rot, (w, h))
    face = face_mesh.process(rgb(tilted))[0]
    roi = roi_from_landmarks(face.landmarks)
    assert abs(np.degrees(roi.angle) + 20) < 4  # OpenCV's +20° is counter-clockwise: eye line at −20°


def test_alignment_puts_eyes_on_the_canonical_points(face_mesh, grace_hopper):
    face = face_mesh.process(rgb(grace_hopper))[0]
    aligned, points = upperface.align(grace_hopper, face.landmarks)
    assert aligned.shape == (48, 48) and aligned.dtype == np.uint8
    eyes = upperface.eye_centres(np.concatenate([points, np.zeros((len(points), 1), np.float32)], axis=1))
    assert np.allclose(eyes, upperface.CANONICAL_EYES, atol=0.05)


def test_landmark_noise_between_machines_does_not_reach_the_sample(face_mesh, grace_hopper, monkeypatch):
    """ARM and x86 face models differ by ~1e-4 px: after the EYE_GRID / POINT_GRID rounding the aligned
    face, the tiles and the features are the same bytes; with a negligible grid they are not.

    Four views of the portrait (as is, shifted, scaled), ten noisy copies of each: a grid boundary within
    1e-4 px of one of a face's ~100 rounded values is rare, not impossible (about one face in seven,
    and then about half of its copies change), so the bar is over all forty copies."""
    h, w = grace_hopper.shape[:2]
    views = [grace_hopper] + [cv2.warpAffine(grace_hopper, m, (w, h), borderMode=cv2.BORDER_REPLICATE) for m in (
        np.float32([[1, 0, 3.3], [0, 1, 0]]), np.float32([[1, 0, 0], [0, 1, 5.7]]), cv2.getRotationMatrix2D((w / 2, h / 2), 0, 0.9))]
    rng = np.random.default_rng(0)
    cases = []
    for view in views:
        landmarks = face_mesh.process(rgb(view))[0].landmarks
        noisy = []
        for _ in range(10):
            n = landmarks.copy()
            n[:, :2] += rng.normal(0.0, 1e-4, n[:, :2].shape).astype(np.float32)
            noisy.append(n)
        cases.append((view, landmarks, noisy))

    def unchanged() -> int:
        count = 0
        for view, landmarks, noisy in cases:
            base = upperface.sample(view, landmarks)
            others = [upperface.sample(view, n) for n in noisy]
            count += sum(np.array_equal(base.face, o.face) and np.array_equal(base.features, o.features) for o in others)
        return count

    base = upperface.sample(grace_hopper, cases[0][1])
    assert np.array_equal(base.landmarks, upperface.snap(base.landmarks, upperface.POINT_GRID))
    assert unchanged() >= 28
    monkeypatch.setattr(upperface, "EYE_GRID", 2.0**-30)
    monkeypatch.setattr(upperface, "POINT_GRID", 2.0**-30)
    assert unchanged() <= 8


def test_alignment_undoes_rotation_and_scale(face_mesh, grace_hopper):
    base = upperface.sample(grace_hopper, face_mesh.process(rgb(grace_hopper))[0].landmarks)
    h, w = grace_hopper.shape[:2]
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), 15, 0.7)
    moved = cv2.warpAffine(grace_hopper, rot, (w, h), borderMode=cv2.BORDER_REPLICATE)
    other = upperface.sample(moved, face_mesh.process(rgb(moved))[0].landmarks)
    diff = np.abs(base.face.astype(int) - other.face.astype(int))[: upperface.UPPER_ROWS]
    assert diff.mean() < 12  # same aligned upper face despite 15° and 0.7× in the frame
    assert np.abs(base.landmarks - other.landmarks).mean() < 1.0


def test_upper_crop_and_feature_shapes(face_mesh, grace_hopper):
    s = upperface.sample(grace_hopper, face_mesh.process(rgb(grace_hopper))[0].landmarks)
    assert s.upper.shape == (upperface.UPPER_ROWS, 48)
    assert s.features.shape == (len(upperface.UPPER_LANDMARKS), 74) and s.features.dtype == np.float32
    shape_xy = s.features[:, 72:]
    assert shape_xy.min() == pytest.approx(0.0) and shape_xy.max() == pytest.approx(1.0)
    assert np.isfinite(s.features).all() and s.features[:, :72].std() > 0.01


def test_hog_features_are_stable_and_discriminative(face_mesh, grace_hopper):
    lm = face_mesh.process(rgb(grace_hopper))[0].landmarks
    a = upperface.sample(grace_hopper, lm).features
    b = upperface.sample(grace_hopper, lm).features
    assert np.array_equal(a, b)
    noisy = np.clip(grace_hopper.astype(int) + np.random.default_rng(1).normal(0, 3, grace_hopper.shape), 0, 255).astype(np.uint8)
    c = upperface.sample(noisy, lm).features
    blank = upperface.landmark_features(np.full((48, 48), 128, np.uint8), upperface.CANONICAL_UPPER)
    assert np.abs(a - c)[:, :72].mean() < 0.25 * np.abs(a - blank)[:, :72].mean()


def test_landmark_patches_are_the_2x_face_at_the_landmark(grace_hopper):
    face = cv2.resize(cv2.cvtColor(grace_hopper, cv2.COLOR_BGR2GRAY), (48, 48), interpolation=cv2.INTER_AREA)
    big = cv2.resize(face, (96, 96), interpolation=cv2.INTER_LINEAR)
    points = np.array([[20.0, 15.0], [30.0, 10.0]], dtype=np.float32)
    tiles = upperface.landmark_patches(face, points)
    assert tiles.shape == (2, 22, 22) and tiles.dtype == np.uint8
    # a landmark at face pixel (x, y) sits at 2x + ½ on the 2× face; its tile spans ±11 samples around it
    for tile, (x, y) in zip(tiles.astype(int), points.astype(int)):
        assert np.abs(tile - big[2 * y - 10 : 2 * y + 12, 2 * x - 10 : 2 * x + 12]).max() <= 1


def test_landmark_patches_follow_sub_pixel_moves(grace_hopper):
    """A landmark that moves by half a face pixel moves its tile by one 2× sample (no whole-pixel jumps)."""
    face = cv2.resize(cv2.cvtColor(grace_hopper, cv2.COLOR_BGR2GRAY), (48, 48), interpolation=cv2.INTER_AREA)
    p = np.array([[21.37, 16.81]], dtype=np.float32)
    a = upperface.landmark_patches(face, p)[0].astype(int)
    b = upperface.landmark_patches(face, p + np.array([0.5, 0.0], np.float32))[0].astype(int)
    assert np.abs(a[:, 1:] - b[:, :-1]).max() <= 1 and np.abs(a - b).max() > 5
    # landmarks a hair short of a quarter pixel (half a 2× sample), then a thousandth of a pixel on:
    # whole-pixel patch placement would jump every patch by one 2× pixel here
    edge = (np.round(upperface.CANONICAL_UPPER * 2) / 2 + 0.2499).astype(np.float32)
    base = upperface.landmark_features(face, edge)
    moved = upperface.landmark_features(face, edge + np.float32(1e-3))
    assert np.abs(moved - base)[:, :72].max() < 0.05


def test_flip_sample_mirrors_landmarks_pairwise(face_mesh, grace_hopper):
    s = upperface.sample(grace_hopper, face_mesh.process(rgb(grace_hopper))[0].landmarks)
    f = upperface.flip_sample(s)
    assert np.array_equal(f.face, s.face[:, ::-1])
    twice = upperface.flip_sample(f)
    assert np.allclose(twice.landmarks, s.landmarks) and np.allclose(twice.features, s.features)
    # the mirror's tiles are reused from the sample; resampling the mirrored face gives the same bytes
    assert np.array_equal(f.features, upperface.landmark_features(f.face, f.landmarks))
    bare = upperface.UpperFaceSample(face=s.face, features=s.features, landmarks=s.landmarks)
    assert np.array_equal(upperface.flip_sample(bare).features, f.features)


def test_crop_matrix_maps_roi_corners(grace_hopper):
    roi = Roi(cx=100, cy=80, size=40, angle=0.0)
    m = roi.crop_matrix(192)
    corners = np.array([[80, 60, 1], [120, 100, 1]], dtype=np.float64) @ m.T
    assert np.allclose(corners, [[0, 0], [192, 192]], atol=1e-4)


def test_noise_level_tells_a_clean_frame_from_one_at_full_gain():
    from edge.vision.enhance import noise_level

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:240, 0:320]
    clean = (60 + 0.3 * xx + 40 * np.sin(yy / 15.0)).astype(np.uint8)
    assert noise_level(clean) < 2.0
    for sigma in (5.0, 20.0):
        noisy = np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 255).astype(np.uint8)
        assert abs(noise_level(noisy) - sigma) < 0.25 * sigma
    assert noise_level(np.zeros((2, 2), np.uint8)) == 0.0


def test_too_dark_only_when_nothing_was_found_and_the_frame_cannot_be_read():
    from edge.results import FrameResult, too_dark

    empty = dict(faces=(), lowlight=False)
    assert too_dark(FrameResult(**empty, brightness=5.0), 12.0, 11.5)
    assert too_dark(FrameResult(**empty, brightness=120.0, noise=15.0), 12.0, 11.5)
    assert not too_dark(FrameResult(**empty, brightness=120.0, noise=3.0), 12.0, 11.5)


def _far_frame(grace_hopper: np.ndarray, face_px: int) -> np.ndarray:
    """Her portrait (head, hair, shoulders) shrunk so her face is face_px wide in a 640×480 frame, the
    rest of the frame her own background stretched out (a face 4 m away through a 66° lens is ~17 px)."""
    s = face_px / 189.0  # her mesh box is 189 px wide in the original
    small = cv2.resize(grace_hopper, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    h, w = small.shape[:2]
    return cv2.copyMakeBorder(small, 200, 480 - 200 - h, 300, 640 - 300 - w, cv2.BORDER_REPLICATE)


@pytest.mark.parametrize("face_px, fewest_passes", [(40, ("near", "far")), (20, ("near", "far", "tiles"))])
def test_far_faces_need_the_far_passes(grace_hopper, face_px, fewest_passes):
    from edge.vision.faces import FaceDetector

    frame = rgb(_far_frame(grace_hopper, face_px))
    fewer = FaceDetector(threads=1, passes=fewest_passes[:-1])
    enough = FaceDetector(threads=1, passes=fewest_passes)
    try:
        assert fewer(frame) == []
        found = enough(frame)
        assert len(found) == 1
        x0, y0, x1, y1 = found[0].box
        assert 300 < (x0 + x1) / 2 < 300 + face_px * 1.6 and 0.5 * face_px < x1 - x0 < 2 * face_px
    finally:
        fewer.close(), enough.close()
    with FaceMesh(threads=1) as mesh:
        faces = mesh.process(frame, allow_fallback=False)
    assert len(faces) == 1 and abs(faces[0].box[2] - face_px) < 0.3 * face_px


def test_unknown_detection_pass_is_refused():
    from edge.errors import ModelError
    from edge.vision.faces import FaceDetector

    with pytest.raises(ModelError, match="unknown detection pass"):
        FaceDetector(threads=1, passes=("near", "telescope"))


def test_tracked_faces_keep_their_ids_and_a_newcomer_gets_a_new_one(grace_hopper):
    from edge.hw.camera import SceneReader

    reader = SceneReader(640, 480)
    frames = [reader.read() for _ in range(90)]  # close, at 2 m, the group of three: 30 frames each
    with FaceMesh(threads=1, redetect_every=5) as mesh:
        ids = [[f.track_id for f in mesh.process(rgb(frame), track=True, allow_fallback=False)] for frame in frames]
    group = ids[60:]
    assert all(len(i) == 3 for i in group[1:])
    assert len({tuple(i) for i in group[1:]}) == 1  # the same three ids for the whole group scene
    assert len(set(group[-1])) == 3 and min(group[-1]) > max(ids[0])  # new people, new numbers
    with FaceMesh(threads=1) as mesh:  # unrelated images: numbered afresh each time
        assert [f.track_id for f in mesh.process(rgb(frames[-1]))] == [f.track_id for f in mesh.process(rgb(frames[-1]))]


def test_total_time_counts_each_stage_once(grace_hopper):
    from edge.pipeline import STAGES, Pipeline

    with Pipeline(threads=1) as pipeline:
        timings = pipeline.analyze(grace_hopper).timings_ms
    assert {"detect_near", "detect_far", "detect_tiles"} <= set(timings)
    assert abs(timings["total"] - sum(timings[s] for s in STAGES)) < 1e-9
    assert timings["detect"] >= timings["detect_near"] + timings["detect_far"] + timings["detect_tiles"] - 1e-6


def test_a_portrait_with_its_face_painted_out_has_no_face(grace_hopper):
    painted = grace_hopper.copy()
    painted[100:360, 140:380] = painted[100:360, 140:380].mean(axis=(0, 1)).astype(np.uint8)
    with FaceMesh(threads=1) as mesh:  # every pass, the far tiles included: the flag and the uniform are not faces
        assert mesh.process(rgb(painted), allow_fallback=False) == []


@pytest.mark.parametrize("width, height, side", [(640, 480, 352), (640, 480, 256), (1280, 960, 704), (1280, 960, 512), (360, 480, 198)])
def test_tiles_cover_the_band_with_overlap(width, height, side):
    from edge.vision.faces import TILE_BAND, tiles

    regions = tiles(width, height, side)
    xs = sorted({(x0, x1) for x0, _, x1, _ in regions})
    assert xs[0][0] == 0 and xs[-1][1] == width
    assert all(b[0] <= a[1] - 0.15 * side for a, b in zip(xs, xs[1:]))  # neighbours overlap
    top, bottom = min(r[1] for r in regions), max(r[3] for r in regions)
    if width >= height:  # the middle of the frame, where a far face at eye level is
        assert top <= height * (1 - TILE_BAND) / 2 + 0.05 * side and bottom >= height * (1 + TILE_BAND) / 2 - 0.05 * side
    else:
        assert (top, bottom) == (0, height)
    assert all(x1 - x0 == side and y1 - y0 == side for x0, y0, x1, y1 in regions)


def test_detector_also_looks_at_the_raw_frame(grace_hopper):
    from edge.vision.faces import FaceDetector

    blank = np.zeros_like(grace_hopper)
    with FaceMesh(threads=1) as mesh:
        assert mesh.detector(rgb(blank)) == []
        found = mesh.detector(rgb(blank), also=rgb(grace_hopper))
        assert max(d.score for d in found) > 0.9  # her face, found in the second image only
    assert isinstance(mesh.detector, FaceDetector)


class _Given:
    """A detector that finds exactly the detections it is given (the FaceMesh side of the weak rule)."""

    min_score = 0.5

    def __init__(self, *detections) -> None:
        self.detections = list(detections)

    def __call__(self, rgb, timings=None, also=None):
        return list(self.detections)

    def close(self) -> None:
        pass


def test_a_weak_detection_is_a_face_only_where_the_mesh_is_sure_and_no_other_face_is(grace_hopper):
    import dataclasses

    from edge.vision.faces import SURE_PRESENCE, Detection

    frame = rgb(grace_hopper)
    with FaceMesh(threads=1) as mesh:
        real = max(mesh.detector(frame), key=lambda d: d.score)
        mesh.detector.close()

        def lowered(fraction: float) -> Detection:  # her chin and collar: the mesh sees a face there too
            shift = np.float32([0, (real.box[3] - real.box[1]) * fraction])
            return Detection(box=real.box + np.tile(shift, 2), keypoints=real.keypoints + shift, score=0.35)

        mesh.detector = _Given(dataclasses.replace(real, score=0.35))
        faces = mesh.process(frame, allow_fallback=False)
        assert len(faces) == 1 and faces[0].weak and faces[0].score >= SURE_PRESENCE
        mesh.detector = _Given(real, lowered(0.6))  # presence 1.0, shares 0.44 of her face
        assert [f.weak for f in mesh.process(frame, allow_fallback=False)] == [False]
        mesh.detector = _Given(lowered(0.7))  # presence 0.62: enough for a sure detection, not for a weak one
        assert mesh.process(frame, allow_fallback=False) == []


def test_weak_detections_come_after_and_apart_from_the_sure_ones():
    from edge.vision.faces import FaceDetector

    def box(x0, y0, x1, y1):
        b = np.float32([x0, y0, x1, y1])
        kps = np.float32([[x0 + 0.3 * (x1 - x0), y0 + 0.4 * (y1 - y0)], [x0 + 0.7 * (x1 - x0), y0 + 0.4 * (y1 - y0)]] + [[(x0 + x1) / 2, (y0 + y1) / 2]] * 4)
        return b, kps

    given = [(box(100, 100, 200, 200), 0.9),  # a face
             (box(104, 100, 204, 200), 0.45),  # a weak twin: must not pull the face's box
             (box(150, 150, 250, 250), 0.4),  # a weak box sharing 0.25 of it: a part of the face
             (box(400, 100, 480, 180), 0.4)]  # a weak face of its own

    def fake(rgb, min_score, region=None):
        kept = [(b, k, s) for (b, k), s in given if s >= min_score]
        return (np.float32([b for b, _, _ in kept]).reshape(-1, 4), np.float32([k for _, k, _ in kept]).reshape(-1, 6, 2),
                np.float32([s for _, _, s in kept]))

    frame = np.zeros((480, 640, 3), np.uint8)
    for weak_score, expected in ((None, [0.9]), (0.3, [0.9, 0.4])):
        detector = FaceDetector(threads=1, passes=("far",), weak_score=weak_score)
        detector._far.close()
        detector._far = fake
        found = detector(frame)
        assert [round(d.score, 2) for d in found] == expected
        np.testing.assert_array_equal(found[0].box, [100, 100, 200, 200])
        if weak_score is not None:
            np.testing.assert_array_equal(found[1].box, [400, 100, 480, 180])


def test_reported_boxes_lie_in_the_image_and_a_fallback_is_the_whole_image(grace_hopper):
    """A face cut by the image's edge is boxed up to that edge, not past it (the mesh runs past it, to
    negative x/y); a face read from the whole image (not detected) reports the whole image as its box."""
    from edge.pipeline import Pipeline

    with Pipeline(threads=1) as pipeline:
        x, y, w, h = pipeline.analyze(grace_hopper).faces[0].box
        for image, edge in ((grace_hopper[:, x + w // 3 :], 0), (grace_hopper[y + h // 3 :], 1)):  # cut at left, at top
            faces = pipeline.analyze(np.ascontiguousarray(image)).faces
            assert len(faces) == 1 and not faces[0].fallback
            box = faces[0].box
            assert box[edge] == 0 and min(box) >= 0
            assert box[0] + box[2] <= image.shape[1] and box[1] + box[3] <= image.shape[0]
        crop = cv2.resize(cv2.cvtColor(grace_hopper[140:330, 170:350], cv2.COLOR_BGR2GRAY), (48, 40), interpolation=cv2.INTER_AREA)
        pipeline.mesh.detector.min_score, pipeline.mesh.detector.weak_score = 1.01, None  # a detector that never fires: the mesh is laid on the whole image
        faces = pipeline.analyze(crop).faces
    assert len(faces) == 1 and faces[0].fallback and faces[0].aligned
    assert faces[0].box == (0, 0, 48, 40)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header says width×height, with a few bytes of pixel data: what a decompression bomb
    looks like to anything that reads only the header."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("width, height, message", [
    (8000, 8000, "8000×8000 is too large (over the 40,000,000 pixel limit)"),
    (16000, 16000, "256,000,000 pixels is too large (over the 40,000,000 pixel limit)"),  # past Pillow's own limit
])
def test_an_image_over_the_pixel_limit_is_refused_from_its_header(monkeypatch, tmp_path, width, height, message):
    """Refused before a pixel is decoded: a 263 KB 16000×16000 PNG used to take 4 s and 1.6 GB first.
    Past twice Pillow's own limit its refusal used to quote Pillow's sentence, with a second limit
    (178956970 pixels) beside ours and "DOS attack"; now the same words as any image over ours."""
    from edge import images
    from edge.errors import ImageError

    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(width, height))
    monkeypatch.setattr(images.cv2, "imdecode", lambda *a: pytest.fail("decoded before the header was checked"))
    with pytest.raises(ImageError) as err:
        images.read(path)
    assert message in str(err.value), err.value
    assert str(path) in str(err.value) and "resize it below 40 MP" in str(err.value) and "\n" not in str(err.value)
    assert "178956970" not in str(err.value) and "attack" not in str(err.value)


def test_a_large_jpeg_is_decoded_at_reduced_scale(tmp_path, grace_hopper):
    from edge import images

    path = tmp_path / "big.jpg"
    cv2.imwrite(str(path), cv2.resize(grace_hopper, (5400, 3601)), [cv2.IMWRITE_JPEG_QUALITY, 80])
    frame, size = images.read_scaled(path, 2560)
    assert frame.shape == (1801, 2700, 3) and size == (5400, 3601)  # 1/2 keeps 2700 ≥ 2560; 1/4 would not
    assert images.read_scaled(path, 1000)[0].shape == (901, 1350, 3)
    assert images.read(path).shape == (3601, 5400, 3)  # export and the server still get every pixel
    png = tmp_path / "big.png"
    cv2.imwrite(str(png), cv2.resize(grace_hopper, (2700, 1801)))
    assert images.read_scaled(png, 1000)[0].shape == (1801, 2700, 3)  # no scaled decoding in PNG: read whole


def test_a_reduced_jpeg_turned_by_exif_reports_its_upright_size(tmp_path):
    from PIL import Image

    from edge import images

    path = tmp_path / "portrait.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was held upright; viewers turn the 6000×4000 picture 90°
    Image.new("RGB", (6000, 4000), (120, 90, 60)).save(path, exif=exif, quality=70)
    frame, size = images.read_scaled(path, 2560)
    assert frame.shape[:2] == (3000, 2000) and size == (4000, 6000)


def test_boxes_of_a_reduced_frame_are_given_in_the_image_pixels():
    from edge.results import FaceResult, FrameResult, Position

    face = FaceResult(box=(10, 20, 30, 40), label="happy", confidence=0.9, unsure=False, scores={}, position=Position(12, 1.0, 0.5), fallback=False)
    whole = dataclasses.replace(face, box=(0, 0, 1751, 1251), fallback=True)
    result = FrameResult(faces=(face, whole), lowlight=False)
    assert result.in_image((1751, 1251), (1751, 1251)) is result
    scaled = result.in_image((1751, 1251), (7001, 5001))
    assert scaled.faces[0].box == (40, 80, 120, 160)
    assert scaled.faces[1].box == (0, 0, 7001, 5001)  # the whole frame is the whole image, not 4 px past it


def test_reading_keeps_the_models_threshold_by_day_and_asks_more_or_says_too_dark_in_the_dark():
    import dataclasses

    from edge.config import LightConfig
    from edge.results import FaceResult, FrameResult, Position, reading, too_dark

    light = LightConfig()
    day, dim = light.readable_noise - 1.0, light.readable_noise + 3.0
    assert reading(0.56, day, 0.55, light) == (False, True)  # the sidecar threshold alone
    assert reading(0.54, day, 0.55, light) == (True, True)
    assert reading(0.56, dim, 0.55, light) == (True, True)  # same confidence, noisier face: not sure
    assert reading(0.99, light.unreadable_noise + 0.1, 0.55, light) == (True, False)
    face = FaceResult(box=(0, 0, 48, 48), label="happy", confidence=0.99, unsure=True, scores={},
                      position=Position(12, 1.0, 0.5), fallback=False, readable=False)
    frame = FrameResult(faces=(face,), lowlight=False, brightness=120.0)
    assert too_dark(frame, 12.0, 11.5)  # a face was found, but nothing in it can be read
    readable = dataclasses.replace(frame, faces=(face, dataclasses.replace(face, readable=True)))
    assert not too_dark(readable, 12.0, 11.5)


def test_a_small_face_at_two_electrons_is_too_dark_and_by_day_the_models_own_threshold(grace_hopper):
    from edge.pipeline import Pipeline
    from edge.results import too_dark
    from tests.conftest import MODEL_SIDECAR
    from export.darken import render_camera

    small = cv2.resize(grace_hopper, (96, 120), interpolation=cv2.INTER_AREA)  # her face about 48 px wide
    with Pipeline(model=MODEL_SIDECAR, threads=1) as pipeline:
        by_day = pipeline.analyze(small, lowlight=False, assume_face=True).faces[0]
        assert by_day.readable and by_day.noise < pipeline.light.readable_noise
        assert by_day.unsure == (by_day.confidence < pipeline.expression.unsure_threshold)
        dark = [pipeline.analyze(render_camera(small, 2.0, np.random.default_rng(seed)), lowlight=None, assume_face=True)
                for seed in range(3)]
    assert all(too_dark(r, 12.0, 11.5) and not any(f.readable for f in r.faces) for r in dark)
