"""Synthetic face masks: geometry on a real face (FaceMesh on grace_hopper.jpg), determinism,
batch mixing and the canonical fallback."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.errors import ConfigError, ImageError
from export import masks
from export.masks import MaskKind, MaskStyle

EYE_POINTS = (33, 133, 362, 263, 70, 300)
MOUTH_POINTS = (13, 14, 61, 291)
EYE_CONTOUR = (7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246,
               249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466)


@pytest.fixture(scope="module")
def hopper() -> tuple[np.ndarray, np.ndarray]:
    return masks.grace_hopper()


@pytest.fixture(scope="module")
def faces(hopper) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The same real face as a 48×48 FER-like gray crop and in a 480×640 BGR camera frame."""
    image, lm = hopper
    crop, crop_lm = masks.fer_crop(image, lm)
    k = 480 / image.shape[0]
    small = cv2.resize(image, (round(image.shape[1] * k), 480), interpolation=cv2.INTER_AREA)
    frame = np.full((480, 640, 3), 90, np.uint8)
    x0 = (640 - small.shape[1]) // 2
    frame[:, x0:x0 + small.shape[1]] = small
    frame_lm = lm * k
    frame_lm[:, 0] += x0
    return {"fer48": (crop, crop_lm), "bgr640": (frame, frame_lm)}


def _styles(count: int) -> list[tuple[MaskStyle, np.random.Generator]]:
    out = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        out.append((masks.random_style(rng), rng))
    return out


def _patch(image: np.ndarray, point: np.ndarray, radius: int) -> np.ndarray:
    x, y = (int(round(v)) for v in point[:2])
    return image[max(y - radius, 0):y + radius + 1, max(x - radius, 0):x + radius + 1]


def _at(image: np.ndarray, point: np.ndarray) -> float:
    """The pixel under a landmark (clamped to the image: the chin may sit on the last row)."""
    x = min(max(int(round(float(point[0]))), 0), image.shape[1] - 1)
    y = min(max(int(round(float(point[1]))), 0), image.shape[0] - 1)
    return image[y, x]


def _radius(name: str) -> int:
    return 2 if name == "fer48" else 6


@pytest.mark.parametrize("name", ["fer48", "bgr640"])
@pytest.mark.parametrize("kind", list(MaskKind))
def test_shape_dtype_kept_and_input_untouched(faces, name, kind):
    image, lm = faces[name]
    before = image.copy()
    style = MaskStyle(kind=kind, pleats=3 if kind is MaskKind.SURGICAL else 0)
    out = masks.apply_mask(image, lm, style, np.random.default_rng(1))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(image, before)
    assert not np.shares_memory(out, image)
    assert (out != image).any()


@pytest.mark.parametrize("name", ["fer48", "bgr640"])
def test_eyes_identical_mouth_covered_for_random_styles(faces, name):
    image, lm = faces[name]
    radius = _radius(name)
    lowest_eye_row = int(np.floor(lm[list(EYE_CONTOUR), 1].max() + 1))
    mouth_changes = []
    for style, rng in _styles(120):
        out = masks.apply_mask(image, lm, style, rng)
        diff = np.abs(out.astype(np.int16) - image.astype(np.int16))
        diff = diff.max(axis=2) if diff.ndim == 3 else diff
        for index in EYE_POINTS:
            assert _patch(diff, lm[index], radius).max() == 0, (style, index)
        # Everything from the top of the image down to a pixel below the lowest eyelid point.
        assert diff[: lowest_eye_row + 1].max() == 0, style
        change = np.mean([_patch(diff, lm[i], radius).mean() for i in MOUTH_POINTS])
        mouth_changes.append(change)
        _, matte = masks.render_mask(image.shape, lm, style, rng)
        for index in MOUTH_POINTS:
            assert _at(matte, lm[index]) > 0.99, (style, index)
    assert min(mouth_changes) > 10
    assert np.median(mouth_changes) > 30


