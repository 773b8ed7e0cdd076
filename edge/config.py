"""Settings: one frozen dataclass per part; TOML file, then env, then flags; unknown keys rejected.

Defaults live only in the dataclasses below. Every other layer (file, `GLASSES_SECTION__KEY` env
variables, `--set section.key=value` flags) names a key path, and a key path that does not exist,
or a value of the wrong type, is a `ConfigError` naming that key path and what would be valid.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import math
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge.errors import ConfigError
from edge.runtime import DEFAULT_BACKEND

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
"""Repository (or install) root; relative model paths are resolved against it."""

DEFAULT_CONFIG_PATH = Path("/etc/glasses/config.toml")
ENV_PREFIX = "GLASSES_"


def _choices(*values: Any) -> dict[str, Any]:
    return {"choices": values}


def _min(value: float, high: float | None = None) -> dict[str, Any]:
    return {"min": value, "max": high}


@dataclass(frozen=True)
class CameraConfig:
    """Where frames come from."""

    source: str | int = "auto"
    """"auto" (first /dev/video* that delivers a frame, else the demo), "demo" (built-in face),
    "scene" (the demo face up close, at 2 m and in a group), a device index (0), a device path
    ("/dev/video0"), a video file, or a folder of images."""
    width: int = field(default=1280, metadata=_min(16, 7680))
    """Requested frame width in pixels (devices are asked for it; the demo is made at it). 1280×960 gives a
    face 3 m away 46 px: read as well as at 0.75 m, and masked found 89 % of the time against 81 % at 640×480 (docs/detection.md).
    At most 7680 (8K): width × height stays under the 40 MP that images are refused above."""
    height: int = field(default=960, metadata=_min(16, 4320))
    """Requested frame height in pixels (at most 4320)."""
    fps: float = field(default=15.0, metadata=_min(0.1, 120.0))
    """Requested frame rate; file, folder and demo sources are paced to it."""
    loop: bool = False
    """Start a video file or image folder again at its end instead of reporting the camera lost."""


@dataclass(frozen=True)
class ButtonConfig:
    """The push button (gpiozero; the pin factory comes from GPIOZERO_PIN_FACTORY)."""

    pin: str = "GPIO17"
    """gpiozero pin name of the button, wired to ground (internal pull-up)."""
    hold_time: float = field(default=1.0, metadata=_min(0.1))
    """Seconds held down that count as a hold (toggles continuous mode)."""
    double_press_window: float = field(default=0.4, metadata=_min(0.0))
    """A second tap within this many seconds of the first repeats the last phrase (0 disables)."""


@dataclass(frozen=True)
class LightConfig:
    """Ambient light: decides when the low-light branch runs."""

    source: str = field(default="frame", metadata=_choices("frame", "gpio", "serial"))
    """"frame" (brightness of the captured frame), "gpio" (LDR + capacitor on `pin`, falls back to
    "frame" when it cannot be opened) or "serial" (the MCU's lux sensor over [bridge]; frame
    brightness stands in while its readings are older than bridge.stale_s)."""
    pin: str = "GPIO27"
    """gpiozero pin of the LDR/capacitor light sensor (source = "gpio")."""
    night_lux: float = field(default=10.0, metadata=_min(0.0))
    """Below this many lux the switch goes to night mode (sensor sources)."""
    day_lux: float = field(default=25.0, metadata=_min(0.0))
    """Above this many lux the switch goes back to day mode; must be greater than night_lux."""
    min_dwell_s: float = field(default=5.0, metadata=_min(0.0))
    """Seconds the switch stays in a mode before it may change again."""
    frame_night_luma: float = field(default=50.0, metadata=_min(0.0))
    """Mean frame luma (0..255) below which night mode starts (source = "frame")."""
    frame_day_luma: float = field(default=70.0, metadata=_min(0.0))
    """Mean frame luma (0..255) above which day mode returns; greater than frame_night_luma."""
    too_dark_luma: float = field(default=12.0, metadata=_min(0.0))
    """With no face found and a frame darker than this mean luma, say "too dark"."""
    too_noisy: float = field(default=11.5, metadata=_min(0.0))
    """With no face found and a frame noisier than this (noise estimate in grey levels, see
    docs/detection.md), say "too dark": at full gain a camera gives bright frames that are mostly noise."""
    readable_noise: float = field(default=4.3, metadata=_min(0.0))
    """A face noisier than this (FaceResult.noise: the aligned upper face, grey levels) needs more
    confidence than the model's own "not sure" threshold for its label to be spoken (edge.results.reading).
    The three reading thresholds were fitted by `python -m export lightcurve --calibrate` on 800 FER2013
    Training faces (half masked) through the camera model at 2–1000 e⁻ (docs/experiments/2026-12-04-light-curve.md)."""
    unsure_per_noise: float = field(default=0.06, metadata=_min(0.0))
    """How much the "not sure" threshold rises per grey level of noise above readable_noise."""
    unreadable_noise: float = field(default=10.4, metadata=_min(0.0))
    """Above this noise no label is right often enough: the face is "not sure", and a frame with no
    readable face is "too dark"."""

    def __post_init__(self) -> None:
        if self.day_lux <= self.night_lux:
            raise ConfigError(
                f"light.day_lux ({self.day_lux}) must be greater than light.night_lux ({self.night_lux})"
            )
        if self.frame_day_luma <= self.frame_night_luma:
            raise ConfigError(
                f"light.frame_day_luma ({self.frame_day_luma}) must be greater than "
                f"light.frame_night_luma ({self.frame_night_luma})"
            )


@dataclass(frozen=True)
class VisionConfig:
    """The pipeline: model, runtime backend, low-light branch."""

    model: str = "models/expression.json"
    """Sidecar JSON of the expression model; a relative path is taken from the package root."""
    backend: str = field(default=DEFAULT_BACKEND, metadata=_choices("tflite", "onnx"))
    """Inference runtime for the expression model: "onnx" (onnxruntime, default: fastest int8 measured) or "tflite"."""
    threads: int = field(default=0, metadata=_min(0, 64))
    """CPU threads for inference; 0 = one fewer than the cores, at most 2 (leaves a core for the loop and audio)."""
    max_faces: int = field(default=6, metadata=_min(1, 32))
    """Most faces read per frame (nearest first), at most 32: each costs a landmark pass and a reading."""
    lowlight: str = field(default="auto", metadata=_choices("auto", "on", "off"))
    """Low-light branch: "auto" follows the day/night switch, "on"/"off" force it."""
    classes: int = field(default=7, metadata=_choices(7, 5))
    """Expressions told apart: 7 (angry, disgusted, worried, happy, sad, surprised, calm) or 5, which merges what
    the upper face barely separates (angry + disgust → "looks annoyed", fear + surprise → "looks startled"): about
    10 points more faces answered instead of "not sure", right as often (figures: models/MODEL_CARD.md)."""

    @property
    def model_path(self) -> Path:
        path = Path(self.model).expanduser()
        return path if path.is_absolute() else PACKAGE_ROOT / path


@dataclass(frozen=True)
class SpeechConfig:
    """What the wearer hears and through what."""

    voice: str = ""
    """Piper voice (.onnx with its .onnx.json beside it); empty = espeak-ng."""
    espeak_voice: str = "en"
    """espeak-ng voice used when no Piper voice is set (or it fails to load)."""
    rate: float = field(default=1.0, metadata=_min(0.5, 2.0))
    """Speaking rate, 0.5 to 2.0: 1.0 is the voice's normal speed, 1.5 half as fast again."""
    volume: float = field(default=1.0, metadata=_min(0.0, 1.0))
    """Output gain, 0.0 (silent) to 1.0 (full scale)."""
    verbosity: str = field(default="terse", metadata=_choices("terse", "verbose"))
    """"terse" ("looks happy") or "verbose" (clock direction and distance for each face)."""
    sink: str = "alsa:default"
    """Audio endpoint: "alsa:DEVICE", "wav:/path/file.wav" or "null:"; with no sound card an
    "alsa:" sink falls back to a WAV file in app.state_dir."""
    cache_dir: str = ""
    """Phrase cache folder; empty = $XDG_CACHE_HOME/glasses/speech (~/.cache/glasses/speech)."""

    def __post_init__(self) -> None:
        from edge.speech.playback import parse_sink

        try:
            parse_sink(self.sink)
        except ConfigError as exc:
            raise ConfigError(f"speech.sink: {exc}") from None

    @property
    def cache_path(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(base) / "glasses" / "speech"


@dataclass(frozen=True)
class AppConfig:
    """The wearer loop."""

    continuous_interval_s: float = field(default=0.5, metadata=_min(0.2))
    """In continuous mode, seconds between analyses; each face is followed from one to the next and
    only changes are said (someone came or went, or one person's expression changed)."""
    hw: str = field(default="auto", metadata=_choices("auto", "real", "fake"))
    """"real" uses GPIO, "fake" a terminal button (Enter = press); "auto" picks "real" when the
    board has GPIO (or GPIOZERO_PIN_FACTORY is set). EDGE_HW also sets it."""
    state_dir: str = ""
    """Folder for run-time state (e.g. last_speech.wav); empty = $XDG_STATE_HOME/glasses
    (~/.local/state/glasses)."""

    @property
    def state_path(self) -> Path:
        if self.state_dir:
            return Path(self.state_dir).expanduser()
        base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
        return Path(base) / "glasses"

    @property
    def use_real_hw(self) -> bool:
        if self.hw != "auto":
            return self.hw == "real"
        return bool(os.environ.get("GPIOZERO_PIN_FACTORY")) or Path("/dev/gpiochip0").exists()


@dataclass(frozen=True)
class OffloadConfig:
    """Optional offload of face crops to an AI server (`python -m edge serve`); off by default."""

    enabled: bool = False
    """Send the cropped faces to the server; the on-device model answers whenever it is late or down."""
    url: str = ""
    """Server base URL, e.g. "https://192.168.1.20:8443" (http:// only with allow_http)."""
    token: str = ""
    """This device's bearer token (`python -m edge token add NAME` on the server); prefer token_file."""
    token_file: str = ""
    """File holding the bearer token (mode 600), read at start; used when token is empty."""
    deadline_ms: int = field(default=300, metadata=_min(20, 5000))
    """Longest a press waits for the server, counted from the frame; then the on-device answer is used."""
    ca_file: str = ""
    """PEM certificate (or CA) the server's certificate must chain to; empty = the system CAs."""
    pin_sha256: str = ""
    """SHA-256 of the server certificate (DER, hex; colons allowed): only that certificate is accepted."""
    cooldown_s: float = field(default=30.0, metadata=_min(0.1))
    """After a failure the server is left alone this many seconds (circuit breaker), then tried again."""
    allow_http: bool = False
    """Allow a plaintext http:// URL (lab use only: the token and the faces travel unencrypted)."""

    def __post_init__(self) -> None:
        scheme = self.url.partition("://")[0].lower() if "://" in self.url else ""
        if self.url and scheme not in ("https", "http"):
            raise ConfigError(f"offload.url {self.url!r}: expected https://HOST:PORT")
        if self.url:
            try:
                parts = urlsplit(self.url)
                host, _port = parts.hostname, parts.port  # .port raises ValueError unless a number 0..65535
            except ValueError as exc:
                raise ConfigError(f"offload.url {self.url!r}: {exc}; expected https://HOST:PORT") from None
            if not host:
                raise ConfigError(f"offload.url {self.url!r} names no host: expected https://HOST:PORT")
        if scheme == "http" and not self.allow_http:
            raise ConfigError(
                f"offload.url {self.url!r} is plaintext http: use https://, or set offload.allow_http = true (lab only)"
            )
        pin = self.pin_sha256.replace(":", "")
        if pin and (len(pin) != 64 or any(c not in "0123456789abcdefABCDEF" for c in pin)):
            raise ConfigError("offload.pin_sha256: expected 64 hex digits (openssl x509 -noout -fingerprint -sha256)")
        if pin and self.ca_file:
            raise ConfigError("offload.pin_sha256 and offload.ca_file are both set: set one (the pin is the stricter)")
        if self.enabled and not self.url:
            raise ConfigError("offload.enabled = true needs offload.url (https://HOST:PORT of `python -m edge serve`)")
        if self.enabled and not (self.token or self.token_file):
            raise ConfigError("offload.enabled = true needs offload.token or offload.token_file")
        if self.enabled:  # what `run` reads when it starts, read now, so check-config refuses what run would
            if not self.bearer:
                raise ConfigError(f"offload.token_file {self.token_file}: is empty; put the token from `python -m edge token add NAME` in it")
            if self.ca_file:
                from edge.offload.tls import client_ssl

                client_ssl(self.ca_file)

    @property
    def pin(self) -> bytes | None:
        """The pinned certificate digest as bytes, or None."""
        return bytes.fromhex(self.pin_sha256.replace(":", "")) if self.pin_sha256 else None

    @property
    def bearer(self) -> str:
        """The token, from `token` or read from `token_file`."""
        if self.token:
            return self.token
        path = Path(self.token_file).expanduser()
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"offload.token_file {path}: cannot read ({exc.strerror})") from None


