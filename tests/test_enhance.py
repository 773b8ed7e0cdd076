"""The low-light branch: the shipped learned enhancer, its fallback, and when it runs."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.config import LightConfig
from edge.hw.light import open_light
from edge.vision import enhance
from edge.vision.enhance import ClassicalEnhancer, LearnedEnhancer, apply_maps, brightness, day_or_night, load_enhancer
from export.darken import render_dark

from .conftest import ROOT, StepClock

SIDECAR = ROOT / "models" / "enhancer.json"
needs_model = pytest.mark.skipif(not SIDECAR.is_file(), reason="models/enhancer.json not built yet (python -m export enhancer all)")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


@pytest.fixture(scope="module")
def dark_hopper(grace_hopper) -> np.ndarray:
    return render_dark(grace_hopper, 0.06, np.random.default_rng(0))


def _copy_model(tmp_path: Path) -> Path:
    spec = json.loads(SIDECAR.read_text())
    for entry in spec["files"].values():
        shutil.copyfile(SIDECAR.parent / entry["file"], tmp_path / entry["file"])
    shutil.copyfile(SIDECAR, tmp_path / SIDECAR.name)
    return tmp_path / SIDECAR.name


@needs_model
def test_onnx_and_tflite_files_give_the_same_maps_and_frames(dark_hopper):
    onnx, tflite = LearnedEnhancer(SIDECAR, backend="onnx"), LearnedEnhancer(SIDECAR, backend="tflite")
    rng = np.random.default_rng(3)
    frames = [dark_hopper, render_dark(dark_hopper[::-1], 0.5, rng), rng.integers(0, 60, (120, 160, 3), dtype=np.uint8)]
    for frame in frames:
        a, b = onnx.maps(frame), tflite.maps(frame)
        assert a.shape == b.shape and a.shape[1:] == (32, 32) and a.shape[0] >= 4
        assert np.abs(a - b).max() < 1e-3
        assert np.abs(onnx.enhance(frame).astype(int) - tflite.enhance(frame).astype(int)).max() <= 1
    onnx.close(), tflite.close()


@needs_model
def test_learned_enhancer_brings_a_dark_face_back_better_than_gamma_clahe(grace_hopper, dark_hopper):
    ours = LearnedEnhancer(SIDECAR)
    enhanced = ours.enhance(dark_hopper)
    assert enhanced.shape == dark_hopper.shape and enhanced.dtype == np.uint8
    assert brightness(dark_hopper) < 50 < brightness(enhanced)
    assert psnr(enhanced, grace_hopper) > psnr(dark_hopper, grace_hopper) + 10
    assert psnr(enhanced, grace_hopper) > psnr(ClassicalEnhancer().enhance(dark_hopper), grace_hopper) + 3
    gray = ours.enhance(dark_hopper[:, :, 1])  # FER2013-style grey input stays grey
    assert gray.shape == dark_hopper.shape[:2]


def test_maps_are_applied_as_gains_and_smoothing():
    frame = np.full((30, 40, 3), 40, np.uint8)
    frame[10, 10] = 200
    gains = np.ones((4, 8, 8), np.float32) * np.array([2.0, 3.0, 1.0, 0.0], np.float32)[:, None, None]
    out = apply_maps(frame, gains)
    assert tuple(out[0, 0]) == (80, 120, 40) and tuple(out[10, 10]) == (255, 255, 200)
    gains[3] = 1.0  # fully smoothed: the bright pixel is spread out
    assert apply_maps(frame, gains)[10, 10, 2] < 100


@needs_model
def test_corrupt_enhancer_is_refused_with_one_log_line_and_the_classical_branch_runs(tmp_path, caplog, dark_hopper):
    sidecar = _copy_model(tmp_path)
    onnx_file = tmp_path / json.loads(sidecar.read_text())["files"]["onnx-fp32"]["file"]
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    caplog.set_level(logging.INFO, logger="edge.vision.enhance")
    enhancer = load_enhancer(sidecar, backend="onnx")
    assert isinstance(enhancer, ClassicalEnhancer)
    warnings = [r for r in caplog.records if r.name == "edge.vision.enhance" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "does not match its sidecar" in warnings[0].getMessage()
    assert "classical" in warnings[0].getMessage()
    out, night, _ = day_or_night(dark_hopper, True, enhancer)
    assert night and np.array_equal(out, enhance.enhance_classical(dark_hopper))


def test_missing_enhancer_falls_back_in_the_pipeline(tmp_path, caplog, grace_hopper, dark_hopper):
    from edge.pipeline import Pipeline

    caplog.set_level(logging.INFO, logger="edge.vision.enhance")
    with Pipeline(enhancer=tmp_path / "no-such-enhancer.json", threads=1) as pipeline:
        assert pipeline.enhancer.name == "classical"
        result = pipeline.analyze(dark_hopper, lowlight=True)
    assert result.lowlight is True and "enhance" in result.timings_ms
    warnings = [r for r in caplog.records if r.name == "edge.vision.enhance" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "is missing" in warnings[0].getMessage()


@needs_model
def test_the_pipeline_night_branch_uses_the_learned_enhancer(dark_hopper, grace_hopper):
    from edge.pipeline import Pipeline

    with Pipeline(threads=1) as pipeline:
        assert isinstance(pipeline.enhancer, LearnedEnhancer)
        night = pipeline.analyze(dark_hopper, lowlight=None)  # auto: the frame is dark
        day = pipeline.analyze(grace_hopper, lowlight=None)
    assert night.lowlight is True and len(night.faces) == 1 and not night.faces[0].fallback
    assert day.lowlight is False


def test_auto_mode_leaves_bright_frames_untouched(grace_hopper):
    class Recorder:
        name = "recorder"
        calls = 0

        def enhance(self, frame):
            self.calls += 1
            return frame // 2

        def close(self):
            pass

    rec = Recorder()
    out, night, level = day_or_night(grace_hopper, None, rec)
    assert out is grace_hopper and not night and level > 50 and rec.calls == 0
    _, night, _ = day_or_night(grace_hopper // 8, None, rec)
    assert night and rec.calls == 1


def test_no_sensor_frame_brightness_switch_does_not_flap_around_its_threshold():
    """The no-sensor path: frame luma jittering around frame_night_luma flips the branch at most once."""
    source, switch = open_light(LightConfig(source="frame"), real=False, clock=StepClock(0.5))
    rng = np.random.default_rng(4)
    lumas = 50.0 + rng.uniform(-15.0, 15.0, 400)  # straddles 50, never reaches frame_day_luma 70
    naive = np.sum(np.diff((lumas < 50.0).astype(int)) != 0)
    modes = []
    for luma in lumas:
        source.observe(float(luma))
        modes.append(switch.update(source.read()))
    assert naive > 100
    assert sum(a != b for a, b in zip(modes, modes[1:])) <= 1


def test_the_camera_keeps_the_midtone_and_gets_noisier_as_the_light_falls(grace_hopper):
    import cv2

    from edge.vision.enhance import noise_level
    from export.darken import camera_parameters, render_camera

    small = cv2.resize(grace_hopper, (160, 200), interpolation=cv2.INTER_AREA)
    frames = {e: render_camera(small, e, np.random.default_rng(0)) for e in (200.0, 20.0, 5.0, 2.0)}
    for e, frame in frames.items():
        assert frame.shape == small.shape and frame.dtype == np.uint8
        assert abs(brightness(frame) - brightness(small)) < 20, e  # auto-exposure: noisy, not dark
    noise = [noise_level(frames[e]) for e in (200.0, 20.0, 5.0, 2.0)]
    assert noise == sorted(noise) and noise[-1] > 2 * noise[0]
    assert np.array_equal(render_camera(small, 5.0, np.random.default_rng(1)), render_camera(small, 5.0, np.random.default_rng(1)))
    slow, fast = camera_parameters(2.0), camera_parameters(200.0)
    assert slow["exposure_s"] > fast["exposure_s"] and slow["analog_gain"] > fast["analog_gain"] == 1.0
    assert render_camera(small[:, :, 0], 50.0, np.random.default_rng(0)).shape == small.shape  # grey in, colour camera out
