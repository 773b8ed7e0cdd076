"""vision.classes = 5 (#20): anger + disgust and fear + surprise merged, end to end — model, pipeline, words,
wearer loop, `analyze`, calibration and the model card. The server and `export evaluate` are in their own files."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import load_config
from edge.errors import ConfigError, ModelError
from edge.results import LABELS, class_index, labels_for
from edge.speech.phrases import Changes, all_phrases, describe
from edge.vision.expression import ExpressionModel, merge_classes
from tests.test_app import WAIT, FakePipeline, config, face, make_app, running

from .conftest import MODEL_SIDECAR, ROOT

FIVE = ("angry_disgust", "fear_surprise", "happy", "sad", "neutral")


def test_five_classes_sum_the_look_alike_pairs():
    assert labels_for(7) == LABELS and labels_for(5) == FIVE
    assert class_index(5) == (0, 0, 1, 2, 3, 1, 4)  # angry, disgust → 0; fear, surprise → 1
    probs = np.array([[0.1, 0.05, 0.3, 0.1, 0.1, 0.25, 0.1]], np.float32)
    merged = merge_classes(probs, 5)
    assert merged.shape == (1, 5) and merged.sum() == pytest.approx(1.0)
    assert merged[0].tolist() == pytest.approx([0.15, 0.55, 0.1, 0.1, 0.1])
    assert np.array_equal(merge_classes(probs, 7), probs)  # 7 classes: the scores as they are


def test_vision_classes_is_7_or_5_and_anything_else_is_one_clear_line():
    assert load_config(env={}).vision.classes == 7
    assert load_config(env={}, overrides={"vision.classes": "5"}).vision.classes == 5
    with pytest.raises(ConfigError) as info:
        load_config(env={}, overrides={"vision.classes": "6"})
    assert str(info.value) == "--set: vision.classes: 6 is not one of 7, 5"


@pytest.fixture(scope="module")
def samples(grace_hopper):
    from edge.pipeline import face_samples, find_faces
    from edge.vision.faces import FaceMesh

    with FaceMesh(threads=1) as mesh:
        faces = find_faces(mesh, grace_hopper)
    gray = cv2.cvtColor(grace_hopper, cv2.COLOR_BGR2GRAY)
    crops = [cv2.resize(gray[140 + d : 330 + d, 170 + d : 350 + d], (48, 48), interpolation=cv2.INTER_AREA) for d in (0, 8, 16)]
    return face_samples(grace_hopper, faces) + [face_samples(c, [], assume_face=True)[0] for c in crops]


def test_the_model_answers_in_five_labels_with_the_summed_scores_and_its_own_threshold(samples):
    spec = json.loads(MODEL_SIDECAR.read_text())
    seven, five = ExpressionModel(MODEL_SIDECAR), ExpressionModel(MODEL_SIDECAR, classes=5)
    try:
        assert five.unsure_threshold == spec["class_sets"]["5"]["unsure_threshold"] != seven.unsure_threshold
        for a, b, per_call in zip(seven.predict(samples), five.predict(samples), seven.predict(samples, classes=5)):
            assert list(b.scores) == list(FIVE) and b == per_call
            assert b.scores["angry_disgust"] == pytest.approx(a.scores["angry"] + a.scores["disgust"], abs=1e-6)
            assert b.scores["fear_surprise"] == pytest.approx(a.scores["fear"] + a.scores["surprise"], abs=1e-6)
            assert b.label == max(b.scores, key=b.scores.get) and b.confidence >= a.confidence
            assert b.unsure == (b.confidence < five.unsure_threshold)
    finally:
        seven.close()
        five.close()


def test_a_sidecar_without_a_five_class_threshold_is_refused_with_the_fix(tmp_path: Path):
    spec = json.loads(MODEL_SIDECAR.read_text())
    del spec["class_sets"]
    for entry in spec["files"].values():
        (tmp_path / entry["file"]).symlink_to(MODEL_SIDECAR.parent / entry["file"])
    sidecar = tmp_path / "expression.json"
    sidecar.write_text(json.dumps(spec))
    with pytest.raises(ModelError, match=r"no \"not sure\" threshold for 5 classes: calibrate one with `python -m export classes`"):
        ExpressionModel(sidecar, classes=5)
    ExpressionModel(sidecar).close()  # 7 classes need none


def test_five_class_words_are_said_and_cached():
    assert describe(FakeFrame.of("angry_disgust")) == "looks annoyed"
    assert describe(FakeFrame.of("fear_surprise", "happy")) == "two people: looks startled, looks happy"
    five, seven, both = set(all_phrases("terse", 5)), set(all_phrases("terse")), set(all_phrases("verbose", None))
    assert {"looks annoyed", "looks startled", "now annoyed", "now startled", "looks calm"} <= five
    assert not {"looks disgusted", "looks worried", "now surprised"} & five
    assert not {"looks annoyed", "looks startled"} & seven
    assert five | seven <= both
    changes = Changes(confirm=1)
    changes.update(FakeFrame.of("neutral"))
    assert changes.update(FakeFrame.of("fear_surprise")) == "now startled"


class FakeFrame:
    @staticmethod
    def of(*labels: str):
        from edge.results import FrameResult

        return FrameResult(faces=tuple(face_with_id(label, i) for i, label in enumerate(labels)), lowlight=False)


def face_with_id(label: str, i: int):
    import dataclasses

    return dataclasses.replace(face(label, x=0.2 + 0.5 * i), track_id=i + 1)


def test_wearer_loop_with_five_classes_says_and_warms_the_merged_words():
    app, sink, _ = make_app(config(**{"vision.classes": "5"}), FakePipeline(FakeFrame.of("angry_disgust")))
    with running(app):
        app.press()
        assert sink.wait_said("looks annoyed")
        deadline = time.monotonic() + WAIT
        while not set(all_phrases("terse", 5)) <= set(app.parts.cache.warmed) and time.monotonic() < deadline:
            time.sleep(0.02)
    warmed = set(app.parts.cache.warmed)
    assert set(all_phrases("terse", 5)) <= warmed and "looks disgusted" not in warmed


def test_analyze_with_five_classes_prints_five_labels(tmp_path: Path, grace_hopper):
    photo = tmp_path / "grace.jpg"
    cv2.imwrite(str(photo), grace_hopper)
    run = lambda *extra: subprocess.run([sys.executable, "-m", "edge", "analyze", str(photo), "--json", *extra],  # noqa: E731
                                        capture_output=True, text=True, cwd=ROOT, timeout=300)
    seven, five = run(), run("--set", "vision.classes=5")
    assert seven.returncode == five.returncode == 0, five.stderr
    a, b = json.loads(seven.stdout)["faces"][0], json.loads(five.stdout)["faces"][0]
    assert set(a) == set(b) and list(a["scores"]) == list(LABELS) and list(b["scores"]) == list(FIVE)
    assert b["scores"]["fear_surprise"] == pytest.approx(a["scores"]["fear"] + a["scores"]["surprise"], abs=2e-4)
    bad = run("--set", "vision.classes=4")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == "error: --set: vision.classes: 4 is not one of 7, 5"


def test_calibration_fits_the_merged_confidence_by_the_seven_class_rule():
    """Faces torn between fear and surprise: 7 classes must call them "not sure" to stay 75 % right; merged,
    they are confident and right, so the 5-class threshold answers them."""
    from export.build import calibrate_class_set as calibrate

    rng = np.random.default_rng(0)
    n = 400
    y = rng.choice([2, 5, 3], n)  # fear, surprise, happy
    probs = np.full((n, 7), 0.02)
    torn = y != 3
    probs[torn, 2] = probs[torn, 5] = 0.44  # fear ≈ surprise: the 7-class top is a coin toss
    probs[~torn, 3] = 0.9
    probs /= probs.sum(axis=1, keepdims=True)
    seven, five = calibrate(probs, y, 7, "test"), calibrate(probs, y, 5, "test")
    assert seven["answered_share"] < 0.5 < five["answered_share"] == 1.0
    assert five["answered_precision"] == 1.0 and five["unsure_threshold"] < seven["unsure_threshold"]
    assert five["calibrated_on"] == "test" and "75%" in five["rule"]


def test_the_card_has_the_five_class_figures_and_the_command_that_made_them():
    from export import card

    results = json.loads((ROOT / "models" / "results" / "five_classes.json").read_text())
    text = (ROOT / "models" / "MODEL_CARD.md").read_text()
    section = text.split("## Five classes", 1)[1].split("\n## ", 1)[0]
    assert "`python -m export classes`" in section and "--set vision.classes=5" in section
    masked = results["runs"]["masked"]
    for classes in ("7", "5"):
        r = masked[classes]
        assert f"| masked | {classes} | {100 * r['accuracy']:.1f} % | {r['macro_f1']:.3f} | {100 * r['answered']:.1f} % |" in section
    assert f"threshold, {results['calibration']['5']['unsure_threshold']}," in section.replace("\n", " ")
    assert card.five_classes_section()[0] == "## Five classes (`vision.classes = 5`)"


def test_a_per_call_class_set_is_judged_by_its_own_not_sure_threshold(grace_hopper, monkeypatch):
    """The offload server answers each device in its class set: "not sure" must use that set's threshold."""
    from edge.pipeline import Pipeline

    import dataclasses

    with Pipeline(threads=1) as pipeline:
        pipeline.light = dataclasses.replace(pipeline.light, readable_noise=1e6, unreadable_noise=2e6)  # the model's thresholds alone
        seven = pipeline.analyze(grace_hopper).faces[0]
        assert not seven.unsure  # sure by the 7-class threshold
        own = pipeline.expression.threshold
        monkeypatch.setattr(pipeline.expression, "threshold", lambda classes: 0.999 if classes == 5 else own(classes))
        five = pipeline.analyze(grace_hopper, classes=5).faces[0]
    assert five.confidence < 0.999 and five.unsure
