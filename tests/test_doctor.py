"""`python -m edge doctor`: names exactly what is missing, passes with fakes, catches bad files and heat."""

from __future__ import annotations

import json
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

import edge.cli_doctor as doctor
from edge.cli_doctor import FAIL, OK, Host
from edge.config import load_config

ROOT = Path(__file__).resolve().parents[1]
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install espeak-ng)")


def bare_host(tmp_path: Path) -> Host:
    """A machine with no camera, no GPIO, no sound card and no thermal zone (like this CI box)."""
    (tmp_path / "dev").mkdir()
    (tmp_path / "sys").mkdir()
    return Host(dev=tmp_path / "dev", sys=tmp_path / "sys")


def doctor_cli(monkeypatch, capsys, host: Host, argv: list[str]) -> tuple[int, str]:
    import edge.__main__ as entry

    monkeypatch.setattr(doctor, "HOST", host)
    code = entry.main(["doctor", *argv])
    return code, capsys.readouterr().out


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ("GPIOZERO_PIN_FACTORY", "EDGE_HW"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@needs_espeak
def test_bare_machine_names_camera_gpio_and_sound_card_and_exits_1(monkeypatch, capsys, tmp_path):
    code, out = doctor_cli(monkeypatch, capsys, bare_host(tmp_path), ["--config", str(ROOT / "examples" / "config.toml")])
    assert code == 1
    failed = [line.split()[0] for line in out.splitlines() if "  FAIL  " in line]
    assert failed == ["camera", "button", "audio"]  # "audio device"
    assert "no camera" in out and "no GPIO" in out and "no sound card" in out
    assert "3 problem(s): camera, button, audio device" in out
    assert out.count("fix:") == 3


@needs_espeak
def test_with_fakes_every_check_passes(monkeypatch, capsys, tmp_path):
    """Demo camera, gpiozero's mock pin factory, the null sink, and the bridge simulator for lux."""
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    code, out = doctor_cli(monkeypatch, capsys, bare_host(tmp_path), [
        "--set", "app.hw=real", "--set", "camera.source=demo", "--set", "speech.sink=null:",
        "--set", "light.source=serial", "--set", "bridge.port=sim",
    ])
    assert code == 0, out
    assert "FAIL" not in out and "all checks passed." in out
    assert "GPIO17 opens (pin factory mock)" in out
    assert "MCU sensor reads 200.0 lux" in out and "firmware 1.0.0" in out


def test_unplugged_bridge_fails_with_the_port_and_the_fix(tmp_path):
    config = load_config(env={}, overrides={"light.source": "serial", "bridge.port": str(tmp_path / "ttyGONE"),
                                            "bridge.timeout_s": 1.5})
    host = bare_host(tmp_path)
    bridge, lux = doctor.check_bridge(config)
    assert bridge.status == FAIL and "no such port" in bridge.detail and str(tmp_path / "ttyGONE") in bridge.detail
    light = doctor.check_light(config, host, lux)
    assert light.status == FAIL and "bridge down" in light.detail


def test_model_file_with_a_wrong_sha256_fails(tmp_path):
    sidecar = ROOT / "models" / "expression.json"
    files = json.loads(sidecar.read_text())["files"]
    for entry in files.values():
        shutil.copy(sidecar.parent / entry["file"], tmp_path / entry["file"])
    shutil.copy(sidecar, tmp_path / "expression.json")
    config = load_config(env={}, overrides={"vision.model": str(tmp_path / "expression.json")})
    assert doctor.check_models(config).status == OK
    victim = tmp_path / next(iter(files.values()))["file"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    check = doctor.check_models(config)
    assert check.status == FAIL and f"{victim.name} sha256 mismatch" in check.detail and check.fix


def test_model_file_that_matches_its_sha256_but_crashes_the_runtime_fails(tmp_path):
    from tests.test_model import damage_tflite

    sidecar = ROOT / "models" / "expression.json"
    for entry in json.loads(sidecar.read_text())["files"].values():
        shutil.copy(sidecar.parent / entry["file"], tmp_path / entry["file"])
    shutil.copy(sidecar, tmp_path / "expression.json")
    victim = damage_tflite(tmp_path / "expression.json")
    check = doctor.check_models(load_config(env={}, overrides={"vision.model": str(tmp_path / "expression.json")}))
    assert check.status == FAIL and f"{victim} crashed the TFLite runtime" in check.detail and check.fix


def test_model_check_warns_on_a_corrupt_enhancer(tmp_path):
    for name in ("expression", "enhancer"):
        sidecar = ROOT / "models" / f"{name}.json"
        for entry in json.loads(sidecar.read_text())["files"].values():
            shutil.copy(sidecar.parent / entry["file"], tmp_path / entry["file"])
        shutil.copy(sidecar, tmp_path / sidecar.name)
    config = load_config(env={}, overrides={"vision.model": str(tmp_path / "expression.json")})
    check = doctor.check_models(config)
    assert check.status == OK and "enhancer files match" in check.detail
    victim = tmp_path / next(iter(json.loads((tmp_path / "enhancer.json").read_text())["files"].values()))["file"]
    victim.write_bytes(victim.read_bytes()[:-7])
    check = doctor.check_models(config)
    assert check.status == "WARN" and f"{victim.name} sha256 mismatch" in check.detail and "gamma/CLAHE" in check.detail


@pytest.mark.parametrize("millidegrees, status", [(48_500, OK), (78_000, "WARN"), (91_000, FAIL)])
def test_cpu_temperature(tmp_path, monkeypatch, millidegrees, status):
    zone = tmp_path / "sys" / "class" / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "temp").write_text(f"{millidegrees}\n")
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)  # no vcgencmd
    check = doctor.check_temperature(Host(dev=tmp_path, sys=tmp_path / "sys"))
    assert check.status == status and f"{millidegrees / 1000:.1f} °C" in check.detail


def test_full_disk_fails(monkeypatch, tmp_path):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 20 * 10**6, 20 * 10**6))
    check = doctor.check_disk(load_config(env={}, overrides={"app.state_dir": str(tmp_path / "nope" / "state")}))
    assert check.status == FAIL and "20 MB free" in check.detail
