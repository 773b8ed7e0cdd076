"""Latency of the one pipeline and of the whole press-to-speech path, as p50/p95/p99 (STYLE §10).

Three measurements, in this order, in one process:

1. **Start-up and press-to-first-audio.** The production parts (`edge.app.open_parts`: the real
   pipeline, voice, phrase cache, camera) with a `null:` sink and a gpiozero `MockFactory` button
   drive the real `App`. `ready_s` runs from the *start of this process* (the PID's kernel start
   time; bench start where /proc is missing) until the App is in `State.READY` **and** its phrase
   cache holds every phrase it can say: interpreter start, imports, model loading, voice, camera
   first open, button, and cache warming (from disk when a previous run left it there) — what a
   wearer waits for after the service starts. The App enters READY first and warms while idle;
   that moment alone is `startup.app_ready_s`. Each press is the pin pulled low, then released (a
   tap acts on release), and `press_to_audio_ms` runs from just before the release to the null
   sink's first-audio stamp of the spoken answer; the earcon every press plays first is reported
   apart as `earcon_ms`. Presses are spaced beyond the double-press window.
2. **Stages.** The same pipeline object on frames read straight from the source (no grabber thread,
   no pacing), tracking on, as a video: `warmup` frames untimed, then `frames` (or `duration_s`)
   timed. `frame_ms` is the wall time of each `Pipeline.analyze` call (perf_counter_ns); `stages`
   are the pipeline's own per-stage timings. `peak_rss_mb` is read after this phase.
3. **MediaPipe comparison** (optional). The source is opened again and each frame goes to our
   pipeline and to MediaPipe's own equivalent in turn (order alternating per frame), so both see the
   same frames under the same machine load. MediaPipe's equivalent of finding faces from arm's length
   to 4 m and meshing them is its full-range face detection solution (`model_selection=1`) plus its
   legacy FaceMesh solution (which tracks, and detects with short range), both on every frame: its
   FaceMesh alone cannot see a face beyond about 1.5 m. `facemesh_ratio` = our p50 / MediaPipe p50
   over those paired frames. MediaPipe's memory is not in `peak_rss_mb`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import platform
import resource
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.config import CameraConfig, Config
from edge.files import write_atomic
from edge.hw.light import LOWLIGHT
from edge.runtime import default_threads

_LOGGER = logging.getLogger(__name__)

PERCENTILES = (50, 95, 99)
STAGE_ORDER = ("enhance", "detect", "landmarks", "align", "features", "classify")
TEST_VOICE = Path(__file__).resolve().parent / "speech" / "voices" / "edge-test-tone.onnx"
"""Piper-format tone voice (tools/make_test_voice.py; not speech) used when espeak-ng is not installed and
no voice is configured, so press-to-audio is still measured through Piper. It lives in edge/, not in tests/:
the application reads nothing from the test tree."""
EARCON_TEXT = "earcon"
_PRESS_DOWN_S = 0.03
"""How long the mock button is held: a tap, far below any hold_time."""
_UTTERANCE_TIMEOUT_S = 10.0
_WARM_TIMEOUT_S = 120.0
_POLL_S = 0.001

Percentiles = dict[str, float | None]


def percentiles(values: Sequence[float], qs: Sequence[int] = PERCENTILES) -> Percentiles:
    """{"p50": …, "p95": …, "p99": …} with numpy's default (linear) interpolation; None when empty."""
    if len(values) == 0:
        return {f"p{q}": None for q in qs}
    points = np.percentile(np.asarray(values, dtype=np.float64), qs)
    return {f"p{q}": float(v) for q, v in zip(qs, points)}


def process_start_time() -> float | None:
    """time.time() at which this process started (from /proc), or None where /proc is not Linux's."""
    try:
        stat = Path("/proc/self/stat").read_text()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    start_ticks = int(fields[19])  # field 22 (starttime), counted from field 3
    age = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - age


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------- machine


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return None


def cpu_model() -> str:
    info = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Model", "Hardware", "cpu model"):
        for line in info.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return value.strip()
    return platform.processor() or platform.machine()


def cpu_temperature_c() -> float | None:
    text = _read("/sys/class/thermal/thermal_zone0/temp")
    try:
        return int(text) / 1000.0 if text else None
    except ValueError:
        return None


