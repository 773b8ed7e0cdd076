"""export lofo: each fold's training set takes its masked views only from the families it trains on, and
the held-out figure is the fusion head's mirror-averaged accuracy on that family's views."""

from __future__ import annotations

import numpy as np
import pytest

from export.lofo import CLEAN, fold_data


def _views(n: int, value: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A family's views where every face pixel carries the family's marker value."""
    return {"faces": np.full((n, 48, 48), value, np.uint8), "ffaces": np.full((n, 48, 48), value + 1, np.uint8),
            "features": rng.normal(size=(n, 5, 74)).astype(np.float16),
            "ffeatures": rng.normal(size=(n, 5, 74)).astype(np.float16)}


def test_a_fold_draws_each_faces_masked_view_from_a_family_it_trains_on_and_never_the_held_out_one():
    rng = np.random.default_rng(0)
    n = 300
    markers = {CLEAN: 10, "surgical": 20, "cloth": 30, "polygon": 40}
    train = {name: _views(n, value, rng) for name, value in markers.items()}
    y = rng.integers(7, size=n)
    targets = np.eye(7, dtype=np.float32)[y]
    data = fold_data(train, y, targets, ["surgical", "cloth"], seed=3)

    assert data.faces.shape == (6, n, 48, 48)
    assert (data.faces[0] == 10).all() and (data.faces[1] == 11).all()  # clean and its mirror
    assert (data.faces[4] == 10).all() and (data.faces[5] == 11).all()  # no dark views: the clean view stands in
    masked = data.faces[2, :, 0, 0]
    assert set(np.unique(masked)) == {20, 30}  # both trained families drawn, the held-out polygon (40) never
    assert 0.35 < (masked == 20).mean() < 0.65
    assert (data.faces[3, :, 0, 0] == masked + 1).all()  # each mirror comes from the same family as its view
    for view, key in ((2, "features"), (3, "ffeatures")):
        for name in ("surgical", "cloth"):
            rows = masked == markers[name]
            assert np.array_equal(data.features[view][rows], train[name][key][rows])
    assert data.val.sum() == pytest.approx(0.1 * n, abs=8)


@pytest.mark.train
def test_the_held_out_accuracy_is_the_fusion_heads_mirror_averaged_accuracy():
    torch = pytest.importorskip("torch")
    from export.dataset import Prepared
    from export.lofo import accuracy
    from export.train import build_model

    rng = np.random.default_rng(1)
    n = 64
    views = {"faces": rng.integers(256, size=(n, 48, 48), dtype=np.uint8),
             "ffaces": rng.integers(256, size=(n, 48, 48), dtype=np.uint8),
             "features": rng.normal(size=(n, 47, 74)).astype(np.float16),
             "ffeatures": rng.normal(size=(n, 47, 74)).astype(np.float16)}
    torch.manual_seed(0)
    data = Prepared(np.stack([views["faces"]] * 6), np.stack([views["features"]] * 6), np.zeros(n, np.int64),
                    np.zeros((n, 7), np.float32), np.zeros(n, bool))
    model = build_model(data, width=4).eval()
    with torch.no_grad():
        logits = sum(model(torch.from_numpy(views[f].astype(np.float32))[:, None], torch.from_numpy(views[g].astype(np.float32)))
                     for f, g in (("faces", "features"), ("ffaces", "ffeatures")))
    predicted = logits.argmax(dim=1).numpy()
    y = predicted.copy()
    y[: n // 4] = (y[: n // 4] + 1) % 7  # a quarter wrong on purpose
    assert accuracy(model, views, y) == pytest.approx(0.75, abs=1e-4)
