"""Distillation targets of the training toolchain (training-only: skipped where torch is not installed)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.train
torch = pytest.importorskip("torch")

from export.dataset import Prepared  # noqa: E402
from export.train import blended_targets, build_model, teacher_probabilities  # noqa: E402


def _data(n: int = 10) -> Prepared:
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (6, n, 48, 48), dtype=np.uint8)
    features = rng.normal(size=(6, n, 47, 74)).astype(np.float16)
    y = np.arange(n) % 7
    targets = np.eye(7, dtype=np.float32)[y]
    return Prepared(faces, features, y, targets, val=np.arange(n) >= n - 2)


def _teacher(data: Prepared, path, seed: int):
    torch.manual_seed(seed)
    model = build_model(data, width=8).eval()
    torch.save({"model": model.state_dict(), "width": 8}, path)
    return model


def test_teacher_probabilities_average_teachers_and_mirrors(tmp_path) -> None:
    data = _data()
    models = [_teacher(data, tmp_path / f"t{i}.pt", seed=i) for i in range(2)]
    probs = teacher_probabilities(data, [tmp_path / "t0.pt", tmp_path / "t1.pt"], tmp_path / "teacher.npz")
    assert probs.shape == (3, 10, 7)
    np.testing.assert_allclose(probs.sum(axis=2), 1.0, atol=1e-5)
    # The masked kind (views 2 and 3) of face 4, by hand: mean over both teachers and both mirrors.
    expected = 0.0
    with torch.no_grad():
        for model in models:
            for view in (2, 3):
                face = torch.from_numpy(data.faces[view, 4:5].astype(np.float32))[:, None]
                feats = torch.from_numpy(data.features[view, 4:5].astype(np.float32))
                expected = expected + torch.softmax(model(face, feats), dim=1).numpy()[0] / 4
    np.testing.assert_allclose(probs[1, 4], expected, atol=1e-5)


def test_teacher_probabilities_are_cached_under_the_teachers_hash(tmp_path) -> None:
    data = _data()
    _teacher(data, tmp_path / "t0.pt", seed=0)
    first = teacher_probabilities(data, [tmp_path / "t0.pt"], tmp_path / "teacher.npz")
    assert (tmp_path / "teacher.npz").is_file()
    # Another checkpoint at the same path must not be served the old cached probabilities.
    _teacher(data, tmp_path / "t0.pt", seed=5)
    second = teacher_probabilities(data, [tmp_path / "t0.pt"], tmp_path / "teacher.npz")
    assert not np.allclose(first, second)
    again = teacher_probabilities(data, [tmp_path / "t0.pt"], tmp_path / "teacher.npz")
    np.testing.assert_array_equal(second, again)


def test_blended_targets_mix_labels_and_the_drawn_views_teacher() -> None:
    targets = torch.eye(7)[[0, 1, 2]]
    teacher = np.zeros((3, 3, 7), np.float32)
    teacher[0, :, 6] = 1.0  # clean kind says neutral
    teacher[2, :, 5] = 1.0  # dark kind says surprise
    idx, view = np.array([0, 2]), np.array([1, 4])  # face 0 clean mirrored, face 2 dark
    out = blended_targets(targets, teacher, idx, view, weight=0.25).numpy()
    np.testing.assert_allclose(out[0], 0.75 * np.eye(7)[0] + 0.25 * np.eye(7)[6])
    np.testing.assert_allclose(out[1], 0.75 * np.eye(7)[2] + 0.25 * np.eye(7)[5])
    np.testing.assert_array_equal(blended_targets(targets, None, idx, view, 0.5).numpy(), targets[idx].numpy())


def test_stored_soft_targets_must_match_the_prepared_data(tmp_path) -> None:
    from export.teachers import labels_key
    from export.train import stored_soft_targets

    data = _data()
    probs = np.full((3, 10, 7), 1 / 7, np.float16)
    np.savez(tmp_path / "ok.npz", probs=probs, labels_sha256=np.array(labels_key(data.y)))
    np.testing.assert_allclose(stored_soft_targets(data, tmp_path / "ok.npz"), 1 / 7, atol=1e-3)
    np.savez(tmp_path / "other.npz", probs=probs, labels_sha256=np.array(labels_key(data.y[::-1])))
    with pytest.raises(ValueError, match="other prepared data"):
        stored_soft_targets(data, tmp_path / "other.npz")
