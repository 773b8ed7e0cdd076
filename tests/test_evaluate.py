"""`export evaluate` contract and the metrics behind it (device environment: no torch needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.results import LABELS
from export.metrics import report

from .conftest import MODEL_SIDECAR, ROOT


def test_report_on_known_predictions():
    y_true = np.array([3, 3, 3, 3, 6, 6, 0, 0])
    y_pred = np.array([3, 3, 3, 6, 6, 3, 0, 6])
    r = report(y_true, y_pred)
    assert r["n"] == 8 and r["accuracy"] == pytest.approx(5 / 8)
    happy = r["per_class"]["happy"]
    assert happy["precision"] == pytest.approx(3 / 4) and happy["recall"] == pytest.approx(3 / 4)
    assert happy["specificity"] == pytest.approx(3 / 4)  # 4 non-happy faces, one called happy
    neutral = r["per_class"]["neutral"]
    assert neutral["precision"] == pytest.approx(1 / 3, abs=1e-3) and neutral["recall"] == pytest.approx(1 / 2)
    assert r["per_class"]["angry"]["specificity"] == pytest.approx(1.0)
    assert r["confusion"][3][6] == 1 and r["confusion"][0][6] == 1 and sum(map(sum, r["confusion"])) == 8
    f1s = [m["f1"] for m in r["per_class"].values()]
    assert r["macro_f1"] == pytest.approx(np.mean(f1s), abs=1e-3)


def _evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "export", "evaluate", *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.mark.skipif(not MODEL_SIDECAR.is_file(), reason="models/expression.json not built yet")
def test_evaluate_prints_the_contract_and_a_picture(tmp_path: Path, grace_hopper):
    gray = cv2.cvtColor(grace_hopper, cv2.COLOR_BGR2GRAY)
    crops = [cv2.resize(gray[140 + d : 330 + d, 170 + d : 350 + d], (48, 48), interpolation=cv2.INTER_AREA) for d in range(0, 24, 4)]
    x = np.stack(crops + [c[:, ::-1] for c in crops]).astype(np.uint8)
    y = np.array([6, 3, 6, 3, 6, 3] * 2)
    data = tmp_path / "faces.npz"
    np.savez(data, x=x, y=y)
    plot = tmp_path / "cm.png"
    proc = _evaluate("--data", str(data), "--json", "--plot", str(plot))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["n"] == 12 and 0.0 <= out["accuracy"] <= 1.0 and 0.0 <= out["macro_f1"] <= 1.0
    assert list(out["per_class"]) == list(LABELS)
    assert all(set(m) == {"precision", "recall", "specificity", "f1"} for m in out["per_class"].values())
    cm = np.array(out["confusion"])
    assert cm.shape == (7, 7) and cm.sum() == 12 and cm[[0, 1, 2, 4, 5]].sum() == 0
    assert out["accuracy"] == pytest.approx(np.trace(cm) / 12, abs=1e-4)
    assert out["model"] == "expression.int8.onnx"  # the shipped int8 file of the default backend
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not MODEL_SIDECAR.is_file(), reason="models/expression.json not built yet")
def test_evaluate_with_five_classes_merges_the_labels_and_keeps_the_keys(tmp_path: Path, grace_hopper):
    gray = cv2.cvtColor(grace_hopper, cv2.COLOR_BGR2GRAY)
    x = np.stack([cv2.resize(gray[140 + d : 330 + d, 170 + d : 350 + d], (48, 48), interpolation=cv2.INTER_AREA) for d in range(0, 28, 4)])
    data = tmp_path / "faces.npz"
    np.savez(data, x=x, y=np.array([0, 1, 2, 3, 4, 5, 6]))  # one face of each FER2013 label
    seven = json.loads(_evaluate("--data", str(data), "--json").stdout)
    proc = _evaluate("--data", str(data), "--json", "--set", "vision.classes=5")
    assert proc.returncode == 0, proc.stderr
    five = json.loads(proc.stdout)
    assert set(seven) <= set(five) and five["classes"] == 5 and seven["classes"] == 7
    assert list(five["per_class"]) == ["angry_disgust", "fear_surprise", "happy", "sad", "neutral"]
    cm = np.array(five["confusion"])
    assert cm.shape == (5, 5) and cm.sum(axis=1).tolist() == [2, 2, 1, 1, 1]  # angry + disgust, fear + surprise merged
    assert five["accuracy"] == pytest.approx(np.trace(cm) / 7, abs=1e-4) and five["n"] == seven["n"] == 7


def test_split_accuracy_separates_aligned_and_whole_image_reads():
    from export.evaluate import split_accuracy

    y = np.array([0, 1, 2, 3, 4])
    preds = np.array([0, 1, 0, 3, 0])
    aligned = np.array([True, True, True, False, False])
    assert split_accuracy(y, preds, aligned) == {"aligned": 0.6, "accuracy_aligned": 0.6667, "accuracy_unaligned": 0.5}
    assert split_accuracy(y, preds, np.ones(5, bool))["accuracy_unaligned"] is None
    answered = np.array([True, False, True, True, False])
    split = split_accuracy(y, preds, aligned, answered)
    assert split["answered"] == 0.6 and split["accuracy_answered"] == 0.6667
    assert split_accuracy(y, preds, aligned, np.zeros(5, bool))["accuracy_answered"] is None


def test_predict_counts_the_spoken_answers_and_the_largest_face():
    """predict() reads each image's largest face and counts "not sure" faces as not answered."""
    from edge.results import FaceResult, FrameResult, Position
    from export.evaluate import predict

    def face(label: str, unsure: bool, size: int, aligned: bool = True) -> FaceResult:
        return FaceResult(box=(0, 0, size, size), label=label, confidence=0.4 if unsure else 0.9, unsure=unsure,
                          scores={}, position=Position(12, 1.0, 0.5), fallback=not aligned, aligned=aligned)

    frames = [
        FrameResult(faces=(face("sad", False, 10), face("happy", True, 30)), lowlight=False),  # largest: happy, unsure
        FrameResult(faces=(face("angry", False, 20),), lowlight=False),
        FrameResult(faces=(face("neutral", False, 20, aligned=False),), lowlight=False),
    ]

    class Stub:
        def __init__(self) -> None:
            self.frames = iter(frames)

        def analyze(self, image, lowlight, assume_face):
            assert assume_face
            return next(self.frames)

    y = np.array([LABELS.index("happy"), LABELS.index("angry"), LABELS.index("sad")])
    preds, extra = predict(Stub(), np.zeros((3, 48, 48), np.uint8), None, y)
    assert [LABELS[p] for p in preds] == ["happy", "angry", "neutral"]
    assert extra["answered"] == 0.6667 and extra["accuracy_answered"] == 0.5
    assert extra["aligned"] == 0.6667 and extra["accuracy_unaligned"] == 0.0 and extra["detected"] == 0.6667


