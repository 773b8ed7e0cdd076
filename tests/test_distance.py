"""`export distance`: the camera degradation and the "reads reliably up to" rule (fast, no ../shared)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from export.distance import (
    CROP,
    MAX_SIDE,
    MIN_SIDE,
    camera_crop,
    degrade,
    delivered_side,
    pipeline_image,
    reliable_up_to,
    scale_factor,
)


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    ys, xs = np.mgrid[0:CROP, 0:CROP]
    face = 128 + 60 * np.sin(xs / 5.0) * np.cos(ys / 7.0)  # smooth, mid-grey: no clipping at either end
    return np.clip(face, 0, 255).astype(np.uint8)


def test_scale_factor_follows_the_pinhole():
    f640 = 320 / math.tan(math.radians(33))
    assert scale_factor(1.0, 640) == pytest.approx(f640 * 0.14 / 40)
    assert scale_factor(2.0, 1280) == pytest.approx(scale_factor(1.0, 640))  # twice the pixels, twice as far
    assert scale_factor(4.0, 640) == pytest.approx(scale_factor(1.0, 640) / 4)


@pytest.mark.parametrize(
    "distance, width, side",
    [
        (0.5, 640, CROP), (1.0, 640, CROP), (1.5, 640, CROP),  # s ≥ 1: the crop as is
        (2.0, 640, 41), (3.0, 640, 28), (4.0, 640, 21),         # 34.5, 23.0, 17.3 px faces / 40 px
        (3.0, 1280, CROP), (4.0, 1280, 41),
        (20.0, 640, MIN_SIDE),                                   # round(48·0.086) = 4 → the 6 px floor
    ],
)
def test_delivered_size(crop, distance, width, side):
    assert delivered_side(scale_factor(distance, width)) == side
    out = degrade(crop, distance, width, seed=1, index=3)
    assert out.dtype == np.uint8 and out.shape == (side, side)  # default: the delivered pixels, not upsampled
    up = degrade(crop, distance, width, seed=1, index=3, resample="linear4")
    assert up.shape == ((CROP, CROP) if side == CROP else (min(4 * side, MAX_SIDE),) * 2)


def test_deterministic_for_a_seed(crop):
    for d in (1.0, 3.0):
        a = degrade(crop, d, 640, seed=7, index=5)
        assert np.array_equal(a, degrade(crop, d, 640, seed=7, index=5))
        assert not np.array_equal(a, degrade(crop, d, 640, seed=8, index=5))
        assert not np.array_equal(a, degrade(crop, d, 640, seed=7, index=6))
    # the same delivered size is the same pixels, whichever (width, distance) asked for it
    assert np.array_equal(degrade(crop, 2.0, 640, seed=7, index=5), degrade(crop, 4.0, 1280, seed=7, index=5))
    assert np.array_equal(degrade(crop, 0.5, 640, seed=7, index=5), degrade(crop, 1.5, 1280, seed=7, index=5))


def test_near_faces_keep_the_crop_plus_noise_only(crop):
    out = camera_crop(crop, 1.7, np.random.default_rng(0))
    assert out.shape == crop.shape
    diff = out.astype(np.float64) - crop
    assert abs(diff.mean()) < 0.3 and 1.6 < diff.std() < 2.4  # sigma 2 grey levels, nothing else
    assert np.array_equal(pipeline_image(out, "linear4"), out)  # never upsampled


def test_far_faces_are_area_shrunk_blurred_and_noisy(crop):
    import cv2

    s = 0.5
    out = camera_crop(crop, s, np.random.default_rng(0))
    assert out.shape == (24, 24)
    area = cv2.resize(crop.astype(np.float32), (24, 24), interpolation=cv2.INTER_AREA)
    blurred = cv2.GaussianBlur(area, (0, 0), 0.7, borderType=cv2.BORDER_REPLICATE)
    diff = out - blurred
    assert abs(diff.mean()) < 0.5 and 1.5 < diff.std() < 2.5
    assert np.abs(blurred - area).mean() > 0.5  # the blur did something at this scale


def test_colour_crops_keep_their_channels(crop):
    bgr = np.repeat(crop[:, :, None], 3, axis=2)
    assert degrade(bgr, 3.0, 640).shape == (28, 28, 3)


def test_reliable_up_to_on_a_hand_made_table():
    table = {0.5: 0.60, 0.75: 0.60, 1.0: 0.59, 1.5: 0.57, 2.0: 0.55, 3.0: 0.50, 4.0: 0.40}
    assert reliable_up_to(table) == 2.0  # bar 0.54: 2 m passes (0.55), 3 m does not
    assert reliable_up_to({**table, 2.0: 0.54}) == 2.0  # exactly on the bar passes
    assert reliable_up_to({**table, 3.0: 0.55}) == 3.0
    assert reliable_up_to({**table, 3.0: 0.55, 4.0: 0.60}) == 4.0
    # a dip ends the range even when a farther distance scrapes back above the bar
    assert reliable_up_to({**table, 1.5: 0.50, 2.0: 0.58}) == 1.0
    # nothing beyond the reference passes: the reference itself
    assert reliable_up_to({0.75: 0.6, 1.0: 0.3}) == 0.75
    # distances given as strings (JSON keys) work; no reference measurement → None
    assert reliable_up_to({"0.75": 0.6, "1": 0.58, "2": 0.2}) == 1.0
    assert reliable_up_to({1.0: 0.6, 2.0: 0.6}) is None
    # a nearer distance does not count, however good
    assert reliable_up_to({0.5: 0.9, 0.75: 0.6, 1.0: 0.5}) == 0.75


def test_other_geometries_are_refused():
    from edge.errors import EdgeError

    with pytest.raises(EdgeError):
        camera_crop(np.zeros((64, 64), np.uint8), 0.5, np.random.default_rng(0))


class _FakePipeline:
    """Stands in for edge.pipeline.Pipeline: 'happy' for faces of 41 px and more, 'sad' below; counts reads."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def analyze(self, image, lowlight=False, assume_face=False):
        from types import SimpleNamespace

        assert lowlight is False and assume_face is True  # read as export evaluate reads its faces
        side = image.shape[0]
        self.sizes.append(side)
        face = SimpleNamespace(box=(0, 0, side, side), label="happy" if side >= 41 else "sad",
                               fallback=False, aligned=True, unsure=side < 41)
        return SimpleNamespace(faces=(face,), lowlight=False)


