"""The GPU-teacher toolchain's CPU side: the lossless pack, the folds, out-of-fold targets and sizing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from export.teachers import VIEWS, choose_archs, combine, folds, labels_key, load_pack, mosaic, pack, unmosaic


def _prepared(path, n: int = 203) -> None:
    rng = np.random.default_rng(1)
    faces = rng.integers(0, 256, (6, n, 48, 48), dtype=np.uint8)
    y = np.arange(n) % 7
    val = np.zeros(n, bool)
    val[::10] = True
    np.savez(path, faces=faces, y=y, targets=np.eye(7, dtype=np.float32)[y], val=val)


def test_mosaic_round_trip_is_exact() -> None:
    faces = np.random.default_rng(0).integers(0, 256, (171, 48, 48), dtype=np.uint8)
    image = mosaic(faces)
    assert image.shape == (2 * 48, 170 * 48)
    np.testing.assert_array_equal(unmosaic(image, 171), faces)


def test_folds_are_stratified_and_skip_validation() -> None:
    y = np.arange(400) % 7
    val = np.arange(400) % 10 == 0
    f = folds(y, val, 4, seed=0)
    assert (f[val] == -1).all() and set(f[~val]) == {0, 1, 2, 3}
    for c in range(7):  # each class spread evenly over the folds
        counts = np.bincount(f[(y == c) & ~val], minlength=4)
        assert counts.max() - counts.min() <= 1


def test_pack_is_lossless_and_carries_meta(tmp_path) -> None:
    _prepared(tmp_path / "prepared.npz")
    dirs = pack(tmp_path / "prepared.npz", tmp_path / "pack", chunk_mb=0.3)
    assert len(dirs) == 3  # one view per chunk at this size
    faces, meta = load_pack(tmp_path / "pack")
    stored = np.load(tmp_path / "prepared.npz")
    np.testing.assert_array_equal(faces, stored["faces"][[0, 2, 4]])
    assert (meta["fold"][stored["val"]] == -1).all()
    assert set(meta["mask_kind_names"]) <= {"surgical", "cloth", "n95", "occlusion"}
    assert ((meta["dark_light"] >= 0.03) & (meta["dark_light"] <= 0.15)).all()


def test_load_pack_names_a_missing_chunk(tmp_path) -> None:
    _prepared(tmp_path / "prepared.npz")
    pack(tmp_path / "prepared.npz", tmp_path / "pack", chunk_mb=0.3)
    (tmp_path / "pack" / "p3" / "dark.webp").unlink()
    with pytest.raises(FileNotFoundError, match="no dark.webp"):
        load_pack(tmp_path / "pack")


def test_combine_gives_each_face_only_teachers_that_never_saw_it(tmp_path) -> None:
    _prepared(tmp_path / "prepared.npz")
    pack(tmp_path / "prepared.npz", tmp_path / "pack")
    meta = np.load(tmp_path / "pack" / "p1" / "meta.npz")
    n = int(meta["n"])
    names = [f"{a}_{f}" for a in ("wrn", "vgg") for f in range(4)]
    # teacher (arch, f) says "class f" with certainty: a face's target reveals which teachers it came from
    probs = np.zeros((len(names), len(VIEWS), n, 7), np.float16)
    for i, name in enumerate(names):
        probs[i, :, :, int(name[-1])] = 1.0
    run = tmp_path / "run"
    run.mkdir()
    np.savez(run / "teacher_probs.npz", probs=probs, names=np.array(names))
    figures = combine(run, tmp_path / "pack" / "p1" / "meta.npz", tmp_path / "out")
    out = np.load(tmp_path / "out" / "soft_targets.npz")
    targets = out["probs"].astype(np.float32)
    for f in range(4):
        rows = meta["fold"] == f
        np.testing.assert_allclose(targets[:, rows, f], 1.0)
    np.testing.assert_allclose(targets[:, meta["val"], :4], 0.25)  # validation: every teacher
    assert str(out["labels_sha256"]) == labels_key(meta["y"])
    assert set(figures["teachers"]) == set(names)
    json.dumps(figures)


def test_combine_refuses_a_fold_without_teacher(tmp_path) -> None:
    _prepared(tmp_path / "prepared.npz")
    pack(tmp_path / "prepared.npz", tmp_path / "pack")
    n = int(np.load(tmp_path / "pack" / "p1" / "meta.npz")["n"])
    run = tmp_path / "run"
    run.mkdir()
    np.savez(run / "teacher_probs.npz", probs=np.zeros((2, 3, n, 7), np.float16), names=np.array(["wrn_0", "wrn_1"]))
    with pytest.raises(ValueError, match="without fold 2"):
        combine(run, tmp_path / "pack" / "p1" / "meta.npz", tmp_path / "out")


def test_choose_archs_keeps_the_longest_prefix_that_fits() -> None:
    speeds = {"wrn": {"s_per_epoch": 1.0}, "vgg": {"s_per_epoch": 1.0}, "convnext": {"s_per_epoch": 3.0}}
    chosen, sizing = choose_archs(("wrn", "vgg", "convnext"), speeds, 4, 400.0, 40)
    assert chosen == ("wrn", "vgg") and sizing["expected_epochs"] == 50.0
    chosen, _ = choose_archs(("wrn", "vgg", "convnext"), speeds, 4, 50.0, 40)
    assert chosen == ("wrn",)  # nothing fits: the first alone


@pytest.mark.train
def test_one_teacher_trains_and_predicts_every_view(tmp_path) -> None:
    pytest.importorskip("torch")
    from export.teachers import train_one

    _prepared(tmp_path / "prepared.npz", n=60)
    pack(tmp_path / "prepared.npz", tmp_path / "pack")
    report = train_one("vgg", 1, tmp_path / "pack", tmp_path, deadline=float("inf"), seed=0, max_steps=2, batch=8)
    probs = np.load(tmp_path / "vgg_1.npz")["probs"].astype(np.float32)
    assert probs.shape == (3, 60, 7)
    np.testing.assert_allclose(probs.sum(axis=2), 1.0, atol=1e-2)
    assert report["steps"] == 2 and set(report["val"]) == set(VIEWS)
