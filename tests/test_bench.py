"""`edge bench`: percentiles on known data, the --json contract on a short real run, the table, the plot.

No assertion here is about how fast anything is: timing is the benchmark's job, not the tests'.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from edge import bench
from edge.__main__ import main as edge_main
from edge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = ROOT / "models" / "expression.json"
CONTRACT_KEYS = {"machine", "stages", "frame_ms", "press_to_audio_ms", "facemesh_ratio", "peak_rss_mb", "ready_s"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_percentiles_on_known_data():
    assert bench.percentiles(list(range(1, 101))) == pytest.approx({"p50": 50.5, "p95": 95.05, "p99": 99.01})
    assert bench.percentiles([40.0, 10.0, 30.0, 20.0]) == pytest.approx({"p50": 25.0, "p95": 38.5, "p99": 39.7})
    assert bench.percentiles([7.0]) == {"p50": 7.0, "p95": 7.0, "p99": 7.0}
    assert bench.percentiles([]) == {"p50": None, "p95": None, "p99": None}


def test_process_start_is_in_the_past():
    started = bench.process_start_time()
    if started is None:
        pytest.skip("no Linux /proc here")
    import time

    assert 0 < time.time() - started < 24 * 3600


def _synthetic_result() -> bench.BenchResult:
    rng = np.random.default_rng(0)
    result = bench.BenchResult(source="demo", warmup=2, voice="espeak-ng:en", ready_s=1.25)
    result.machine = {"cpu": "test cpu", "arch": "x86_64", "cores": 2, "cores_usable": 2, "python": "3.11",
                      "backend": "tflite", "threads": 2, "model": "m.json", "model_file": "m.tflite"}
    result.frame_ms = list(rng.gamma(4.0, 3.0, 200)) + [400.0]  # one stall: the plot goes logarithmic
    result.stage_ms = {"detect": [0.0] * 190 + [3.0] * 11, "enhance": [0.5] * 201}
    result.faces_per_frame = [1] * 201
    result.press_ms = list(rng.gamma(4.0, 5.0, 30))
    result.earcon_ms = [0.5] * 30
    result.compare_ours_ms = [10.0, 12.0, 14.0]
    result.mediapipe_ms = [5.0, 6.0, 7.0]
    result.peak_rss_mb = 120.0
    return result


def test_report_has_the_contract_and_a_readable_table():
    report = _synthetic_result().to_json()
    assert CONTRACT_KEYS <= set(report)
    assert list(report["stages"]) == ["enhance", "detect"]  # pipeline order, "total" never a stage
    assert report["facemesh_ratio"] == pytest.approx(12.0 / 6.0)
    assert report["stages"]["detect"]["p50"] == 0.0
    json.dumps(report)  # plain JSON types only
    table = bench.format_table(report)
    assert "frame (analyze)" in table and "press -> first words" in table and "mediapipe facemesh" in table
    assert "facemesh ratio:       2.00" in table
    assert "\x1b[" not in table  # no colour codes over SSH
    assert all(len(line) <= 160 for line in table.splitlines())


def test_plot_is_a_png_and_nothing_else_is_left(tmp_path):
    target = tmp_path / "latency.png"
    bench.write_plot(_synthetic_result(), target)
    assert target.read_bytes()[:8] == PNG_SIGNATURE
    assert target.stat().st_size > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latency.png"]
    import matplotlib.image

    assert matplotlib.image.imread(str(target)).shape[:2] == (650, 900)


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600)])
def test_plot_is_an_ordinary_file_that_follows_the_umask(tmp_path, umask, expected):
    target = tmp_path / "latency.png"
    old = os.umask(umask)
    try:
        bench.write_plot(_synthetic_result(), target)
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == expected


def test_write_atomic_sets_an_explicit_mode_exactly(tmp_path):
    from edge.files import write_atomic

    old = os.umask(0)
    try:
        write_atomic(tmp_path / "secret", b"token\n", mode=0o600)  # tokens: never readable by others
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]


def test_plot_without_matplotlib_is_one_line_naming_the_fix(tmp_path, no_matplotlib):
    with pytest.raises(ConfigError, match=r"^--plot needs matplotlib .*requirements-dev\.txt") as caught:
        bench.write_plot(_synthetic_result(), tmp_path / "latency.png")
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def _stand_in_model(folder: Path) -> Path:
    """A tiny ONNX model with the real model's inputs and sidecar (only until models/ ships one)."""
    onnx = pytest.importorskip(
        "onnx", reason="models/expression.json is not shipped yet and `onnx` (training extras) is not installed"
    )
    from onnx import TensorProto, helper, numpy_helper

    from edge.results import LABELS
    from edge.vision.upperface import PREPROCESSING_VERSION

    weights = np.random.default_rng(0).normal(0, 0.01, (47 * 74, 7)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["landmarks", "shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["mm"]),
            helper.make_node("ReduceMean", ["face"], ["mean"], axes=[1, 2, 3], keepdims=0),
            helper.make_node("Unsqueeze", ["mean", "one"], ["mean1"]),
            helper.make_node("Add", ["mm", "mean1"], ["logits"]),
        ],
        "stand_in",
        [helper.make_tensor_value_info("face", TensorProto.FLOAT, ["n", 1, 48, 48]),
         helper.make_tensor_value_info("landmarks", TensorProto.FLOAT, ["n", 47, 74])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 7])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(np.array([-1, 47 * 74], np.int64), "shape"),
         numpy_helper.from_array(np.array([1], np.int64), "one")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = folder / "stand_in.onnx"
    onnx.save(model, str(path))
    sidecar = folder / "expression.json"
    sidecar.write_text(json.dumps({
        "labels": list(LABELS), "preprocessing": PREPROCESSING_VERSION,
        "inputs": [{"name": "face"}, {"name": "landmarks"}],
        "files": {"onnx-int8": {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}},
        "temperature": 1.0, "unsure_threshold": 0.4,
    }))
    return sidecar