def machine_info(config: Config, model_file: str | None = None) -> dict[str, Any]:
    """What the numbers were measured on: they mean nothing without it."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "platform": platform.platform(),
        "arch": platform.machine(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "python": platform.python_version(),
        "backend": config.vision.backend,
        "threads": config.vision.threads or default_threads(),
        "model": str(config.vision.model_path),
        "model_file": model_file,
        "pi_model": _read("/proc/device-tree/model"),
        "cpu_temp_c": cpu_temperature_c(),
        "loadavg": load,
    }


# --------------------------------------------------------------------------- results


@dataclass
class BenchResult:
    """Raw samples plus everything the report needs; `to_json()` is the `bench --json` contract."""

    machine: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    frame_ms: list[float] = field(default_factory=list)
    stage_ms: dict[str, list[float]] = field(default_factory=dict)
    faces_per_frame: list[int] = field(default_factory=list)
    press_ms: list[float] = field(default_factory=list)
    earcon_ms: list[float] = field(default_factory=list)
    spoken: list[str] = field(default_factory=list)
    voice: str = ""
    warmup: int = 0
    ready_s: float | None = None
    startup: dict[str, Any] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    peak_rss_mb_with_mediapipe: float | None = None
    compare_ours_ms: list[float] = field(default_factory=list)
    mediapipe_ms: list[float] = field(default_factory=list)

    @property
    def facemesh_ratio(self) -> float | None:
        ours, theirs = percentiles(self.compare_ours_ms)["p50"], percentiles(self.mediapipe_ms)["p50"]
        if ours is None or not theirs:
            return None
        return ours / theirs

    def stages(self) -> dict[str, Percentiles]:
        names = [s for s in STAGE_ORDER if s in self.stage_ms] + sorted(set(self.stage_ms) - set(STAGE_ORDER))
        return {name: percentiles(self.stage_ms[name]) for name in names}

    def to_json(self) -> dict[str, Any]:
        faces = np.asarray(self.faces_per_frame, dtype=np.float64)
        compared = bool(self.mediapipe_ms)
        return {
            "machine": self.machine,
            "stages": self.stages(),
            "frame_ms": percentiles(self.frame_ms),
            "press_to_audio_ms": percentiles(self.press_ms),
            "facemesh_ratio": self.facemesh_ratio,
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "ready_s": None if self.ready_s is None else round(self.ready_s, 3),
            # extras (not part of the contract)
            "source": self.source,
            "frames": len(self.frame_ms),
            "warmup": self.warmup,
            "faces_per_frame": float(faces.mean()) if len(faces) else None,
            "presses": len(self.press_ms),
            "earcon_ms": percentiles(self.earcon_ms),
            "voice": self.voice,
            "spoken": sorted(set(self.spoken)),
            "startup": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.startup.items()},
            "mediapipe_ms": percentiles(self.mediapipe_ms) if compared else None,
            "compare": {
                "frames": len(self.mediapipe_ms),
                "ours_frame_ms": percentiles(self.compare_ours_ms),
                "method": "same frames, interleaved, order alternating per frame",
            } if compared else None,
            "peak_rss_mb_with_mediapipe": None if self.peak_rss_mb_with_mediapipe is None else round(self.peak_rss_mb_with_mediapipe, 1),
        }


# --------------------------------------------------------------------------- frames


def open_frames(source: str, camera: CameraConfig) -> Any:
    """A FrameReader for demo | video file | image folder | device index or path; files loop."""
    from edge.hw.camera import open_reader

    return open_reader(dataclasses.replace(camera, source=source, loop=True))


def run_stages(
    pipeline: Any,
    read: Callable[[], np.ndarray],
    *,
    frames: int | None,
    duration_s: float | None,
    warmup: int,
    lowlight: bool | None,
    result: BenchResult,
) -> None:
    """Analyse frames as a video (tracking on): `warmup` untimed, then `frames` or `duration_s` timed."""
    reset = getattr(getattr(pipeline, "mesh", None), "reset", None)
    if reset is not None:
        reset()
    for _ in range(warmup):
        pipeline.analyze(read(), lowlight=lowlight, track=True)
    deadline = None if duration_s is None else time.perf_counter_ns() + int(duration_s * 1e9)
    count = 0
    while (frames is None or count < frames) and (deadline is None or time.perf_counter_ns() < deadline):
        image = read()
        start = time.perf_counter_ns()
        frame = pipeline.analyze(image, lowlight=lowlight, track=True)
        result.frame_ms.append((time.perf_counter_ns() - start) / 1e6)
        for name, ms in frame.timings_ms.items():
            if name != "total":
                result.stage_ms.setdefault(name, []).append(float(ms))
        result.faces_per_frame.append(sum(not f.fallback for f in frame.faces))
        count += 1


def run_compare(
    pipeline: Any,
    read: Callable[[], np.ndarray],
    *,
    frames: int,
    warmup: int,
    max_faces: int,
    lowlight: bool | None,
    result: BenchResult,
) -> None:
    """Our pipeline and MediaPipe's full-range detection + FaceMesh solutions on the same frames, in turn."""
    import cv2

    try:
        from mediapipe.python.solutions import face_detection as mp_face_detection
        from mediapipe.python.solutions import face_mesh as mp_face_mesh
    except ImportError as exc:
        from edge.errors import ModelError

        raise ModelError(f"--compare-mediapipe needs mediapipe with its legacy solutions ({exc}): run `make setup`") from exc

    reset = getattr(getattr(pipeline, "mesh", None), "reset", None)
    if reset is not None:
        reset()
    with mp_face_mesh.FaceMesh(static_image_mode=False, max_num_faces=max_faces, refine_landmarks=False) as mesh, \
            mp_face_detection.FaceDetection(model_selection=1) as far:

        def theirs(image: np.ndarray) -> None:
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            far.process(rgb)
            mesh.process(rgb)

        def ours(image: np.ndarray) -> None:
            pipeline.analyze(image, lowlight=lowlight, track=True)

        for _ in range(warmup):
            image = read()
            ours(image)
            theirs(image)
        for i in range(frames):
            image = read()
            order = ((ours, result.compare_ours_ms), (theirs, result.mediapipe_ms))
            for run, samples in order if i % 2 == 0 else order[::-1]:
                start = time.perf_counter_ns()
                run(image)
                samples.append((time.perf_counter_ns() - start) / 1e6)


