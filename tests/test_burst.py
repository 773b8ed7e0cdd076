"""Fusing one face's readings over a burst of frames (edge.results.fuse) and `python -m export burst`'s frames."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edge.config import LightConfig
from edge.results import FaceResult, Position, fuse, reading
from export.burst import SHIFT_PX, burst_frames, score, shake

LIGHT = LightConfig(readable_noise=4.0, unsure_per_noise=0.05, unreadable_noise=10.0)


def face(scores: dict[str, float], noise: float = 2.0, track_id: int = 1, x: float = 0.5) -> FaceResult:
    label = max(scores, key=scores.__getitem__)
    unsure, readable = reading(scores[label], noise, 0.5, LIGHT)
    return FaceResult(box=(0, 0, 48, 48), label=label, confidence=scores[label], unsure=unsure, scores=scores,
                      position=Position(12, 1.0, x), fallback=False, track_id=track_id, noise=noise, readable=readable,
                      unsure_threshold=0.5)


def test_product_is_the_normalised_geometric_mean_and_mean_the_plain_mean():
    readings = [face({"happy": 0.4, "sad": 0.5, "neutral": 0.1}), face({"happy": 0.7, "sad": 0.2, "neutral": 0.1}),
                face({"happy": 0.6, "sad": 0.1, "neutral": 0.3}, x=0.7)]
    p = np.array([[0.4, 0.5, 0.1], [0.7, 0.2, 0.1], [0.6, 0.1, 0.3]])
    geometric = np.exp(np.log(p).mean(axis=0))
    product, mean = fuse(readings, LIGHT), fuse(readings, LIGHT, "mean")
    assert np.allclose(list(product.scores.values()), geometric / geometric.sum())
    assert np.allclose(list(mean.scores.values()), p.mean(axis=0))
    assert product.label == mean.label == "happy" and readings[0].label == "sad"
    assert product.confidence == pytest.approx(max(product.scores.values()))
    assert product.position.x == 0.7  # where the face is now: the newest reading's


def test_the_fused_confidence_is_judged_at_the_mean_noise_against_the_faces_threshold():
    clean, dark = face({"happy": 0.62, "sad": 0.38}, noise=2.0), face({"happy": 0.62, "sad": 0.38}, noise=12.0)
    assert not dark.readable and not clean.unsure
    fused = fuse([clean, dark], LIGHT)
    assert fused.noise == pytest.approx(7.0) and fused.readable
    assert fused.unsure  # 0.62 < 0.5 + 0.05 × (7 − 4): the threshold rose with the mean noise
    assert not fuse([clean, clean], LIGHT).unsure
    strict = fuse([dataclasses.replace(clean, unsure_threshold=0.7)] * 2, LIGHT)
    assert strict.unsure  # the face's own threshold, not a fixed one


def test_one_reading_comes_back_as_it_was_and_bad_calls_are_refused():
    one = face({"happy": 0.3, "sad": 0.7})
    assert fuse([one], LIGHT) is one
    with pytest.raises(ValueError, match="at least one"):
        fuse([], LIGHT)
    with pytest.raises(ValueError, match="product, mean"):
        fuse([one, one], LIGHT, "median")


def test_the_pipeline_records_the_threshold_each_face_was_judged_against():
    import cv2

    from edge.pipeline import DEFAULT_SIDECAR, Pipeline

    image = cv2.imread(str(DEFAULT_SIDECAR.parents[1] / "edge" / "data" / "grace_hopper.jpg"))
    with Pipeline(threads=1, max_faces=1) as pipeline:
        seven, five = pipeline.analyze(image).faces[0], pipeline.analyze(image, classes=5).faces[0]
        assert seven.unsure_threshold == pipeline.expression.unsure_threshold
        assert five.unsure_threshold == pipeline.expression.threshold(5) != seven.unsure_threshold
    twice = fuse([seven, seven], LightConfig())
    assert (twice.label, twice.unsure) == (seven.label, seven.unsure)
    assert twice.confidence == pytest.approx(seven.confidence, abs=1e-6)


def test_a_shake_moves_the_face_by_at_most_the_shift_and_frame_0_is_unshaken():
    dot = np.zeros((48, 48), np.uint8)
    dot[22:26, 22:26] = 255  # at the centre, where the rotation moves nothing

    def centre(image: np.ndarray) -> np.ndarray:
        ys, xs = np.indices(image.shape)
        w = image.astype(np.float64)
        return np.array([(xs * w).sum(), (ys * w).sum()]) / w.sum()

    moves = [np.hypot(*(centre(shake(dot, np.random.default_rng(s))) - centre(dot))) for s in range(50)]
    assert max(moves) <= SHIFT_PX + 0.05 and np.mean(moves) > 0.3
    faces = np.stack([dot, dot])
    assert burst_frames(faces, 0, 17) is faces
    assert np.array_equal(burst_frames(faces, 3, 17), burst_frames(faces, 3, 17))
    assert not np.array_equal(burst_frames(faces, 3, 17), burst_frames(faces, 4, 17))


def test_score_fuses_the_first_k_readings_of_each_face():
    sad, happy = {"happy": 0.4, "sad": 0.6}, {"happy": 0.8, "sad": 0.2}
    readings = [[face(sad), face(happy)], [face(happy), face(happy)], [face(happy), face(sad, noise=11.0)]]
    rows = score(readings, np.array([0, 0]), ["happy", "sad"], LIGHT, (1, 3), "product")
    assert rows["1"]["accuracy"] == 0.5 and rows["3"]["accuracy"] == 1.0
    assert rows["1"]["answered"] == 1.0 and rows["3"]["spoken"] == 2 and rows["3"]["precision"] == 1.0
    assert rows["3"]["precision_one_frame"] == 0.5  # frame 0 answering as many faces: one of them wrong
    fewer = score([[face(sad), face(happy)], [face(sad, noise=11.0), face(happy)]], np.array([0, 0]), ["happy", "sad"], LIGHT, (2,), "mean")
    assert fewer["2"]["spoken"] == 1 and fewer["2"]["precision_one_frame"] == 1.0  # its most confident one: the happy face
