"""One path from a frame to the upper-face sample: the glasses, the training data, the build and the ARM
parity check all make their samples with the same calls and the same rule for a missing face."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.pipeline import Pipeline, face_samples, find_faces
from edge.vision import upperface
from edge.vision.faces import FaceMesh


def _same(a: upperface.UpperFaceSample, b: upperface.UpperFaceSample) -> bool:
    return a.face.tobytes() == b.face.tobytes() and a.features.tobytes() == b.features.tobytes()


@pytest.fixture(scope="module")
def images(grace_hopper) -> dict[str, np.ndarray]:
    x, y, w, h = 150, 90, 270, 270  # her face, as a dataset crop
    crop = cv2.resize(cv2.cvtColor(grace_hopper[y : y + h, x : x + w], cv2.COLOR_BGR2GRAY), (48, 48), interpolation=cv2.INTER_AREA)
    return {"portrait": grace_hopper, "crop": crop, "two": np.hstack([grace_hopper, grace_hopper[:, ::-1]]),
            "no face": np.full((48, 48), 128, np.uint8)}


def test_the_pipeline_reads_the_samples_face_samples_makes(images):
    seen: list[list[upperface.UpperFaceSample]] = []
    with Pipeline(threads=1, max_faces=2) as pipeline, FaceMesh(threads=1, max_faces=2) as mesh:
        predict = pipeline.expression.predict
        pipeline.expression.predict = lambda samples, classes=None: seen.append(list(samples)) or predict(samples, classes)
        for name, image in images.items():
            result = pipeline.analyze(image, lowlight=False, assume_face=True)
            expected = face_samples(image, find_faces(mesh, image), assume_face=True)
            assert len(seen[-1]) == len(expected) == len(result.faces), name
            assert all(_same(a, b) for a, b in zip(seen[-1], expected)), name
    assert [len(s) for s in seen] == [1, 1, 2, 1]
    assert upperface.sample_unaligned(images["no face"]).face.tobytes() == seen[-1][0].face.tobytes()  # read whole


def test_the_arm_parity_check_makes_the_samples_export_evaluate_reads(images):
    from tests.arm import parity

    stack = np.stack([images["crop"], images["no face"]])
    samples, detected = parity.detect_samples(stack)
    assert detected.tolist() == [True, False]
    with FaceMesh(threads=1, max_faces=2) as mesh:
        for image, got in zip(stack, samples):
            faces = find_faces(mesh, image)
            largest = sorted(faces, key=lambda f: -f.box[2] * f.box[3])[:1]
            assert _same(got, face_samples(image, largest, assume_face=True)[0])


def test_which_recorded_meshes_count_is_decided_in_edge_only(monkeypatch):
    """export/ keeps no threshold of its own: the training data, the masks and the build follow edge's rule."""
    from export.dataset import mesh_array, usable_landmarks

    mesh = np.random.default_rng(0).uniform(0, 48, (468, 3)).astype(np.float16)
    cache = {"landmarks": np.stack([mesh, mesh, np.full((468, 3), np.nan, np.float16)]),
             "presence": np.array([0.6, 0.5, 0.0], np.float32)}
    assert [m is not None for m in usable_landmarks(cache)] == [True, True, False]
    assert usable_landmarks(cache)[0].dtype == np.float32
    monkeypatch.setattr(upperface, "MIN_PRESENCE", 0.55)
    assert [m is not None for m in usable_landmarks(cache)] == [True, False, False]
    assert np.isnan(mesh_array(usable_landmarks(cache))).all(axis=(1, 2)).tolist() == [False, True, True]


def test_no_mesh_means_the_whole_image_timed_as_features(images):
    timings: dict[str, float] = {}
    whole = upperface.sample_or_whole(images["crop"], None, timings)
    assert _same(whole, upperface.sample_unaligned(images["crop"]))
    assert timings["features"] > 0 and "align" not in timings
    assert face_samples(images["no face"], [], assume_face=False) == []