@pytest.mark.parametrize("name", ["fer48", "bgr640"])
def test_worn_masks_reach_the_chin_and_follow_the_jaw(faces, name):
    image, lm = faces[name]
    face_height = lm[152, 1] - lm[[33, 263], 1].mean()
    below_chin = lm[152, :2] + (0, 0.35 * face_height)
    nose_tip = lm[1, :2]
    # Points just outside the jaw, along the line from the nose tip through jaw landmarks.
    outside_jaw = [lm[i, :2] + 0.45 * (lm[i, :2] - nose_tip) for i in (172, 136, 397, 365)]
    for style, rng in _styles(80):
        if style.kind is MaskKind.OCCLUSION:
            continue
        _, matte = masks.render_mask(image.shape, lm, style, rng)
        for index in (2, 13, 152, 61, 291):
            assert _at(matte, lm[index]) > 0.9, (style, index)
        for point in [below_chin, *outside_jaw]:
            x, y = (int(round(v)) for v in point)
            if 0 <= y < matte.shape[0] and 0 <= x < matte.shape[1]:
                assert matte[y, x] == 0, (style, point)
        top_row = np.flatnonzero(matte.max(axis=1) > 0)[0]
        assert top_row > lm[list(EYE_CONTOUR), 1].max(), style
        assert top_row <= lm[1, 1] + 1, style  # the top edge is never below the nose tip


def test_occlusion_covers_everything_below_the_nose(faces):
    image, lm = faces["fer48"]
    style = MaskStyle(kind=MaskKind.OCCLUSION, height=1.0, noise=0.0, shading=0.0, edge_blur=0.0,
                      value=0.0, saturation=0.0)
    out = masks.apply_mask(image, lm, style)
    assert out[int(lm[2, 1]) + 2:].max() == 0
    assert np.array_equal(out[: int(lm[1, 1]) - 1], image[: int(lm[1, 1]) - 1])


def test_grayscale_output_is_gray_and_colour_output_uses_the_colour(faces):
    frame, lm = faces["bgr640"]
    red = MaskStyle(kind=MaskKind.CLOTH, hue=0.0, saturation=1.0, value=1.0, pleats=0,
                    noise=0.0, shading=0.0, straps=False)
    out = masks.apply_mask(frame, lm, red)
    x, y = (int(round(v)) for v in lm[14, :2])
    b, g, r = out[y, x].astype(int)
    assert r > 200 and g < 40 and b < 40
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    out_gray = masks.apply_mask(gray, lm, red)
    assert out_gray.ndim == 2
    assert abs(int(out_gray[y, x]) - round(0.299 * 255)) <= 2


def test_mask_batch_is_deterministic_and_seed_dependent(faces):
    crop, lm = faces["fer48"]
    images = np.repeat(crop[None], 12, axis=0)
    lms = np.repeat(lm[None], 12, axis=0)
    a, masked_a = masks.mask_batch(images, lms, seed=7, fraction=0.5)
    b, masked_b = masks.mask_batch(images, lms, seed=7, fraction=0.5)
    c, masked_c = masks.mask_batch(images, lms, seed=8, fraction=0.5)
    assert np.array_equal(a, b) and np.array_equal(masked_a, masked_b)
    assert not np.array_equal(a, c)
    assert np.array_equal(images, np.repeat(crop[None], 12, axis=0))


@pytest.mark.parametrize("fraction, expected", [(0.5, 100), (1.0, 200), (0.0, 0), (0.25, 50)])
def test_mask_batch_masks_the_requested_fraction(faces, fraction, expected):
    crop, lm = faces["fer48"]
    images = np.repeat(crop[None], 200, axis=0)
    lms = np.repeat(lm[None], 200, axis=0)
    out, was_masked = masks.mask_batch(images, lms, seed=3, fraction=fraction)
    assert was_masked.dtype == bool and was_masked.sum() == expected
    changed = (out != images).reshape(200, -1).any(axis=1)
    assert np.array_equal(changed, was_masked)


