"""One day/night rule (#19): the wearer loop's switch and every single-frame caller (`analyze`, the
offload server, `export evaluate`, bench through the wearer's pipeline) decide the night branch the
same way, from the thresholds in [light] of the config file."""

from __future__ import annotations

import argparse
import contextlib
import json

import cv2
import numpy as np
import pytest

import edge.__main__ as entry
import edge.app as app_module
from edge.config import LightConfig, load_config
from edge.hw.light import LOWLIGHT, frame_is_night, open_light
from edge.vision.enhance import day_or_night

from .conftest import MODEL_SIDECAR, StepClock

needs_model = pytest.mark.skipif(not MODEL_SIDECAR.is_file(), reason="models/expression.json not built yet")

DUSK = "[light]\nframe_night_luma = 250.0\nframe_day_luma = 252.0\ntoo_dark_luma = 30.0\n"
"""A config under which every ordinary photo is night (Grace Hopper's mean luma is about 100)."""


@pytest.fixture
def dusk(tmp_path):
    path = tmp_path / "dusk.toml"
    path.write_text(DUSK)
    return path


def test_a_frame_alone_is_decided_as_the_wearer_switch_decides_its_first_frame():
    """frame_is_night, day_or_night(lowlight=None) and a fresh frame-brightness switch agree on every
    luma, with the default thresholds and with configured ones (before: a fixed 50, config ignored)."""
    for light in (LightConfig(), LightConfig(frame_night_luma=80.0, frame_day_luma=120.0)):
        for level in range(256):
            source, switch = open_light(light, real=False, clock=StepClock(1.0))
            source.observe(float(level))
            wearer = switch.update(source.read())
            _, single, measured = day_or_night(np.full((24, 32), level, np.uint8), None, light=light)
            assert measured == level and single == wearer == frame_is_night(level, light), (light, level)
            assert wearer == (level < light.frame_night_luma)
    assert frame_is_night(60.0) is False and frame_is_night(60.0, LightConfig(frame_night_luma=80.0, frame_day_luma=120.0)) is True


def test_the_lowlight_options_are_written_once():
    from edge import bench, cli_analyze
    from edge.offload import server
    from export import evaluate

    for module in (cli_analyze, server, evaluate, bench):
        assert module.LOWLIGHT is LOWLIGHT, module.__name__
    assert LOWLIGHT == {"auto": None, "on": True, "off": False}


@needs_model
def test_analyze_auto_follows_the_config_files_light_thresholds(grace_hopper, tmp_path, dusk, capsys):
    photo = tmp_path / "grace.png"
    cv2.imwrite(str(photo), grace_hopper)
    assert entry.main(["analyze", "--json", str(photo)]) == 0
    assert entry.main(["analyze", "--json", "--config", str(dusk), str(photo)]) == 0
    day, dusk_result = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert day["lowlight"] is False and dusk_result["lowlight"] is True
    assert len(dusk_result["faces"]) == 1  # the night branch still reads the face


@needs_model
def test_serve_reads_light_from_the_config_file(grace_hopper, tmp_path, dusk, monkeypatch):
    """`edge serve --config`: the day/night and too-dark thresholds are the file's, not LightConfig()'s."""
    from edge.offload import server
    from edge.offload.tokens import TokenStore

    tokens = tmp_path / "tokens.json"
    TokenStore(tokens).add("glasses")
    seen = {}
    make_app = server.make_app

    def recording_make_app(analyzer, *args, **kwargs):
        seen["analyzer"] = analyzer
        return make_app(analyzer, *args, **kwargs)

    async def no_serve(app, host, port, ssl_context, idle_timeout_s):  # analyse once, as a request would, then stop
        analyzer = seen["analyzer"]
        seen["lowlight"] = analyzer.run(cv2.imencode(".png", grace_hopper)[1].tobytes(), LOWLIGHT["auto"]).lowlight

    monkeypatch.setattr(server, "make_app", recording_make_app)
    monkeypatch.setattr(server, "serve", no_serve)
    argv = ["serve", "--insecure-http", "--no-speech", "--threads", "1", "--tokens", str(tokens), "--config", str(dusk)]
    assert entry.main(argv) == 0
    assert seen["analyzer"].light == load_config(dusk, env={}).light
    assert seen["analyzer"].light.too_dark_luma == 30.0
    assert seen["lowlight"] is True


@needs_model
def test_evaluate_auto_uses_the_config_rule_and_reports_the_night_share(grace_hopper, tmp_path, dusk, capsys):
    from export import evaluate

    gray = cv2.cvtColor(grace_hopper, cv2.COLOR_BGR2GRAY)
    x = np.stack([cv2.resize(gray[140 + d : 330 + d, 170 + d : 350 + d], (48, 48), interpolation=cv2.INTER_AREA) for d in (0, 8)])
    data = tmp_path / "faces.npz"
    np.savez(data, x=x, y=np.array([6, 6]))
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    assert evaluate.main(parser.parse_args(["--data", str(data), "--json", "--config", str(dusk)])) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["lowlight"] == "auto" and out["night"] == 1.0 and out["n"] == 2


@needs_model
def test_the_wearer_pipeline_and_bench_get_the_light_section(grace_hopper, dusk, monkeypatch):
    """open_core (run, bench) hands [light] to the pipeline, so bench's lowlight=auto frames follow it."""

    @contextlib.contextmanager
    def no_speech(config):
        yield app_module.Speech(voice=None, cache=None, sink=None, earcon=None)

    monkeypatch.setattr(app_module, "open_speech", no_speech)
    config = load_config(dusk, env={}, overrides={"vision.threads": 1})
    with app_module.open_core(config) as parts:
        assert parts.pipeline.light == config.light
        assert parts.pipeline.analyze(grace_hopper, lowlight=None).lowlight is True

