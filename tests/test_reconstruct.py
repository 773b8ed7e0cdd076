"""`export reconstruct` (#20 item 1): lower-face reconstruction, then classify — the parts that need no torch, and
(marked `train`) the inpainter's training and ONNX export on a few faces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.vision.upperface import SIZE, UpperFaceSample, landmark_features, sample_unaligned
from export import card
from export.masks import apply_mask, mask_batch, random_style
from export.reconstruct import (KINDS, Reconstructing, accuracies, aligned, alignments, drawn_styles, inpainted_sample, mask_kinds,
                                median_ms, training_pairs, verdict)

MODELS = Path(__file__).resolve().parents[1] / "models"


def _faces(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(40, 200, SIZE, dtype=np.float32)[None, :, None] + np.linspace(0, 30, SIZE, dtype=np.float32)[None, None, :]
    return np.clip(base + rng.normal(0, 8, (n, SIZE, SIZE)), 0, 255).astype(np.uint8)


def test_the_recorded_mask_kind_is_the_one_mask_batch_drew_for_that_face():
    """The test set's kinds are re-drawn from its seed: each face masked with the recorded style is mask_batch's face."""
    x = _faces(12)
    masked, was = mask_batch(x, None, seed=2013, fraction=1.0)
    assert was.all()
    for i, style in enumerate(drawn_styles(len(x), 2013)):
        rng = np.random.default_rng([2013, i])
        assert random_style(rng) == style  # the first draw of face i's generator, as in mask_batch
        np.testing.assert_array_equal(apply_mask(x[i], None, style, rng), masked[i])
    kinds = mask_kinds(400)
    assert set(kinds) == set(KINDS)  # every family is drawn, with the generator's weights
    assert (kinds == "surgical").mean() > (kinds == "occlusion").mean()


def test_training_pairs_are_the_aligned_clean_face_and_its_masked_copy_in_the_same_frame():
    x = _faces(6)
    matrices = alignments(x, [None] * len(x))  # no mesh: the whole image, as sample_or_whole reads it
    targets = aligned(x, matrices)
    np.testing.assert_array_equal(targets[0], sample_unaligned(x[0]).face)
    points = np.full((len(x), 468, 3), np.nan, np.float32)
    inputs, out_targets, region = training_pairs(x, points, matrices, targets, seed=3, fraction=0.5)
    assert out_targets is targets and inputs.shape == targets.shape == region.shape
    masked_rows = region.any(axis=(1, 2))
    assert masked_rows.sum() == 3  # exactly half the batch wears a mask
    np.testing.assert_array_equal(inputs[~masked_rows], targets[~masked_rows])
    lower = region[masked_rows][:, SIZE // 2 :].mean()
    assert lower > 5 * region[masked_rows][:, : SIZE // 4].mean()  # the mask is on the lower face


class _Reader:
    """A stand-in reader: logit of class 0 is the mean grey of the lower face, class 1 the mean of the HOG features."""

    def __call__(self, samples):
        return np.array([[s.face[SIZE // 2 :].mean(), s.features.mean()] + [0.0] * 5 for s in samples])


def test_the_wrapper_answers_as_given_and_keeps_the_inpainted_reading_with_its_hog_recomputed():
    face = _faces(1)[0]
    s = sample_unaligned(face)
    lower_white = lambda faces: np.concatenate([faces[:, : SIZE // 2], np.full_like(faces[:, SIZE // 2 :], 255)], axis=1)  # noqa: E731
    wrapper = Reconstructing(_Reader(), lower_white)
    out = wrapper([s, s])
    base, rec = wrapper.last
    np.testing.assert_array_equal(out, base)
    assert base[0, 0] == pytest.approx(face[SIZE // 2 :].mean()) and rec[0, 0] == 255
    painted = inpainted_sample(s, lower_white(face[None])[0])
    np.testing.assert_allclose(rec[0, 1], painted.features.mean())
    np.testing.assert_array_equal(painted.features, landmark_features(painted.face, s.landmarks))
    np.testing.assert_array_equal(painted.landmarks, s.landmarks)


def test_an_identity_inpainter_reads_exactly_as_the_baseline():
    s = sample_unaligned(_faces(1)[0])
    wrapper = Reconstructing(_Reader(), lambda faces: faces)
    wrapper([s])
    np.testing.assert_allclose(*wrapper.last)


def test_read_both_reads_the_largest_face_through_the_pipeline(grace_hopper):
    from edge.pipeline import Pipeline

    image = grace_hopper
    with Pipeline(max_faces=2, threads=1) as pipeline:
        expected = pipeline.analyze(image, assume_face=True)
        from export.reconstruct import read_both

        reads = read_both(pipeline, image[None], lambda faces: faces, lowlight=None)
        assert "logits" not in vars(pipeline.expression)  # the wrapper is taken out again
    face = max(expected.faces, key=lambda f: f.box[2] * f.box[3])
    from edge.results import LABELS

    assert LABELS[reads["baseline"][0]] == face.label == LABELS[reads["reconstructed"][0]]
    assert bool(reads["aligned"][0]) == face.aligned


def test_accuracies_per_mask_kind():
    y = np.array([0, 1, 2, 3, 4, 5])
    reads = {"baseline": np.array([0, 1, 0, 0, 4, 0]), "reconstructed": np.array([0, 0, 2, 0, 0, 0])}
    kinds = np.array(["surgical", "surgical", "cloth", "n95", "n95", "surgical"])
    acc = accuracies(y, reads, kinds)
    assert acc["all"] == {"n": 6, "baseline": 0.5, "reconstructed": round(2 / 6, 4)}
    assert acc["surgical"] == {"n": 3, "baseline": round(2 / 3, 4), "reconstructed": round(1 / 3, 4)}
    assert acc["cloth"] == {"n": 1, "baseline": 0.0, "reconstructed": 1.0}
    assert acc["occlusion"] == {"n": 0, "baseline": None, "reconstructed": None}
    assert set(accuracies(y, reads)) == {"all"}


def test_the_inpainter_ships_only_if_it_wins_on_accuracy_per_millisecond():
    assert not verdict({"baseline": 0.50, "reconstructed": 0.52}, {"baseline": 2.0, "reconstructed": 3.0})["ship"]
    won = verdict({"baseline": 0.50, "reconstructed": 0.80}, {"baseline": 2.0, "reconstructed": 3.0})
    assert won["ship"] and won["accuracy_per_ms"] == {"baseline": 0.25, "reconstructed": round(0.8 / 3, 4)}


def test_median_ms_times_each_call():
    assert median_ms(lambda item: sum(range(item)), [10] * 20) >= 0.0


def test_the_card_section_shows_every_mask_kind_and_the_command(tmp_path: Path):
    results = json.loads((MODELS / "results" / "reconstruction.json").read_text())
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "reconstruction.json").write_text(json.dumps(results))
    text = "\n".join(card.reconstruction_section(tmp_path))
    assert results["command"] in text
    for kind in KINDS:
        assert kind in text
    assert ("ships" if results["shipped"] else "not shipped") in text
    assert card.reconstruction_section(tmp_path / "nowhere") == []


@pytest.mark.train
def test_the_inpainter_trains_checkpoints_resumes_and_exports_an_onnx_that_matches_torch(tmp_path: Path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from export.reconstruct import export_onnx, load_checkpoint, onnx_inpainter, parameter_count, train

    x = _faces(40)
    points = np.full((len(x), 468, 3), np.nan, np.float32)
    matrices = alignments(x, [None] * len(x))
    targets = aligned(x, matrices)
    val = np.arange(len(x)) >= 32
    ckpt = tmp_path / "inpainter.pt"
    net, state = train(x, points, matrices, targets, val, minutes=5, width=4, batch=8, fraction=0.8, checkpoint=ckpt, resume=False,
                       threads=1, max_steps=3)
    assert state["step"] == 3 and ckpt.is_file() and state["log"][-1]["step"] == 3
    assert parameter_count(net) > 0
    net, state = train(x, points, matrices, targets, val, minutes=5, width=4, batch=8, fraction=0.8, checkpoint=ckpt, resume=True,
                       threads=1, max_steps=5)
    assert state["step"] == 5
    loaded, _ = load_checkpoint(ckpt)
    path = export_onnx(loaded, tmp_path / "inpainter.fp32.onnx")
    inpaint, _ = onnx_inpainter(path)
    out = inpaint(x[:3])
    assert out.shape == (3, SIZE, SIZE) and out.dtype == np.uint8
    with torch.no_grad():
        ref = loaded(torch.from_numpy(x[:3].astype(np.float32))[:, None])[:, 0].numpy()
    assert np.abs(out.astype(np.float32) - ref).max() <= 1.0
    assert isinstance(inpainted_sample(UpperFaceSample(face=x[0], features=np.zeros((47, 74), np.float32),
                                                       landmarks=sample_unaligned(x[0]).landmarks), out[0]), UpperFaceSample)