def test_missing_landmarks_fall_back_to_the_canonical_crop(faces):
    crop, _ = faces["fer48"]
    style = MaskStyle(kind=MaskKind.SURGICAL)
    with_none = masks.apply_mask(crop, None, style)
    nan = np.full((468, 3), np.nan, np.float32)
    assert np.array_equal(masks.apply_mask(crop, nan, style), with_none)
    images = np.stack([crop, crop])
    lms = np.stack([nan, nan])
    out, _ = masks.mask_batch(images, lms, seed=0, fraction=1.0)
    assert (out != images).any()
    canon = masks.canonical_landmarks(48, 48)
    eye_rows = int(np.floor(np.nanmax(canon[list(EYE_CONTOUR), 1]) + 1))
    for style, rng in _styles(60):
        out = masks.apply_mask(crop, None, style, rng)
        assert np.array_equal(out[: eye_rows + 1], crop[: eye_rows + 1]), style
        assert np.abs(out[36:44, 16:32].astype(int) - crop[36:44, 16:32]).mean() > 10, style


def test_canonical_geometry_matches_fer2013_crops():
    lm = masks.canonical_landmarks(48, 48) / 48
    assert lm[[33, 263], 1].mean() == pytest.approx(0.385, abs=0.01)
    assert lm[1, 1] == pytest.approx(0.62, abs=0.03)
    assert lm[152, 1] == pytest.approx(0.99, abs=0.02)
    assert lm[454, 0] - lm[234, 0] == pytest.approx(0.76, abs=0.01)
    assert np.isnan(lm[10]).all()  # forehead: not part of the table


def test_random_styles_cover_every_kind_and_stay_valid():
    styles = [masks.random_style(np.random.default_rng(seed)) for seed in range(300)]
    assert {s.kind for s in styles} == set(masks.SHIPPED_KINDS)
    assert any(s.straps for s in styles) and any(not s.straps for s in styles)
    assert all(s.pleats >= 2 for s in styles if s.kind is MaskKind.SURGICAL)
    heights = [s.height for s in styles]
    assert min(heights) < 0.1 and max(heights) > 0.7


def test_bad_inputs_raise_clear_errors(faces):
    crop, lm = faces["fer48"]
    with pytest.raises(ImageError, match="uint8"):
        masks.apply_mask(crop.astype(np.float32), lm, MaskStyle())
    with pytest.raises(ImageError, match="landmarks"):
        masks.apply_mask(crop, lm[:100], MaskStyle())
    with pytest.raises(ConfigError, match="height"):
        MaskStyle(height=1.5)
    with pytest.raises(ConfigError, match="fraction"):
        masks.mask_batch(crop[None], lm[None], seed=0, fraction=1.5)
    with pytest.raises(ImageError, match="landmarks hold"):
        masks.mask_batch(np.stack([crop, crop]), lm[None], seed=0)


def test_preview_writes_a_contact_sheet(tmp_path):
    out = tmp_path / "sheet.png"
    assert masks.main(["--preview", str(out), "--fer", str(tmp_path / "missing.npz")]) == 0
    sheet = cv2.imread(str(out))
    assert sheet is not None and sheet.shape[0] > 400 and sheet.shape[1] > 1000


# ---------------------------------------------------------------------------------------------
# Mask families (issue #17): each renders, is repeatable, differs from the others, spares the eyes.

FAMILY_NAMES = list(masks.FAMILIES)


def _family_masks(image, lm, family: str, count: int) -> list[tuple[MaskStyle, np.ndarray, np.ndarray]]:
    out = []
    for seed in range(count):
        rng = np.random.default_rng([seed, 17])
        style = masks.family_style(family, rng)
        out.append((style, masks.apply_mask(image, lm, style, rng), masks.render_mask(image.shape, lm, style)[1]))
    return out


def test_there_are_at_least_six_families_and_unknown_names_fail():
    assert len(masks.FAMILIES) >= 6
    assert {"surgical", "kn95", "cloth", "polygon", "occluder"} <= set(masks.FAMILIES)
    with pytest.raises(ConfigError, match="mask family"):
        masks.family_style("balaclava", np.random.default_rng(0))
    with pytest.raises(ConfigError, match="mask family"):
        masks.mask_batch(np.zeros((2, 48, 48), np.uint8), None, seed=0, families=["balaclava"])