# --------------------------------------------------------------------------- press to first audio


def bench_config(config: Config, source: str) -> Config:
    """The run config, but fake light/terminal, the bench's source, a null sink and a voice that exists."""
    speech = dataclasses.replace(config.speech, sink="null:")
    if not speech.voice and shutil.which("espeak-ng") is None:
        _LOGGER.warning("espeak-ng not installed: using the Piper test voice %s", TEST_VOICE)
        speech = dataclasses.replace(speech, voice=str(TEST_VOICE))
    return dataclasses.replace(
        config,
        camera=dataclasses.replace(config.camera, source=source, loop=True),
        app=dataclasses.replace(config.app, hw="fake"),
        speech=speech,
    )


def _wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            from edge.errors import EdgeError

            raise EdgeError(f"bench: {what} did not happen within {timeout:g} s")
        time.sleep(_POLL_S)


def run_presses(app: Any, parts: Any, pin: Any, config: Config, presses: int, result: BenchResult) -> None:
    """Tap the mock button `presses` times; time release → first audio of the spoken answer."""
    sink = parts.sink
    gap_s = config.button.double_press_window + 0.05  # a second tap sooner would mean "repeat"
    last_release = 0.0
    for _ in range(presses):
        time.sleep(max(0.0, last_release + gap_s - time.monotonic()))
        seen = len(sink.records)
        pin.drive_low()
        time.sleep(_PRESS_DOWN_S)
        released_ns = time.perf_counter_ns()
        last_release = time.monotonic()
        pin.drive_high()

        def answered() -> bool:
            return any(r.text != EARCON_TEXT for r in sink.records[seen:])

        _wait_until(answered, _UTTERANCE_TIMEOUT_S, "an answer to the button press")
        for record in sink.records[seen:]:
            if record.first_audio_ns < released_ns:
                continue
            if record.text == EARCON_TEXT:
                result.earcon_ms.append((record.first_audio_ns - released_ns) / 1e6)
            elif record.text == "camera lost":
                from edge.errors import CameraError

                raise CameraError(f"bench: the camera ({config.camera.source}) is not delivering frames; see the log above")
            else:
                result.press_ms.append((record.first_audio_ns - released_ns) / 1e6)
                result.spoken.append(record.text)
                break
        _wait_until(lambda: app.presses_done >= len(result.press_ms), _UTTERANCE_TIMEOUT_S, "the press to finish")