_PYSERIAL_SCHEMES = ("loop", "socket", "rfc2217", "spy", "alt", "hwgrep", "cp2110")


@dataclass(frozen=True)
class BridgeConfig:
    """The serial bridge to the MCU (firmware_bridge/): lux sensor, second button, haptic motor, battery."""

    port: str = ""
    """Serial port of the MCU: "/dev/ttyAMA0" (the Pi's UART pins), "/dev/ttyACM0" (USB),
    "/dev/glasses-bridge" (systemd/99-glasses-bridge.rules), a pyserial URL ("loop://"), or "sim"
    (the firmware simulator on a pty, no board needed); empty = no bridge."""
    baudrate: int = field(default=115200, metadata=_min(1200, 4_000_000))
    """UART speed; must match the firmware (firmware_bridge/firmware/bridge.py, 115200)."""
    timeout_s: float = field(default=3.0, metadata=_min(1.5, 60.0))
    """No valid frame for this long (the firmware sends one every second) = link down: close and reopen."""
    stale_s: float = field(default=5.0, metadata=_min(0.5))
    """A lux reading older than this is not used: frame brightness decides until readings are back."""
    lux_interval_ms: int = field(default=500, metadata=_min(50, 60_000))
    """How often the MCU sends a lux reading (told to it on every connect)."""
    haptic: bool = True
    """Buzz the MCU's vibration motor once when a press is taken (felt even in a noisy street)."""

    def __post_init__(self) -> None:
        port = self.port
        if port and port != "sim" and not port.startswith("/") and "://" not in port:
            raise ConfigError(
                f"bridge.port {port!r}: expected a device path (/dev/ttyAMA0), a pyserial URL (loop://) or \"sim\""
            )
        scheme = port.partition("://")[0] if "://" in port else ""
        if scheme and scheme not in _PYSERIAL_SCHEMES:
            raise ConfigError(
                f"bridge.port {port!r}: unknown URL scheme {scheme!r}; pyserial knows {', '.join(_PYSERIAL_SCHEMES)}"
            )