@pytest.mark.skipif(not MODEL_SIDECAR.is_file(), reason="models/expression.json not built yet")
def test_min_presence_zero_aligns_every_image_and_a_bad_level_is_refused(tmp_path: Path, grace_hopper):
    """Noise, not a face: the landmark model's presence is low, so by default it is read whole;
    with --min-presence 0 the mesh's landmarks are taken anyway."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4, 48, 48), dtype=np.uint8)
    data = tmp_path / "noise.npz"
    np.savez(data, x=x, y=np.zeros(4, np.int64))
    default = json.loads(_evaluate("--data", str(data), "--json").stdout)
    assert default["aligned"] == 0.0 and default["accuracy_aligned"] is None and default["min_presence"] == 0.5
    forced = json.loads(_evaluate("--data", str(data), "--json", "--min-presence", "0").stdout)
    assert forced["aligned"] == 1.0 and forced["accuracy_unaligned"] is None and forced["min_presence"] == 0.0
    proc = _evaluate("--data", str(data), "--json", "--min-presence", "1.5")
    assert proc.returncode != 0 and "--min-presence 1.5: must be within 0..1" in proc.stderr and proc.stdout == ""


def test_evaluate_rejects_a_bad_file_with_the_reason(tmp_path: Path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((2, 48, 48), np.uint8))
    proc = _evaluate("--data", str(bad), "--json")
    assert proc.returncode == 2 and "needs arrays 'x'" in proc.stderr and proc.stdout == ""


def test_evaluate_runs_without_the_training_extras(tmp_path):
    """The glasses' venv has no torch: `export evaluate` must not import it, even through another command's module."""
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
        "from export.__main__ import main\n"
        "try:\n    code = main(['evaluate', '--help'])\nexcept SystemExit as exc:\n    code = exc.code\nsys.exit(code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--lowlight" in proc.stdout
    proc = subprocess.run([sys.executable, "-c", code.replace("'evaluate'", "'enhancer'")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "make train-setup" in proc.stderr


@pytest.mark.parametrize("command", ["evaluate", "distance", "lightcurve"])
def test_plot_without_matplotlib_is_refused_before_the_run(tmp_path, no_matplotlib, capsys, command):
    """Not after minutes of evaluation: the missing data file is not even looked at."""
    from export.__main__ import main as export_main

    code = export_main([command, "--data", str(tmp_path / "missing.npz"), "--plot", str(tmp_path / "plot.png")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: --plot needs matplotlib") and "requirements-dev.txt" in err
    assert list(tmp_path.iterdir()) == []