@contextlib.contextmanager
def started_app(
    config: Config, result: BenchResult, t_process: float | None, t_bench: float
) -> Iterator[tuple[Any, Any, Any, Callable[[], None]]]:
    """Open the production parts with a MockFactory button, run the App on a thread until READY."""
    from gpiozero.pins.mock import MockFactory

    from edge.app import App, State, open_parts
    from edge.hw.button import GpioButton
    from edge.speech.phrases import all_phrases

    factory = MockFactory()
    try:
        t0 = time.time()
        with open_parts(config) as parts:
            parts = dataclasses.replace(
                parts, open_button=lambda emit: GpioButton(config.button, emit, pin_factory=factory)
            )
            t_parts = time.time()
            app = App(config, parts)
            thread = threading.Thread(target=app.run, name="bench-app", daemon=True)
            thread.start()
            try:
                if not app.wait_for_state(State.READY, 60.0):
                    from edge.errors import EdgeError

                    raise EdgeError("bench: the app did not become ready within 60 s (see the log above)")
                t_ready = time.time()
                phrases = list(all_phrases(config.speech.verbosity, config.vision.classes))
                _wait_until(lambda: all(p in parts.cache for p in phrases), _WARM_TIMEOUT_S, "warming the phrase cache")
                t_warm = time.time()
                result.voice = parts.cache.voice.voice_id
                origin = t_process if t_process is not None else t_bench
                result.ready_s = t_warm - origin
                result.startup = {
                    "origin": "process start" if t_process is not None else "bench start",
                    "process_to_bench_s": None if t_process is None else t_bench - t_process,
                    "open_parts_s": t_parts - t0,
                    "app_ready_s": t_ready - origin,
                    "warm_s": t_warm - t_ready,
                    "phrases": len(phrases),
                    "phrases_synthesised": parts.cache.stats.misses,
                }

                def stop() -> None:
                    app.stop()
                    thread.join(timeout=15.0)

                yield app, parts, factory.pin(config.button.pin), stop
            finally:
                app.stop()
                thread.join(timeout=15.0)
    finally:
        factory.reset()


# --------------------------------------------------------------------------- the whole run


@dataclass(frozen=True)
class BenchOptions:
    source: str = "scene"
    frames: int | None = 200
    duration_s: float | None = None
    warmup: int = 10
    presses: int = 30
    compare_mediapipe: bool = False


def run(config: Config, options: BenchOptions, *, t_bench: float | None = None) -> BenchResult:
    """All three phases (see the module docstring). `config` is the user's; the bench adjusts a copy."""
    t_bench = time.time() if t_bench is None else t_bench
    t_process = process_start_time()
    config = bench_config(config, options.source)
    if not (options.source.isdigit() or options.source.startswith("/dev/")):
        open_frames(options.source, config.camera).close()  # a bad path fails here, with its reason
    result = BenchResult(source=options.source, warmup=options.warmup)
    lowlight = LOWLIGHT[config.vision.lowlight]  # auto: each frame by the day/night rule (parts.pipeline has config.light)
    with started_app(config, result, t_process, t_bench) as (app, parts, pin, stop_app):
        if options.presses:
            run_presses(app, parts, pin, config, options.presses, result)
        stop_app()  # the camera grabber stops with it: the stage timings get the CPU to themselves
        pipeline = parts.pipeline
        model = getattr(getattr(pipeline, "expression", None), "path", None)
        result.machine = machine_info(config, None if model is None else str(model))

        reader = open_frames(options.source, config.camera)
        try:
            run_stages(pipeline, reader.read, frames=options.frames, duration_s=options.duration_s,
                       warmup=options.warmup, lowlight=lowlight, result=result)
        finally:
            reader.close()
        result.peak_rss_mb = peak_rss_mb()
        result.machine["mediapipe_imported_by_pipeline"] = "mediapipe" in sys.modules
        result.machine["tensorflow_imported"] = "tensorflow" in sys.modules

        if options.compare_mediapipe:
            reader = open_frames(options.source, config.camera)
            try:
                run_compare(pipeline, reader.read, frames=max(len(result.frame_ms), 1), warmup=options.warmup,
                            max_faces=config.vision.max_faces, lowlight=lowlight, result=result)
            finally:
                reader.close()
            result.peak_rss_mb_with_mediapipe = peak_rss_mb()
    result.machine["cpu_temp_c_after"] = cpu_temperature_c()
    return result


# --------------------------------------------------------------------------- reports


def _cell(value: float | None, width: int = 9) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.2f}"