@dataclass(frozen=True)
class Config:
    """The whole configuration, one section per part."""

    camera: CameraConfig = field(default_factory=CameraConfig)
    button: ButtonConfig = field(default_factory=ButtonConfig)
    light: LightConfig = field(default_factory=LightConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    speech: SpeechConfig = field(default_factory=SpeechConfig)
    app: AppConfig = field(default_factory=AppConfig)
    offload: OffloadConfig = field(default_factory=OffloadConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)

    def __post_init__(self) -> None:
        if self.light.source == "serial" and not self.bridge.port:
            raise ConfigError(
                'light.source = "serial" needs bridge.port (e.g. "/dev/ttyAMA0", or "sim" for the simulator)'
            )


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(Config)}  # type: ignore[misc]


# --------------------------------------------------------------------------- loading


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Defaults ← TOML file ← env (`GLASSES_SECTION__KEY`) ← overrides (`{"section.key": value}`).

    `path` None reads /etc/glasses/config.toml when it exists. Env and override values may be
    strings; they are converted to the field's type.
    """
    values: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    file_path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    if path is not None or file_path.exists():
        _merge_file(values, file_path)
    env = os.environ if env is None else env
    for key in sorted(env):
        if key.startswith(ENV_PREFIX) and "__" in key:
            section, _, name = key[len(ENV_PREFIX) :].lower().partition("__")
            _set(values, f"{section}.{name}", env[key], from_text=True, origin=key)
    if env.get("EDGE_HW"):
        _set(values, "app.hw", env["EDGE_HW"], from_text=True, origin="EDGE_HW")
    for key, value in (overrides or {}).items():
        _set(values, key, value, from_text=isinstance(value, str), origin="--set")
    return Config(**{name: SECTIONS[name](**values[name]) for name in SECTIONS})


def parse_assignment(text: str) -> tuple[str, str]:
    """`"speech.rate=1.2"` → `("speech.rate", "1.2")` (for `--set`)."""
    key, sep, value = text.partition("=")
    if not sep or "." not in key:
        raise ConfigError(f"--set {text!r}: expected SECTION.KEY=VALUE, e.g. speech.verbosity=verbose")
    return key.strip(), value.strip()


def _merge_file(values: dict[str, dict[str, Any]], path: Path) -> None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: arrays or tables nested too deeply to read (a config is [section] key = value)") from None
    for section, table in data.items():
        if not isinstance(table, dict):
            _check_section(section, str(path))
            raise ConfigError(f"{path}: {section}: expected a [{section}] table, got a value")
        for key, value in table.items():
            _set(values, f"{section}.{key}", value, from_text=False, origin=str(path))


def _check_section(section: str, origin: str) -> type:
    cls = SECTIONS.get(section)
    if cls is None:
        raise ConfigError(f"{origin}: {section}: unknown section{_suggest(section, SECTIONS)}")
    return cls


def _set(values: dict[str, dict[str, Any]], key_path: str, raw: Any, *, from_text: bool, origin: str) -> None:
    section, _, name = key_path.partition(".")
    cls = _check_section(section, origin)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        known = [f"{section}.{n}" for n in fields]
        raise ConfigError(f"{origin}: {key_path}: unknown key{_suggest(key_path, known)}")
    values[section][name] = _convert(key_path, fields[name], _field_types(cls)[name], raw, from_text, origin)


def _suggest(word: str, known: Any) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else f"; known: {', '.join(known)}"


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(key_path: str, f: dataclasses.Field, hint: Any, raw: Any, from_text: bool, origin: str) -> Any:
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    value = _coerce(raw, kinds, from_text)
    if value is _INVALID:
        expected = " or ".join(_TYPE_NAMES[k] for k in kinds)
        raise ConfigError(f"{origin}: {key_path}: expected {expected}, got {_short(raw)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{origin}: {key_path}: {value!r} is not a finite number")
    if isinstance(value, str) and "\0" in value:
        raise ConfigError(f"{origin}: {key_path}: {value!r} contains a NUL byte; no path or name can hold one")
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"{origin}: {key_path}: {value!r} is not one of {valid}")
    low, high = f.metadata.get("min"), f.metadata.get("max")
    if low is not None and value < low:
        raise ConfigError(f"{origin}: {key_path}: {value!r} is below the minimum {low}")
    if high is not None and value > high:
        raise ConfigError(f"{origin}: {key_path}: {value!r} is above the maximum {high}")
    return value


def _short(raw: Any) -> str:
    """repr of a bad value, cut short: a value of thousands of items must still give one readable line."""
    text = repr(raw)
    return text if len(text) <= 80 else f"{text[:60]}… ({len(text)} characters)"


_INVALID = object()
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true/false"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(raw: Any, kinds: tuple[type, ...], from_text: bool) -> Any:
    """Strict for TOML values (no bool-as-int), forgiving for env/flag text ("2" → 2 for int)."""
    if from_text:
        text = str(raw).strip()
        for kind in kinds:  # int before str for `str | int`: "0" is a device index
            try:
                if kind is bool and text.lower() in _TRUE | _FALSE:
                    return text.lower() in _TRUE
                if kind is int and text.lstrip("+-").isdigit():
                    return int(text)
                if kind is float:
                    return float(text)
            except ValueError:
                continue
        return raw if str in kinds else _INVALID
    for kind in kinds:
        if kind is bool and isinstance(raw, bool):
            return raw
        if kind is int and isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if kind is float and isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        if kind is str and isinstance(raw, str):
            return raw
    return _INVALID


# --------------------------------------------------------------------------- writing


def to_toml(config: Config, *, comments: bool = True) -> str:
    """The effective configuration as TOML that `load_config` reads back to the same values."""
    lines: list[str] = []
    for section, cls in SECTIONS.items():
        part = getattr(config, section)
        if lines:
            lines.append("")
        if comments:
            lines.append(f"# {inspect.getdoc(cls)}")
        lines.append(f"[{section}]")
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            if comments and f.name in docs:
                lines.extend(f"# {line}".rstrip() for line in docs[f.name].splitlines())
            lines.append(f"{f.name} = {_toml_value(getattr(part, f.name))}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Field docstrings (the string literal under each field), for `check-config` and the example."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(nxt.value.value)
    return docs