@pytest.fixture
def model_settings(tmp_path) -> list[str]:
    if SHIPPED_MODEL.is_file():
        return []
    folder = tmp_path / "model"
    folder.mkdir()
    return ["--set", f"vision.model={_stand_in_model(folder)}", "--set", "vision.backend=onnx"]


def test_bench_json_short_run(tmp_path, model_settings, capsys):
    plot = tmp_path / "bench.png"
    code = edge_main([
        "bench", "--json", "--frames", "4", "--warmup", "1", "--presses", "2", "--plot", str(plot),
        "--set", f"speech.cache_dir={tmp_path / 'cache'}", "--set", f"app.state_dir={tmp_path / 'state'}",
        *model_settings,
    ])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert CONTRACT_KEYS <= set(report)
    assert {"enhance", "detect", "landmarks", "align", "features", "classify"} <= set(report["stages"])
    for block in [*report["stages"].values(), report["frame_ms"], report["press_to_audio_ms"]]:
        assert set(block) == {"p50", "p95", "p99"}
        assert all(isinstance(v, float) and v >= 0 for v in block.values())
        assert block["p50"] <= block["p95"] <= block["p99"]
    assert report["frames"] == 4 and report["presses"] == 2
    assert report["facemesh_ratio"] is None  # no --compare-mediapipe
    assert isinstance(report["peak_rss_mb"], float) and report["peak_rss_mb"] > 10
    assert isinstance(report["ready_s"], float) and report["ready_s"] > 0
    assert report["machine"]["cores"] >= 1 and report["machine"]["python"].startswith("3.")
    assert report["faces_per_frame"] == 1.0  # the demo face is found, not taken whole
    assert report["spoken"] and "earcon" not in report["spoken"]
    assert plot.read_bytes()[:8] == PNG_SIGNATURE


def test_without_espeak_the_bench_speaks_with_the_tone_voice_from_edge(monkeypatch):
    from edge.config import Config
    from edge.speech.tts import PiperTTS

    monkeypatch.setattr(bench.shutil, "which", lambda name: None)
    speech = bench.bench_config(Config(), "demo").speech
    voice = Path(speech.voice)
    assert voice == bench.TEST_VOICE and voice.is_file() and speech.sink == "null:"
    assert ROOT / "edge" in voice.resolve().parents  # shipped with the package, not read from tests/
    assert len(PiperTTS(voice).synthesize_clip("ready").samples) > 0


def test_bench_plot_without_matplotlib_is_refused_before_the_measurement(tmp_path, no_matplotlib, monkeypatch):
    import edge.__main__ as entry

    def never(*args, **kwargs):
        raise AssertionError("the bench ran although its plot could not be written")

    monkeypatch.setattr(bench, "run", never)
    assert entry.main(["bench", "--frames", "5", "--plot", str(tmp_path / "lat.png")]) == 2
    assert list(tmp_path.iterdir()) == []
