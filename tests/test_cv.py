"""Honest variance (#20 item 3): K stratified folds over the training faces and `python -m export cv`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.train
torch = pytest.importorskip("torch")

from export.__main__ import main as export_main  # noqa: E402
from export.dataset import Prepared  # noqa: E402
from export.train import fold_split  # noqa: E402


def _data(n: int = 70) -> Prepared:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 7
    return Prepared(rng.integers(0, 256, (6, n, 48, 48), dtype=np.uint8), rng.normal(size=(6, n, 47, 74)).astype(np.float16),
                    y, np.eye(7, dtype=np.float32)[y], val=np.arange(n) >= n - 7)


def test_folds_are_disjoint_cover_every_face_once_and_are_stratified() -> None:
    y = np.random.default_rng(1).choice(7, 503, p=[0.14, 0.02, 0.14, 0.25, 0.17, 0.11, 0.17])
    data = Prepared(np.zeros((6, 503, 1, 1), np.uint8), np.zeros((6, 503, 1, 1), np.float16), y, np.zeros((503, 7)), np.zeros(503, bool))
    held = np.stack([fold_split(data, 5, i, seed=0).val for i in range(5)])
    np.testing.assert_array_equal(held.sum(axis=0), 1)  # each face held out by exactly one fold
    for c in range(7):
        per_fold = held[:, y == c].sum(axis=1)
        assert per_fold.max() - per_fold.min() <= 1, (c, per_fold)
    again = np.stack([fold_split(data, 5, i, seed=0).val for i in range(5)])
    np.testing.assert_array_equal(held, again)  # seeded
    assert not np.array_equal(held, np.stack([fold_split(data, 5, i, seed=1).val for i in range(5)]))


def test_without_folds_the_fixed_validation_split_is_unchanged() -> None:
    data = _data()
    assert fold_split(data, 0, 0, seed=0) is data
    split = fold_split(data, 5, 2, seed=0)
    assert split.val.sum() == 14 and not np.array_equal(split.val, data.val)
    np.testing.assert_array_equal(data.val, np.arange(70) >= 63)  # the caller's split is not modified


def test_export_cv_trains_every_fold_and_writes_mean_and_std(tmp_path: Path) -> None:
    data = _data()
    np.savez(tmp_path / "prepared.npz", faces=data.faces, features=data.features, y=data.y, targets=data.targets, val=data.val)
    results = tmp_path / "cv.json"
    rc = export_main(["cv", "--prepared", str(tmp_path / "prepared.npz"), "--out", str(tmp_path / "cv"), "--results", str(results),
                      "--folds", "3", "--epochs", "1", "--width", "4", "--batch", "32", "--threads", "1"])
    assert rc == 0
    cv = json.loads(results.read_text())
    assert [f["fold"] for f in cv["folds"]] == [0, 1, 2]
    assert sum(f["n_val"] for f in cv["folds"]) == 70 and all(f["n_train"] + f["n_val"] == 70 for f in cv["folds"])
    for view in ("clean", "masked", "dark"):
        values = [f[view] for f in cv["folds"]]
        assert cv["summary"][view]["mean"] == pytest.approx(np.mean(values), abs=1e-4)
        assert cv["summary"][view]["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-4)
    history = torch.load(tmp_path / "cv" / "fold1" / "fusion.pt", weights_only=False)["history"]
    assert cv["folds"][1]["masked"] == history[-1]["val_masked"]["fusion"]  # the training log's own figure
    assert cv["command"].startswith("python -m export cv --folds 3 --epochs 1")


def test_an_interrupted_cv_leaves_its_finished_folds_and_resumes(tmp_path: Path, monkeypatch) -> None:
    import export.train

    data = _data()
    np.savez(tmp_path / "prepared.npz", faces=data.faces, features=data.features, y=data.y, targets=data.targets, val=data.val)
    args = ["cv", "--prepared", str(tmp_path / "prepared.npz"), "--out", str(tmp_path / "cv"), "--results", str(tmp_path / "cv.json"),
            "--folds", "3", "--epochs", "1", "--width", "4", "--batch", "32", "--threads", "1"]
    real, calls = export.train.train, []

    def stopped_at_fold_2(split, out_dir, *a, **k):
        calls.append(out_dir.name)
        if out_dir.name == "fold2":
            raise KeyboardInterrupt
        return real(split, out_dir, *a, **k)

    monkeypatch.setattr(export.train, "train", stopped_at_fold_2)
    with pytest.raises(KeyboardInterrupt):
        export_main(args)
    partial = json.loads((tmp_path / "cv.json").read_text())
    assert not partial["complete"] and [f["fold"] for f in partial["folds"]] == [0, 1]
    monkeypatch.setattr(export.train, "train", real)
    assert export_main(args) == 0
    done = json.loads((tmp_path / "cv.json").read_text())
    assert done["complete"] and done["folds"][:2] == partial["folds"]  # finished folds reloaded, not retrained


def test_export_cv_refuses_a_single_fold(tmp_path: Path, capsys) -> None:
    assert export_main(["cv", "--prepared", str(tmp_path / "none.npz"), "--folds", "1", "--results", str(tmp_path / "cv.json")]) == 2
    assert "--folds 1" in capsys.readouterr().err and not (tmp_path / "cv.json").exists()


def test_train_refuses_a_fold_outside_its_folds(monkeypatch, capsys) -> None:
    from export import train

    monkeypatch.setattr("sys.argv", ["export.train", "--folds", "5", "--fold", "5"])
    with pytest.raises(SystemExit) as exc:
        train.main()
    assert exc.value.code == 2 and "fold from 0 to 4" in capsys.readouterr().err