def format_table(report: dict[str, Any]) -> str:
    """Fixed-width plain text (no colour, no unicode box drawing): readable over any SSH session."""
    m = report["machine"]
    lines = [
        f"edge bench: {report['source']}, {report['frames']} frames after {report['warmup']} warm-up, tracking on",
        f"machine:    {m.get('pi_model') or m['cpu']} ({m['arch']}, {m['cores_usable']}/{m['cores']} cores, "
        f"load {m.get('loadavg')}, {'%.1f C' % m['cpu_temp_c'] if m.get('cpu_temp_c') is not None else 'temp n/a'})",
        f"runtime:    python {m['python']}, backend {m['backend']} x{m['threads']} threads, model {m.get('model_file') or m['model']}",
        f"voice:      {report['voice']} ({report['presses']} presses on a gpiozero MockFactory button, null: sink)",
        "",
        f"{'stage':<22}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}",
        "-" * 49,
    ]
    rows = list(report["stages"].items()) + [("frame (analyze)", report["frame_ms"])]
    if report.get("mediapipe_ms"):
        rows += [("ours, paired frames", report["compare"]["ours_frame_ms"]), ("mediapipe facemesh", report["mediapipe_ms"])]
    rows += [("press -> earcon", report["earcon_ms"]), ("press -> first words", report["press_to_audio_ms"])]
    for name, p in rows:
        lines.append(f"{name:<22}{_cell(p['p50'])}{_cell(p['p95'])}{_cell(p['p99'])}")
    lines.append("-" * 49)
    ratio = report["facemesh_ratio"]
    lines.append(
        "facemesh ratio:       "
        + (f"{ratio:.2f} (our p50 / MediaPipe FaceMesh p50, same frames)" if ratio is not None else "- (use --compare-mediapipe)")
    )
    rss = f"{report['peak_rss_mb']:.1f} MB"
    if report.get("peak_rss_mb_with_mediapipe") is not None:
        rss += f" (with MediaPipe loaded: {report['peak_rss_mb_with_mediapipe']:.1f} MB)"
    lines.append(f"peak RSS:             {rss}")
    s = report["startup"]
    ready = report["ready_s"]
    lines.append(f"ready:                {'-' if ready is None else f'{ready:.2f} s'} from {s.get('origin', 'start')}, phrase cache warm")
    lines.append(
        f"                      (app READY at {_secs(s.get('app_ready_s'))}, then {s.get('phrases_synthesised', '-')}"
        f"/{s.get('phrases', '-')} phrases synthesised in {_secs(s.get('warm_s'))})"
    )
    if report["faces_per_frame"] is not None:
        lines.append(f"faces per frame:      {report['faces_per_frame']:.2f} (detected, not whole-image fallback)")
    return "\n".join(lines) + "\n"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def write_plot(result: BenchResult, path: Path) -> None:
    """Latency histograms as a PNG, written atomically (a half-written file is never left behind) as an
    ordinary file (644 under the usual umask: a plot is for sharing)."""
    from edge.plotting import matplotlib_or_refuse

    matplotlib_or_refuse("--plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6.5), dpi=100)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1)
    frame_series = [("our pipeline (analyze)", result.frame_ms)]
    if result.mediapipe_ms:
        frame_series.append(("MediaPipe FaceMesh (paired frames)", result.mediapipe_ms))
    _histogram(top, frame_series, "per-frame latency")
    _histogram(bottom, [("press -> first words", result.press_ms), ("press -> earcon", result.earcon_ms)],
               "press-to-first-audio latency")
    fig.suptitle(f"edge bench: {result.machine.get('pi_model') or result.machine.get('cpu', '')}", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_atomic(Path(path), buffer.getvalue())


def _histogram(ax: Any, series: list[tuple[str, list[float]]], title: str) -> None:
    data = [(label, np.asarray(values)) for label, values in series if len(values)]
    if not data:
        ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
    else:
        hi = max(float(v.max()) for _, v in data)
        lo = max(min(float(v.min()) for _, v in data), 1e-3)
        hi = max(hi, lo * 1.01)
        log = hi / lo > 20  # stalls of 100× the median would squash everything else into one bar
        bins = np.geomspace(lo, hi, 60) if log else np.linspace(lo, hi, 50)
        if log:
            ax.set_xscale("log")
        for label, values in data:
            p = percentiles(values)
            ax.hist(np.clip(values, lo, hi), bins=bins, alpha=0.6,
                    label=f"{label}: p50 {p['p50']:.1f} / p95 {p['p95']:.1f} / p99 {p['p99']:.1f} ms (n={len(values)})")
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("ms")
    ax.set_ylabel("count")
