"""`export saliency` (#20 item 2): occlusion sensitivity of the shipped model, the regions it is summed over, the command."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.results import LABELS
from edge.vision.upperface import SIZE, UpperFaceSample, landmark_features, sample_unaligned
from export.saliency import PATCH, STRIDE, mask_region, mass_shares, model_scorer, occlusion_map, regions

from .conftest import MODEL_SIDECAR


def _box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    part = np.zeros((SIZE, SIZE), bool)
    part[y0:y1, x0:x1] = True
    return part


@pytest.mark.parametrize("row, col", [(40, 24), (0, 0), (47, 47), (18, 15)])
def test_a_model_that_reads_one_pixel_gets_its_drop_there_and_nothing_beyond_the_square(row: int, col: int):
    """Every pixel, the corners too, is covered by the same number of squares: the map at the pixel a model
    reads is exactly the drop one square causes there, and nothing lies farther than a square away."""
    face = np.full((SIZE, SIZE), 100, np.uint8)
    face[row, col] = 250
    heat, whole = occlusion_map(face, lambda faces: faces[:, row, col] / 255.0)
    fill = round(float(face.mean()))
    assert whole == pytest.approx(250 / 255)
    assert heat[row, col] == pytest.approx((250 - fill) / 255, rel=1e-5)
    reach, sure = PATCH - 1, PATCH - STRIDE  # a square covering the pixel reaches this far; one always reaches that far
    assert np.all(heat[~_box(max(row - reach, 0), row + reach + 1, max(col - reach, 0), col + reach + 1)] == 0)
    assert np.all(heat[_box(max(row - sure, 0), row + sure + 1, max(col - sure, 0), col + sure + 1)] > 0)


def test_a_model_that_reads_the_mouth_puts_the_mass_on_the_mask_and_one_that_reads_the_eyes_on_the_eyes():
    rng = np.random.default_rng(0)
    face = rng.integers(60, 200, (SIZE, SIZE)).astype(np.uint8)
    mouth, eyes = _box(34, 42, 16, 32), _box(14, 22, 10, 38)

    def contrast(part: np.ndarray):
        return lambda faces: faces[:, part].astype(np.float64).std(axis=1) / 255.0  # a flat grey square removes texture

    near = {name: cv2.dilate(part.astype(np.uint8), np.ones((2 * PATCH - 1,) * 2, np.uint8)) > 0 for name, part in (("mouth", mouth), ("eyes", eyes))}
    for name, part in (("mouth", mouth), ("eyes", eyes)):
        heat, _ = occlusion_map(face, contrast(part))
        shares = mass_shares(heat, {"there": near[name], "rest": ~near[name]})
        assert shares == {"there": pytest.approx(1.0), "rest": 0.0}
        other = "eyes" if name == "mouth" else "mouth"
        assert mass_shares(heat, {"other": near[other] & ~near[name], "rest": ~(near[other] & ~near[name])})["other"] == 0.0


class _LandmarkBranchOnly:
    """A fake expression model that reads only the HOG of the landmark branch (as if the image input were ignored)."""

    flip = False

    def __init__(self, reference: np.ndarray) -> None:
        self.reference = reference
        self.seen: list[UpperFaceSample] = []

    def logits(self, samples):
        self.seen += samples
        distance = np.array([np.abs(s.features[:, :72] - self.reference[:, :72]).sum() for s in samples])
        return np.stack([-distance, np.zeros_like(distance)], axis=1)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def test_the_landmark_branch_sees_the_occluded_face_too(grace_hopper):
    """Each occluded copy's HOG comes from the copy: a model reading only the landmark branch still gets a map,
    on the eyes and brows (occluding the image input alone would leave it blank)."""
    gray = cv2.cvtColor(grace_hopper, cv2.COLOR_BGR2GRAY)
    sample = sample_unaligned(cv2.resize(gray[140:330, 170:350], (SIZE, SIZE), interpolation=cv2.INTER_AREA))
    model = _LandmarkBranchOnly(sample.features)
    heat, p = occlusion_map(sample.face, model_scorer(model, sample, 0))
    assert p == pytest.approx(0.5)
    copy = model.seen[5]
    assert not np.array_equal(copy.face, sample.face)
    np.testing.assert_array_equal(copy.features, landmark_features(copy.face, sample.landmarks))
    lower = _box(38, SIZE, 0, SIZE)  # more than a square below the lowest landmark
    assert heat.max() > 0.1 and np.all(heat[lower] == 0)


def test_regions_split_the_face_into_mask_eyes_and_the_rest(grace_hopper):
    from export.masks import MaskStyle, apply_mask

    gray = cv2.cvtColor(grace_hopper, cv2.COLOR_BGR2GRAY)
    plain = cv2.resize(gray[140:330, 170:350], (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    masked = apply_mask(plain, None, MaskStyle())
    mask = mask_region(plain, masked)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
    rows = np.flatnonzero((mask > 127).any(axis=1))
    assert rows.min() > 20 and rows.max() == SIZE - 1  # below the eyes, down to the chin
    parts = regions(sample_unaligned(plain).landmarks, mask)
    total = sum(p.astype(int) for p in parts.values())
    assert np.all(total == 1)  # a partition
    assert parts["eyes_brows"][18, 15] and parts["eyes_brows"][18, 32] and not parts["eyes_brows"][40, 24]
    assert parts["mask"][40, 24] and parts["other"][2, 2]


@pytest.mark.skipif(not MODEL_SIDECAR.is_file(), reason="models/expression.json not built yet")
def test_the_command_writes_the_sheet_and_the_figures_the_card_shows(tmp_path: Path, grace_hopper, capsys):
    from edge.vision.expression import ExpressionModel
    from edge.vision.faces import FaceMesh
    from export import card
    from export.__main__ import main
    from export.masks import mask_batch
    from export.saliency import read_face

    gray = cv2.cvtColor(grace_hopper, cv2.COLOR_BGR2GRAY)
    x = np.stack([cv2.resize(gray[130 + d : 340 + d, 160 + d : 360 + d], (96, 96), interpolation=cv2.INTER_AREA) for d in range(0, 24, 6)])
    masked, _ = mask_batch(x, None, seed=1, fraction=1.0)
    with FaceMesh(threads=1) as mesh:
        model = ExpressionModel(MODEL_SIDECAR, threads=1)
        reads = [[read_face(mesh, model, image) for image in pair] for pair in zip(x, masked)]
        model.close()
    y = np.array([r[0][2] if None not in r else 0 for r in reads])
    kept = [i for i, r in enumerate(reads) if None not in r and r[0][2] == r[1][2]]
    assert kept, "the mesh finds Grace Hopper and the model reads her the same way with and without the mask"
    y[[i for i in range(len(x)) if i not in kept]] = (y[kept[0]] + 1) % len(LABELS)  # the others are read wrong: never chosen
    np.savez(tmp_path / "plain.npz", x=x, y=y)
    np.savez(tmp_path / "masked.npz", x=masked, y=y)
    (tmp_path / "results").mkdir()
    args = ["saliency", "--data", str(tmp_path / "plain.npz"), "--masked-data", str(tmp_path / "masked.npz"), "--out",
            str(tmp_path / "sheet.png"), "--results", str(tmp_path / "results" / "saliency.json"), "--per-class", "4", "--show", "1", "--threads", "1"]
    assert main(args) == 0
    sheet = (tmp_path / "sheet.png").read_bytes()
    assert sheet[:8] == b"\x89PNG\r\n\x1a\n" and len(sheet) < 500_000
    out = json.loads((tmp_path / "results" / "saliency.json").read_text())
    assert out["model"] == "expression.int8.onnx" and out["n"] == len(kept)
    chosen = {label: faces for label, faces in out["faces"].items() if faces}
    assert sorted(f["index"] for faces in chosen.values() for f in faces) == kept
    assert set(chosen) == {LABELS[y[i]] for i in kept} and all([f["sheet"] for f in faces] == [True] + [False] * (len(faces) - 1) for faces in chosen.values())
    for condition in ("unmasked", "masked"):
        assert sum(out["mass"][condition].values()) == pytest.approx(1.0, abs=1e-3)
        assert 0.1 < out["area"][condition]["mask"] < 0.6
    text = "\n".join(card.saliency_section(tmp_path))
    assert "![occlusion sensitivity" in text and out["command"] in text and f"{100 * out['mass']['masked']['mask']:.1f} %" in text

    np.savez(tmp_path / "other.npz", x=masked[:2], y=y[:2])
    assert main([*args[:3], "--masked-data", str(tmp_path / "other.npz"), *args[5:]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "not the masked twin" in err[-1] and "python -m export mask" in err[-1]


def test_the_card_says_so_when_the_model_looks_at_the_mask(tmp_path: Path):
    from export import card

    shares = {"mask": 0.5, "eyes_brows": 0.3, "other": 0.2}
    area = {"mask": 0.34, "eyes_brows": 0.2, "other": 0.46}
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "saliency.json").write_text(json.dumps({
        "command": "python -m export saliency", "model": "m.onnx", "n": 7,
        "method": {"name": "occlusion", "patch_px": 8, "stride_px": 4}, "data": {"seed": 1, "show": 1, "per_class": 1},
        "mass": {"unmasked": shares, "masked": shares}, "area": {"unmasked": area, "masked": area},
        "mass_by_class": {name: {"unmasked": shares, "masked": shares} for name in LABELS},
    }))
    text = "\n".join(card.saliency_section(tmp_path))
    assert "the model looks at the mask (1.47 × its area share)" in text and "| masked | 50.0 % (area 34.0 %)" in text
    assert card.saliency_section(tmp_path / "nothing") == []


def test_the_default_sheet_draws_class_means_so_no_dataset_face_is_committed():
    from export.saliency import REGIONS, class_mean

    def entry(value: float, peak: float, masked_rows: int) -> dict:
        heat = np.zeros((48, 48))
        heat[10, 10] = peak
        mask = np.zeros((48, 48), bool)
        mask[48 - masked_rows:] = True
        return {"face": np.full((48, 48), value), "heat": heat, "mask": mask, "p": value / 100,
                "shares": dict.fromkeys(REGIONS, value / 300)}

    faces = [{c: entry(v, peak, rows) for c in ("unmasked", "masked")} for v, peak, rows in ((40.0, 0.2, 20), (80.0, 0.8, 10), (60.0, 0.5, 16))]
    mean = class_mean(faces)["masked"]
    assert np.all(mean["face"] == 60.0)  # not any one face
    assert mean["heat"][10, 10] == pytest.approx(1.0)  # each map scaled to its own largest drop before the mean
    assert mean["mask"].sum(axis=0)[0] == 16  # the rows at least two of the three faces have
    assert mean["p"] == pytest.approx(0.6)


def test_without_matplotlib_the_sheet_is_refused_before_any_face_is_measured(tmp_path: Path, no_matplotlib, capsys):
    """As on the glasses' lock: one line naming the fix, and the missing data file is not even looked at."""
    from export.__main__ import main

    code = main(["saliency", "--data", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "sheet.png")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: export saliency (its sheet) needs matplotlib") and "requirements-dev.txt" in err
    assert list(tmp_path.iterdir()) == []
