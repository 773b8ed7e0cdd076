"""export.scene: the distance renderer's geometry and camera, the found rule, and one real run."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from export.masks import canonical_landmarks
from export.scene import CHEEK_LEFT, CHEEK_RIGHT, Camera, found, render_frame

CAMERA = Camera(width=640, height=480)


def synthetic(face: int, canvas: tuple[int, int] = (900, 1200), at: tuple[int, int] = (500, 350)):
    """A gray canvas with a white block over a face×face canonical face whose mesh box spans exactly
    cheek to cheek (so the box width is the face width), and those landmarks."""
    lm = canonical_landmarks(face, face)
    lm[:, 0] = np.clip(lm[:, 0], lm[CHEEK_LEFT, 0], lm[CHEEK_RIGHT, 0])
    lm[:, 0] += at[0]
    lm[:, 1] += at[1]
    image = np.full((*canvas, 3), 40, np.uint8)
    x0, y0 = np.nanmin(lm[:, :2], axis=0)
    x1, y1 = np.nanmax(lm[:, :2], axis=0)
    image[int(round(y0)):int(round(y1)) + 1, int(round(x0)):int(round(x1)) + 1] = 230
    return image, lm


@pytest.mark.parametrize("face", [60, 200])  # upscaled at near distances / always downscaled
@pytest.mark.parametrize("distance", [0.5, 1.0, 2.0, 4.0])
def test_expected_box_has_the_pinhole_width_and_covers_the_face(face, distance):
    image, lm = synthetic(face)
    frame, (x, y, w, h) = render_frame(image, lm, distance, CAMERA, np.random.default_rng(1))
    assert frame.shape == (CAMERA.height, CAMERA.width, 3) and frame.dtype == np.uint8
    want = CAMERA.focal_px * 0.14 / distance
    assert abs(w - want) <= 1.0
    cx, cy = x + w / 2, y + h / 2  # the centre lies in the central 60 %
    assert 0.2 * CAMERA.width - 1 <= cx <= 0.8 * CAMERA.width + 1
    assert 0.2 * CAMERA.height - 1 <= cy <= 0.8 * CAMERA.height + 1
    # The white block (the mesh box in the photo) lands where the expected box says.
    ys, xs = np.nonzero(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) > 135)
    tolerance = 1.5 + 0.02 * w  # blur, JPEG and the block's whole-pixel edges
    assert abs(xs.min() - x) <= tolerance and abs(xs.max() - (x + w)) <= tolerance
    assert abs(ys.min() - y) <= tolerance and abs(ys.max() - (y + h)) <= tolerance


def test_focal_length_and_face_sizes():
    assert CAMERA.focal_px == pytest.approx(320 / np.tan(np.radians(33)))
    assert CAMERA.face_px(1.0) == pytest.approx(69.0, abs=0.5)
    big = Camera(width=1280, height=960)
    assert big.face_px(2.0) == pytest.approx(2 * CAMERA.face_px(2.0))
    image, lm = synthetic(100)
    frame, box = render_frame(image, lm, 2.0, big, np.random.default_rng(0))
    assert frame.shape == (960, 1280, 3) and abs(box[2] - big.face_px(2.0)) <= 1.0
    assert json.dumps(big.to_json())


def test_same_seed_same_frame_and_conditions_share_the_placement():
    image, lm = synthetic(120)
    a, box_a = render_frame(image, lm, 1.0, CAMERA, np.random.default_rng(7))
    b, box_b = render_frame(image, lm, 1.0, CAMERA, np.random.default_rng(7))
    c, box_c = render_frame(image, lm, 1.0, CAMERA, np.random.default_rng(8))
    assert np.array_equal(a, b) and box_a == box_b
    assert box_c != box_a
    for masked, dark in ((True, False), (False, True), (True, True)):
        _, box = render_frame(image, lm, 1.0, CAMERA, np.random.default_rng(7), masked=masked, dark=dark)
        assert box == box_a


def test_dark_frames_are_darker_and_masks_change_the_lower_face():
    image, lm = synthetic(150)
    day, (x, y, w, h) = render_frame(image, lm, 0.75, CAMERA, np.random.default_rng(3))
    dark, _ = render_frame(image, lm, 0.75, CAMERA, np.random.default_rng(3), dark=True)
    masked, _ = render_frame(image, lm, 0.75, CAMERA, np.random.default_rng(3), masked=True)
    assert dark.mean() < 0.5 * day.mean()
    diff = np.abs(masked.astype(int) - day.astype(int)).sum(axis=2)
    x0, y0, x1, y1 = int(x), int(y), int(x + w), int(y + h)
    inside = diff[y0 + int(0.6 * h):y1, x0:x1].mean()
    outside = diff.copy()
    outside[max(0, y0 - int(h)):y1 + int(h), max(0, x0 - int(w)):x1 + int(w)] = 0  # ear loops may leave the box
    assert inside > 10 * max(outside.mean(), 0.1)


def test_found_rule():
    expected = (100.0, 100.0, 50.0, 60.0)
    assert found(expected, [(100, 100, 50, 60)])
    assert found(expected, [(0, 0, 10, 10), (110, 105, 40, 55)])  # any one matching face
    assert not found(expected, [])
    assert not found(expected, [(160, 100, 50, 60)])  # centre right of the box
    assert not found(expected, [(100, 100, 24, 60)])  # under half as wide
    assert found(expected, [(100, 100, 25, 60)])  # exactly half
    assert not found(expected, [(75, 70, 101, 120)])  # over twice as wide (centre inside)
    assert found(expected, [(75, 70, 100, 120)])  # exactly twice


def test_missing_photo_folder_is_one_clear_line(tmp_path, capsys):
    from export.__main__ import main

    assert main(["scene", "--photos", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--photos" in err and "nowhere" in err


def test_whole_command_on_one_photo(tmp_path, grace_hopper, capsys):
    """The real pipeline on one real photo (matplotlib's Grace Hopper) at 1 m, day."""
    from export.__main__ import main

    cv2.imwrite(str(tmp_path / "hopper.jpg"), grace_hopper)
    (tmp_path / "dicm_skip.jpg").write_bytes((tmp_path / "hopper.jpg").read_bytes())  # never a source
    frames = tmp_path / "frames"
    code = main(["scene", "--photos", str(tmp_path), "--distances", "1", "--conditions", "day",
                 "--repeats", "1", "--json", "--save-frames", str(frames), "--out", str(tmp_path / "r.json")])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in out["photos"]] == ["hopper.jpg"]
    assert out["camera"]["hfov_deg"] == 66.0 and out["camera"]["width"] == 1280  # the glasses' own default
    cell = out["rates"]["day"]["1"]
    assert cell["n"] == 1 and cell["found"] == 1.0 and cell["faces_per_frame"] >= 1 and cell["ms"] > 0
    assert len(list(frames.glob("*.jpg"))) == 1
    assert json.loads((tmp_path / "r.json").read_text())["rates"] == out["rates"]


def test_a_masked_face_at_3m_the_detector_doubts_is_found():
    """aizoo_mask_demo2.jpg masked at 3 m (its second frame): the detector scores the face 0.34, the mesh 0.99."""
    from edge.pipeline import Pipeline
    from export.scene import SHARED_FACES, _seed, main_faces

    photo = SHARED_FACES / "aizoo_mask_demo2.jpg"
    if not photo.exists():
        pytest.skip("needs ../shared/data/faces")
    (source,), _ = main_faces([photo])
    frame, expected = render_frame(source.image, source.landmarks, 3.0, Camera(), _seed(0, 0, 3.0, 1), masked=True)
    with Pipeline(threads=1) as pipeline:
        faces = pipeline.analyze(frame, lowlight=None).faces
    assert found(expected, [f.box for f in faces if not f.fallback])
