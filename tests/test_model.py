"""The shipped expression model: sidecar checks, backend parity, and `analyze` end to end."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import ModelError
from edge.results import LABELS
from edge.vision import upperface
from edge.vision.expression import ExpressionModel

from .conftest import MODEL_SIDECAR, ROOT

pytestmark = pytest.mark.skipif(not MODEL_SIDECAR.is_file(), reason="models/expression.json not built yet")


@pytest.fixture()
def model_copy(tmp_path: Path) -> Path:
    for path in MODEL_SIDECAR.parent.iterdir():
        if path.suffix in (".json", ".onnx", ".tflite"):
            shutil.copy(path, tmp_path / path.name)
    return tmp_path / "expression.json"


@pytest.fixture(scope="module")
def samples(grace_hopper) -> list[upperface.UpperFaceSample]:
    """The demo face under 40 fixed jitters (shift, rotation, scale, brightness), plus its lower half masked."""
    from edge.vision.faces import FaceMesh

    rng = np.random.default_rng(0)
    out = []
    h, w = grace_hopper.shape[:2]
    with FaceMesh(threads=1) as mesh:
        for _ in range(40):
            m = cv2.getRotationMatrix2D((w / 2 + rng.uniform(-20, 20), h / 2), rng.uniform(-15, 15), rng.uniform(0.6, 1.1))
            img = cv2.warpAffine(grace_hopper, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
            img = cv2.convertScaleAbs(img, alpha=rng.uniform(0.6, 1.3), beta=rng.uniform(-30, 30))
            faces = mesh.process(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
            if faces:
                s = upperface.sample(img, faces[0].landmarks)
                out.append(s)
                masked = s.face.copy()
                masked[30:] = rng.integers(60, 200)
                out.append(upperface.UpperFaceSample(face=masked, features=s.features, landmarks=s.landmarks))
    assert len(out) >= 60
    return out


def test_sidecar_describes_every_file_with_its_hash():
    spec = json.loads(MODEL_SIDECAR.read_text())
    assert spec["labels"] == list(LABELS)
    assert spec["preprocessing"] == upperface.PREPROCESSING_VERSION
    manifest = json.loads((MODEL_SIDECAR.parent / "manifest.json").read_text())["models"]
    for variant in ("onnx-int8", "onnx-fp32", "tflite-int8", "tflite-fp32"):
        entry = spec["files"][variant]
        path = MODEL_SIDECAR.parent / entry["file"]
        assert path.stat().st_size < 5_000_000
        assert manifest[entry["file"]]["sha256"] == entry["sha256"]
    assert 0.5 < spec["temperature"] < 4 and 0 < spec["unsure_threshold"] < 1


def test_refuses_a_file_whose_hash_does_not_match(model_copy: Path):
    spec = json.loads(model_copy.read_text())
    target = model_copy.parent / spec["files"]["tflite-int8"]["file"]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match its sidecar"):
        ExpressionModel(model_copy, backend="tflite")


def damage_tflite(sidecar: Path, how: str = "corrupt", variant: str = "tflite-int8") -> Path:
    """Damage a model file and make the sidecar's sha256 match it. "corrupt": the root table's vtable
    offset pointed 2 GB away, which ai-edge-litert follows into unmapped memory (SIGSEGV, 40 times in
    40); "truncated": cut to half, where it reads past the end of the file (SIGSEGV about 19 times in
    20, else a clean error: what lies past the end varies)."""
    spec = json.loads(sidecar.read_text())
    entry = spec["files"][variant]
    target = sidecar.parent / entry["file"]
    data = bytearray(target.read_bytes())
    if how == "truncated":
        del data[len(data) // 2 :]
    else:
        root = int.from_bytes(data[:4], "little")  # flatbuffers: uoffset of the root table, which starts
        data[root : root + 4] = (0x7FFFFFF0).to_bytes(4, "little", signed=True)  # with its vtable's soffset
    target.write_bytes(bytes(data))
    entry["sha256"] = hashlib.sha256(data).hexdigest()
    sidecar.write_text(json.dumps(spec))
    return target


@pytest.mark.parametrize("how", ["corrupt", "truncated"])
def test_a_damaged_tflite_file_matching_its_sidecar_is_refused_not_a_crash(model_copy: Path, tmp_path: Path, grace_hopper, how):
    """The file is tried in a child process first: the child's segfault is one error line and exit 2
    (it used to kill `analyze`, and the wearer loop, with no line at all)."""
    target = damage_tflite(model_copy, how)
    photo = tmp_path / "grace.jpg"
    cv2.imwrite(str(photo), grace_hopper)
    proc = _analyze(photo, "--backend", "tflite", "--model", model_copy)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(errors) == 1 and str(target) in errors[0] and proc.stdout == ""
    if how == "corrupt":
        assert "crashed the TFLite runtime (SIGSEGV)" in errors[0]
    else:
        assert "crashed the TFLite runtime (SIG" in errors[0] or "not a loadable TFLite model" in errors[0]


def test_refuses_other_preprocessing_version(model_copy: Path):
    spec = json.loads(model_copy.read_text())
    spec["preprocessing"] = "upperface-0"
    model_copy.write_text(json.dumps(spec))
    with pytest.raises(ModelError, match="preprocessing"):
        ExpressionModel(model_copy, backend="onnx")


def test_missing_sidecar_and_missing_file_name_the_fix(model_copy: Path, tmp_path: Path):
    with pytest.raises(ModelError, match="missing"):
        ExpressionModel(tmp_path / "nope.json")
    spec = json.loads(model_copy.read_text())
    (model_copy.parent / spec["files"]["onnx-int8"]["file"]).unlink()
    with pytest.raises(ModelError, match="missing"):
        ExpressionModel(model_copy, backend="onnx")


def test_tflite_runs_on_ai_edge_litert_only(monkeypatch: pytest.MonkeyPatch):
    """The TFLite backend is ai-edge-litert (same int8 rounding on aarch64 and x86_64); without it the
    error names the package and the ONNX alternative, and tflite-runtime is not taken instead."""
    from edge.runtime import TFLiteBackend, tflite_interpreter_class

    assert tflite_interpreter_class().__module__.startswith("ai_edge_litert")
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import now raises ImportError
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", sys.modules["json"])  # a decoy that must not be used
    with pytest.raises(ModelError, match=r"install ai-edge-litert.*vision\.backend = \"onnx\""):
        TFLiteBackend(ROOT / "models" / "expression.int8.tflite")


def test_onnx_and_tflite_agree_on_the_shipped_model(samples):
    """fp32: the two runtimes give the same scores. int8: the two files are quantised separately, so each
    is held to the fp32 reference: scores within 0.08, and the same top-1 wherever fp32 is decisive
    (top-1 margin > 0.16, so a flip could only come from a real defect, not rounding)."""
    scores = {}
    for backend in ("onnx", "tflite"):
        for precision in ("fp32", "int8"):
            model = ExpressionModel(MODEL_SIDECAR, backend=backend, precision=precision)
            scores[backend, precision] = model.probabilities(model.logits(samples))
    ref = scores["onnx", "fp32"]
    assert np.abs(scores["tflite", "fp32"] - ref).max() < 1e-3
    assert (scores["tflite", "fp32"].argmax(1) == ref.argmax(1)).all()
    top2 = np.sort(ref, axis=1)[:, -2:]
    decisive = (top2[:, 1] - top2[:, 0]) > 0.16
    assert decisive.sum() >= len(ref) // 2
    for backend in ("onnx", "tflite"):
        q = scores[backend, "int8"]
        assert np.abs(q - ref).max() < 0.08, backend
        assert (q.argmax(1) == ref.argmax(1))[decisive].all(), backend
        assert (q.argmax(1) == ref.argmax(1)).mean() >= 0.9, backend
    both = (scores["onnx", "int8"].argmax(1) == scores["tflite", "int8"].argmax(1)).mean()
    assert both >= 0.9


def test_predictions_are_calibrated_probabilities(samples):
    model = ExpressionModel(MODEL_SIDECAR)
    out = model.predict(samples[:6])
    for e in out:
        assert set(e.scores) == set(LABELS)
        assert sum(e.scores.values()) == pytest.approx(1.0, abs=1e-4)
        assert e.label == max(e.scores, key=e.scores.get)
        assert e.unsure == (e.confidence < model.unsure_threshold)


def _analyze(*paths: Path | str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge", "analyze", "--json", *map(str, paths)], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def test_analyze_reads_the_demo_photo_and_survives_bad_inputs(tmp_path: Path, grace_hopper):
    photo = tmp_path / "grace.jpg"
    cv2.imwrite(str(photo), grace_hopper)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    text = tmp_path / "notes.png"
    text.write_text("hello")
    scene = tmp_path / "wall.png"
    rng = np.random.default_rng(3)
    cv2.imwrite(str(scene), cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), (0, 0), 8))
    tiny = tmp_path / "tiny.png"
    faces_box = (170, 140, 180, 190)
    x, y, w, h = faces_box
    cv2.imwrite(str(tiny), cv2.resize(cv2.cvtColor(grace_hopper[y : y + h, x : x + w], cv2.COLOR_BGR2GRAY), (48, 48)))

    proc = _analyze(corrupt, photo, text, scene, tiny)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "corrupt.jpg" in errors[0] and "notes.png" in errors[1]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [Path(r["path"]).name for r in rows] == ["grace.jpg", "wall.png", "tiny.png"]
    grace, wall, small = rows
    assert len(grace["faces"]) == 1
    face = grace["faces"][0]
    assert face["label"] in LABELS and not face["fallback"]
    assert set(face) >= {"box", "label", "confidence", "unsure", "scores", "position", "fallback"}
    assert set(grace["timings_ms"]) >= {"detect", "landmarks", "align", "features", "classify"}
    assert grace["lowlight"] is False
    assert wall["faces"] == []
    assert len(small["faces"]) == 1 and small["faces"][0]["label"] in LABELS


def test_analyze_reads_a_large_photo_at_reduced_scale_and_boxes_faces_in_its_pixels(tmp_path: Path, grace_hopper):
    """A 4608×5400 JPEG is decoded at 2304×2700 (cli_analyze.MIN_SIDE); the box still comes in the
    photo's own pixels: nine times the box of the same portrait at 512×600."""
    small, big = tmp_path / "a_small.jpg", tmp_path / "b_big.jpg"
    cv2.imwrite(str(small), grace_hopper)
    cv2.imwrite(str(big), cv2.resize(grace_hopper, (512 * 9, 600 * 9), interpolation=cv2.INTER_CUBIC), [cv2.IMWRITE_JPEG_QUALITY, 85])
    proc = _analyze(small, big)
    assert proc.returncode == 0, proc.stderr
    ref, got = (json.loads(line)["faces"] for line in proc.stdout.splitlines())
    assert len(ref) == len(got) == 1 and got[0]["label"] == ref[0]["label"]
    assert np.abs(np.array(got[0]["box"]) - 9 * np.array(ref[0]["box"])).max() < 0.05 * 9 * ref[0]["box"][2]


def test_analyze_walks_folders(tmp_path: Path, grace_hopper):
    (tmp_path / "sub").mkdir()
    cv2.imwrite(str(tmp_path / "sub" / "a.png"), grace_hopper)
    cv2.imwrite(str(tmp_path / "b.jpg"), cv2.flip(grace_hopper, 1))
    (tmp_path / "readme.txt").write_text("not an image")
    proc = _analyze(tmp_path)
    assert proc.returncode == 0, proc.stderr
    names = [Path(json.loads(line)["path"]).name for line in proc.stdout.splitlines()]
    assert names == ["b.jpg", "a.png"]