@pytest.mark.parametrize("name", ["fer48", "bgr640"])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_each_family_renders_over_the_mouth_and_spares_the_eyes(faces, name, family):
    image, lm = faces[name]
    lowest_eye_row = int(np.floor(lm[list(EYE_CONTOUR), 1].max() + 1))
    radius = _radius(name)
    covered = []
    for style, out, matte in _family_masks(image, lm, family, 25):
        assert style.family == family
        assert out.shape == image.shape and out.dtype == np.uint8
        diff = np.abs(out.astype(np.int16) - image.astype(np.int16))
        diff = diff.max(axis=2) if diff.ndim == 3 else diff
        assert diff.any(), style
        for index in EYE_POINTS:
            assert _patch(diff, lm[index], radius).max() == 0, (style, index)
        if not style.crooked:  # a crooked mask may rise at one side, but never over the eyelids
            assert diff[: lowest_eye_row + 1].max() == 0, style
        covered.append(np.mean([_at(matte, lm[i]) for i in MOUTH_POINTS]))
    assert np.mean(covered) > 0.6, family  # over the mouth, most of the time


def test_families_are_repeatable_per_seed_and_differ_from_each_other(faces):
    image, lm = faces["fer48"]
    x = np.stack([image] * 12)
    lms = np.stack([lm] * 12)
    batches = {}
    for family in FAMILY_NAMES:
        a, _ = masks.mask_batch(x, lms, seed=5, fraction=1.0, families=[family])
        b, _ = masks.mask_batch(x, lms, seed=5, fraction=1.0, families=[family])
        c, _ = masks.mask_batch(x, lms, seed=6, fraction=1.0, families=[family])
        assert np.array_equal(a, b) and not np.array_equal(a, c), family
        batches[family] = a
    for i, f in enumerate(FAMILY_NAMES):
        for g in FAMILY_NAMES[i + 1:]:
            assert np.abs(batches[f].astype(np.int16) - batches[g]).mean() > 3, (f, g)
    mixed, _ = masks.mask_batch(x, lms, seed=5, fraction=1.0, families=FAMILY_NAMES[:2])
    assert not np.array_equal(mixed, batches[FAMILY_NAMES[0]])


def test_the_shipped_generator_is_unchanged_by_the_families(faces):
    """families=None is random_style, exactly what the shipped model was trained and tested with."""
    image, lm = faces["fer48"]
    x = np.stack([image] * 4)
    default, _ = masks.mask_batch(x, np.stack([lm] * 4), seed=3, fraction=1.0)
    by_hand = [masks.apply_mask(image, lm, masks.random_style(r), r) for r in
               (np.random.default_rng([3, i]) for i in range(4))]
    assert np.array_equal(default, np.stack(by_hand))


def _top_row(matte: np.ndarray) -> int:
    return int(np.flatnonzero(matte.max(axis=1) > 0.5)[0])


def test_coverage_families_reach_up_under_the_eyes_or_stay_below_the_nose(faces):
    image, lm = faces["bgr640"]
    lid = lm[list(EYE_CONTOUR), 1].max()
    nose_tip = lm[1, 1]
    span = nose_tip - lid

    def centre_top(family: str) -> list[float]:
        tops = []
        for style, _, matte in _family_masks(image, lm, family, 20):
            if style.crooked or style.kind in (MaskKind.HAND,):
                continue
            x = int(round(lm[1, 0]))
            tops.append((np.flatnonzero(matte[:, x] > 0.5)[0] - lid) / span)
        return tops

    high, low = centre_top("high"), centre_top("low_crooked")
    assert max(high) < 0.35  # the top edge near the nose bridge, just under the eyes
    assert np.median(low) > 1.0  # worn below the nose tip
    polygon = centre_top("polygon")
    assert np.median(polygon) < 0.4  # the other generator's masks reach the nose bridge


def test_family_preview_writes_one_row_per_family(tmp_path):
    out = tmp_path / "families.png"
    assert masks.main(["--preview", str(out), "--families", "--fer", str(tmp_path / "missing.npz")]) == 0
    sheet = cv2.imread(str(out))
    assert sheet is not None and sheet.shape[0] > 150 * len(masks.FAMILIES)