def test_run_shares_evaluations_and_finds_the_reliable_distance(crop):
    from export.distance import run

    x = np.stack([crop] * 3)
    y = np.full(3, 3)  # happy
    pipeline = _FakePipeline()
    out = run(pipeline, {"unmasked": (x, y)}, [0.5, 0.75, 1.0, 2.0, 3.0, 4.0], [640, 1280])
    # delivered sides 48 (s ≥ 1), 41 (640 @ 2 m = 1280 @ 4 m), 28, 21, then the clean crops: 5 reads per face
    assert out["evaluated_sides"] == [48, 41, 28, 21]
    assert sorted(set(pipeline.sizes), reverse=True) == [48, 41, 28, 21] and len(pipeline.sizes) == 5 * 3
    rows = out["results"]["unmasked"]
    assert rows["640"]["2"]["side_px"] == 41 and rows["640"]["2"]["accuracy"] == 1.0
    assert rows["640"]["3"]["accuracy"] == 0.0 and rows["640"]["3"]["answered"] == 0.0
    assert rows["1280"]["4"]["face_px"] == rows["640"]["2"]["face_px"] == pytest.approx(34.5, abs=0.05)
    assert out["reliable_up_to"]["unmasked"] == {"640": 2.0, "1280": 4.0}
    assert out["clean_crops"]["unmasked"]["accuracy"] == 1.0
