"""`python -m edge doctor` — can this device work? One line per part: what is wrong and how to fix it.

    python -m edge doctor                      # the configured parts (/etc/glasses/config.toml)
    python -m edge doctor --set app.hw=fake --set camera.source=demo --set speech.sink=null:

Checks the camera, the button pin, the lux source, the serial bridge, the audio device, the voice,
the model files (sha256 against their sidecar), CPU temperature and throttling (on a Pi) and free
disk. Exit code 1 when any check FAILs (the glasses cannot work as configured), else 0.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.cli_config import add_config_arguments, config_from_args
from edge.files import sha256_file

_LOGGER = logging.getLogger(__name__)

OK, WARN, FAIL, SKIP = "ok", "WARN", "FAIL", "skip"
MIN_FREE_MB, LOW_FREE_MB = 100, 500
HOT_C, CRITICAL_C = 75.0, 85.0
_THROTTLE_BITS = {
    0x1: "under-voltage now", 0x2: "ARM frequency capped now", 0x4: "throttled now", 0x8: "soft temperature limit now",
    0x10000: "under-voltage since boot", 0x20000: "frequency capped since boot", 0x40000: "throttled since boot",
    0x80000: "soft temperature limit since boot",
}


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Host:
    """Where the probes look; tests point these at a temporary tree."""

    dev: Path = Path("/dev")
    sys: Path = Path("/sys")


HOST = Host()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object per check instead of the table")


def main(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    checks = run_checks(config, HOST)
    if args.json:
        for check in checks:
            print(json.dumps(check.__dict__))
    else:
        sys.stdout.write(format_table(checks))
    failed = [c.name for c in checks if c.status == FAIL]
    if failed:
        print(f"\n{len(failed)} problem(s): {', '.join(failed)} — the glasses cannot work as configured.")
        return 1
    print("\nall checks passed.")
    return 0


def format_table(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{'check':<{width}}  status  detail", f"{'-' * width}  ------  ------"]
    for c in checks:
        lines.append(f"{c.name:<{width}}  {c.status:<6}  {c.detail}")
        if c.fix:
            lines.append(f"{'':<{width}}          fix: {c.fix}")
    return "\n".join(lines) + "\n"


def run_checks(config: Any, host: Host) -> list[Check]:
    checks = [check_camera(config, host), check_button(config, host)]
    bridge_check, bridge_lux = check_bridge(config)
    checks += [check_light(config, host, bridge_lux), bridge_check, check_audio(config, host), check_voice(config)]
    checks += [check_models(config), check_temperature(host), check_disk(config)]
    return checks


# --------------------------------------------------------------------------- the checks


def check_camera(config: Any, host: Host) -> Check:
    source = config.camera.source
    if source in ("demo", "scene"):
        return Check("camera", OK, f"demo face (camera.source = {source}; no camera used)")
    if source != "auto" and not (isinstance(source, int) or str(source).isdigit() or str(source).startswith("/dev/")):
        path = Path(str(source)).expanduser()
        if path.exists():
            return Check("camera", OK, f"file source {path}")
        return Check("camera", FAIL, f"camera.source {source!r}: no such file or folder",
                     'set camera.source to "auto", a /dev/video* device, a video file or a folder of images')
    if source == "auto":
        devices = sorted(glob.glob(str(host.dev / "video*")))
        if not devices:
            return Check("camera", FAIL, f"no camera: no {host.dev}/video* device",
                         "plug in a USB camera, or enable the CSI camera (camera_auto_detect=1 in config.txt); "
                         "or camera.source = demo")
    else:
        devices = [f"/dev/video{source}" if str(source).isdigit() else str(source)]
    from edge.errors import CameraError
    from edge.hw.camera import DeviceReader

    problems = []
    for device in devices:
        try:
            reader = DeviceReader(device, config.camera.width, config.camera.height, config.camera.fps)
        except CameraError as exc:
            problems.append(str(exc))
            continue
        try:
            image = reader.read()
            return Check("camera", OK, f"{device} delivers {image.shape[1]}x{image.shape[0]} frames")
        except CameraError as exc:
            problems.append(str(exc))
        finally:
            reader.close()
    return Check("camera", FAIL, f"no camera delivers frames ({'; '.join(problems)})",
                 "check the cable, and that the user is in group video (ls -l /dev/video*)")


def _gpio_available(host: Host) -> tuple[bool, str]:
    factory = os.environ.get("GPIOZERO_PIN_FACTORY", "")
    if factory:
        return True, f"pin factory {factory}"
    chips = sorted(glob.glob(str(host.dev / "gpiochip*")))
    if chips:
        return True, Path(chips[0]).name
    return False, ""


def check_button(config: Any, host: Host) -> Check:
    if config.app.hw == "fake":
        return Check("button", OK, "fake (app.hw = fake: Enter on the terminal, or --presses)")
    available, how = _gpio_available(host)
    if not available:
        return Check("button", FAIL, f"no GPIO: no {host.dev}/gpiochip* (not a Raspberry Pi, or no GPIO driver)",
                     "run on the Pi; elsewhere set app.hw = fake (terminal button)")
    from gpiozero import Button

    try:
        button = Button(config.button.pin, pull_up=True)
    except Exception as exc:  # noqa: BLE001 — gpiozero raises many kinds (bad name, busy, no access)
        return Check("button", FAIL, f"button.pin {config.button.pin}: cannot open ({exc})",
                     "check the pin name (e.g. GPIO17) and that the user is in group gpio")
    try:
        state = "pressed" if button.is_pressed else "released"
    finally:
        button.close()
    return Check("button", OK, f"{config.button.pin} opens ({how}), reads {state}")


def check_bridge(config: Any) -> tuple[Check, tuple[float | None, str]]:
    """The bridge check, and (lux, problem) for the light check when the lux source is the bridge."""
    bridge_config = config.bridge
    if not bridge_config.port:
        return Check("serial bridge", SKIP, "not configured (bridge.port is empty)"), (None, "no bridge.port")
    import time

    from edge.errors import HardwareError
    from edge.hw.bridge import Bridge
    from firmware_bridge.firmware import wire

    bridge = Bridge.open(bridge_config, backoff=(0.2, 1.0))
    try:
        if not bridge.link.wait_connected(bridge_config.timeout_s + 1.0):
            reason = bridge.link.error or f"no answer from the MCU on {bridge.port}"
            return (Check("serial bridge", FAIL, reason, "see docs/hardware-and-wiring.md, 'Bridge wiring'"),
                    (None, "bridge down"))
        deadline = time.monotonic() + min(3.0, bridge_config.stale_s)
        while bridge.lux() is None and not bridge.sensor_problem and time.monotonic() < deadline:
            time.sleep(0.05)
        caps, sensor, version = bridge.link.hello.values
        try:
            rtt = f", ping {bridge.link.ping(timeout=1.0) * 1000:.0f} ms"
        except HardwareError:
            rtt = ", no answer to ping"
        battery = f", battery {bridge.battery_mv / 1000:.2f} V" if bridge.battery_mv else ""
        parts = [p for cap, p in ((wire.CAP_BUTTON, "button"), (wire.CAP_HAPTIC, "haptic")) if caps & cap]
        detail = (f"firmware {version.decode('ascii', 'replace')} on {bridge.port}, lux sensor "
                  f"{wire.SENSOR_NAMES.get(sensor, '?')}, {' + '.join(parts) or 'no button/haptic'}{battery}{rtt}")
        lux = bridge.lux()
        return Check("serial bridge", OK, detail), (lux, bridge.sensor_problem or ("" if lux is not None else "no lux reading"))
    finally:
        bridge.close()


def check_light(config: Any, host: Host, bridge_lux: tuple[float | None, str]) -> Check:
    source = config.light.source
    if source == "frame":
        return Check("lux source", OK, "frame brightness (light.source = frame; no sensor)")
    if source == "serial":
        lux, problem = bridge_lux
        if lux is not None:
            return Check("lux source", OK, f"MCU sensor reads {lux:.1f} lux")
        return Check("lux source", FAIL, f"MCU lux sensor: {problem}",
                     "fix the serial bridge (below), or light.source = frame")
    if config.app.hw == "fake":
        return Check("lux source", WARN, "light.source = gpio but app.hw = fake: frame brightness is used")
    available, _ = _gpio_available(host)
    if not available:
        return Check("lux source", FAIL, f"light.source = gpio but no GPIO ({host.dev}/gpiochip*)",
                     "run on the Pi, or light.source = frame")
    from edge.errors import HardwareError
    from edge.hw.light import GpioLightSensor

    try:
        sensor = GpioLightSensor(config.light.pin)
    except HardwareError as exc:
        return Check("lux source", FAIL, str(exc), "check light.pin and the LDR/capacitor wiring")
    try:
        lux = sensor.read()
    finally:
        sensor.close()
    return Check("lux source", OK, f"light sensor on {config.light.pin} reads {lux or 0.0:.1f} lux")


def check_audio(config: Any, host: Host) -> Check:
    sink = config.speech.sink
    if not sink.startswith("alsa:"):
        return Check("audio device", OK, f"no device needed (speech.sink = {sink})")
    aplay = shutil.which("aplay")
    if aplay is None:
        return Check("audio device", FAIL, "aplay not found", "sudo apt-get install alsa-utils")
    cards = ""
    if (host.dev / "snd").is_dir():
        try:
            cards = subprocess.run([aplay, "-l"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            cards = ""
    names = [line.split(":", 1)[1].strip() for line in cards.splitlines() if line.startswith("card ")]
    if not names:
        return Check("audio device", FAIL, "no sound card (aplay -l lists none); speech would go to a WAV file",
                     "plug in USB earphones/sound card, or dtparam=audio=on in config.txt for the jack; "
                     "user in group audio")
    return Check("audio device", OK, f"{sink[5:]} on {names[0]}" + (f" (+{len(names) - 1} more)" if len(names) > 1 else ""))


def check_voice(config: Any) -> Check:
    from edge.errors import AudioError
    from edge.speech.tts import PiperTTS, load_voice

    speech = config.speech
    try:
        voice = load_voice(speech.voice or None, speech.espeak_voice)
    except AudioError as exc:
        return Check("voice", FAIL, str(exc), "sudo apt-get install espeak-ng, or set speech.voice to a Piper .onnx")
    try:
        clip = voice.synthesize_clip("ready", rate=speech.rate, volume=speech.volume)
    except AudioError as exc:
        return Check("voice", FAIL, f"synthesis failed: {exc}", "reinstall espeak-ng / the Piper voice")
    finally:
        voice.close()
    name = f"Piper {Path(speech.voice).name}" if isinstance(voice, PiperTTS) else f"espeak-ng {speech.espeak_voice}"
    if speech.voice and not isinstance(voice, PiperTTS):
        return Check("voice", WARN, f"speech.voice {speech.voice} does not load; espeak-ng is used instead",
                     "check the .onnx and its .onnx.json (python -m edge say test)")
    return Check("voice", OK, f"{name} says 'ready' in {clip.duration_s:.2f} s of audio")


def _bad_model_files(sidecar: Path) -> tuple[list[str], int]:
    """(problems, files that match) for every file a model sidecar lists; a TFLite file that matches is
    also loaded once in a child process (a damaged one can crash the runtime, see check_tflite_loads)."""
    from edge.errors import ModelError
    from edge.vision.expression import check_tflite_loads

    try:
        files = json.loads(sidecar.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError) as exc:
        return [f"{sidecar}: cannot read the sidecar ({exc})"], 0
    bad, checked = [], 0
    for entry in files.values():
        path = sidecar.parent / entry["file"]
        if not path.is_file():
            bad.append(f"{entry['file']} missing")
        elif (actual := sha256_file(path)) != entry.get("sha256"):
            bad.append(f"{entry['file']} sha256 mismatch")
        else:
            try:
                if path.suffix == ".tflite":
                    check_tflite_loads(path, actual)
                checked += 1
            except ModelError as exc:
                bad.append(str(exc))
    return bad, checked


def check_models(config: Any) -> Check:
    sidecar = config.vision.model_path
    fix = "git checkout models/ (or make build), and make setup for the face models"
    bad, checked = _bad_model_files(sidecar)
    from edge.errors import ModelError
    from edge.vision.faces import bundled_model_path

    for name in ("face_detection_short_range.tflite", "face_landmark.tflite"):
        try:
            bundled_model_path(name)
        except ModelError as exc:
            bad.append(str(exc))
    if bad:
        return Check("model files", FAIL, "; ".join(bad), fix)
    detail = f"{checked} expression model files match their sha256; face models present"
    enhancer = sidecar.parent / "enhancer.json"
    if enhancer.is_file():
        enhancer_bad, enhancer_checked = _bad_model_files(enhancer)
        if enhancer_bad:
            return Check("model files", WARN, f"{detail}; low-light enhancer: {'; '.join(enhancer_bad)} "
                         "(the night branch falls back to gamma/CLAHE)", fix)
        detail += f"; {enhancer_checked} enhancer files match"
    return Check("model files", OK, detail)


def check_temperature(host: Host) -> Check:
    zone = host.sys / "class" / "thermal" / "thermal_zone0" / "temp"
    try:
        celsius = int(zone.read_text().strip()) / 1000
    except (OSError, ValueError):
        return Check("cpu temperature", SKIP, f"no {zone} (not a Raspberry Pi?)")
    notes = []
    vcgencmd = shutil.which("vcgencmd")
    if vcgencmd:
        try:
            out = subprocess.run([vcgencmd, "get_throttled"], capture_output=True, text=True, timeout=5).stdout
            flags = int(out.strip().partition("=")[2], 16)
            notes = [text for bit, text in _THROTTLE_BITS.items() if flags & bit]
        except (OSError, subprocess.SubprocessError, ValueError):
            notes = []
    detail = f"{celsius:.1f} °C" + (f"; {', '.join(notes)}" if notes else "")
    if celsius >= CRITICAL_C:
        return Check("cpu temperature", FAIL, detail, "add a heatsink or fan; the CPU throttles hard at this heat")
    if celsius >= HOT_C or notes:
        fix = "use the official 5 V 3 A supply" if any("under-voltage" in n for n in notes) else "improve cooling"
        return Check("cpu temperature", WARN, detail, fix)
    return Check("cpu temperature", OK, detail + ("" if vcgencmd else " (vcgencmd not found: throttling unknown)"))


def check_disk(config: Any) -> Check:
    worst: tuple[float, Path] | None = None
    for path in (config.app.state_path, config.speech.cache_path):
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free_mb = shutil.disk_usage(probe).free / 1e6
        if worst is None or free_mb < worst[0]:
            worst = (free_mb, path)
    assert worst is not None
    free_mb, path = worst
    detail = f"{free_mb:,.0f} MB free for {path}"
    if free_mb < MIN_FREE_MB:
        return Check("free disk", FAIL, detail, "free space (sudo apt-get clean; journalctl --vacuum-size=50M)")
    if free_mb < LOW_FREE_MB:
        return Check("free disk", WARN, detail, "free some space soon")
    return Check("free disk", OK, detail)
