"""The wearer loop end to end with a fake pipeline, a fake phrase cache and a recording sink."""

from __future__ import annotations

import dataclasses

import argparse
import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from gpiozero.pins.mock import MockFactory

import edge.app as app_module
from edge.app import App, Parts, State, resolve_sink_endpoint
from edge.config import ButtonConfig, CameraConfig, Config, load_config
from edge.errors import CameraError
from edge.hw.button import ButtonEvent, GpioButton, TerminalButton
from edge.hw.camera import Camera, VideoFileReader
from edge.hw.light import open_light
from edge.results import FaceResult, FrameResult, Position
from edge.speech.phrases import all_phrases, describe
from edge.speech.playback import NullSink
from edge.speech.tts import AudioClip

WAIT = 15.0  # generous waits on conditions; nothing here asserts on timing

EARCON = "<earcon>"


def face(label: str, x: float = 0.5) -> FaceResult:
    return FaceResult(
        box=(10, 10, 40, 40),
        label=label,
        confidence=0.9,
        unsure=False,
        scores={label: 0.9},
        position=Position(clock=12, distance_m=1.0, x=x),
        fallback=False,
    )


class FakePipeline:
    """An edge.parts.Analyser: returns whatever `result` is set to and records what it was given."""

    def __init__(self, result: FrameResult | Exception) -> None:
        self.result = result
        self.calls: list[tuple[tuple[int, ...], bool]] = []
        self.tracked: list[bool] = []
        self._cond = threading.Condition()

    def analyze(self, image: np.ndarray, lowlight: bool = False, track: bool = False) -> FrameResult:
        with self._cond:
            self.calls.append((image.shape, lowlight))
            self.tracked.append(track)
            self._cond.notify_all()
        if isinstance(self.result, Exception):
            raise self.result
        return self.result

    def take_notice(self) -> str | None:
        return None

    def wait_calls(self, n: int) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.calls) >= n, WAIT)


class FakeCache:
    """Phrase cache whose 'clips' are the texts themselves."""

    def __init__(self) -> None:
        self.warmed: list[str] = []
        self.all_warm = threading.Event()

    def get(self, text: str) -> str:
        return text

    def compose(self, text: str) -> str:
        return text

    def warm(self, phrases) -> int:
        self.warmed.extend(phrases)
        if set(all_phrases("terse")) <= set(self.warmed):
            self.all_warm.set()
        return 0


class RecordingSink:
    """An edge.parts.Sink that records the 'clips' (FakeCache's texts) it was given, and plays nothing."""

    endpoint = "recording:"

    def __init__(self) -> None:
        self.played: list[str] = []
        self.stops = 0
        self._cond = threading.Condition()

    def play(self, clip: str, block: bool = True) -> None:
        with self._cond:
            self.played.append(clip)
            self._cond.notify_all()

    def stop(self) -> None:
        self.stops += 1

    def wait(self, timeout: float | None = None) -> bool:
        return True

    def close(self) -> None:
        pass

    def wait_for(self, predicate: Callable[[list[str]], bool]) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.played), WAIT)

    def wait_said(self, text: str, times: int = 1) -> bool:
        return self.wait_for(lambda played: played.count(text) >= times)


class ConstantReader:
    """A camera that always sees the same image."""

    description, paced = "constant", False

    def __init__(self, value: int = 120) -> None:
        self.image = np.full((48, 64, 3), value, np.uint8)

    def read(self) -> np.ndarray:
        return self.image.copy()

    def close(self) -> None:
        pass


def make_app(
    config: Config,
    pipeline: FakePipeline,
    *,
    reader_factory=None,
    open_button=None,
) -> tuple[App, RecordingSink, Camera]:
    sink = RecordingSink()
    camera = Camera(config.camera, reader_factory=reader_factory or ConstantReader)
    lux, switch = open_light(config.light, real=False)
    parts = Parts(
        pipeline=pipeline,
        cache=FakeCache(),
        sink=sink,
        camera=camera,
        lux=lux,
        switch=switch,
        open_button=open_button,
        earcon=EARCON,
    )
    return App(config, parts, backoff=(0.01, 0.05), status_grace_s=0.3), sink, camera


@contextlib.contextmanager
def running(app: App, **run_kwargs):
    errors: list[BaseException] = []

    def target() -> None:
        try:
            app.run(**run_kwargs)
        except BaseException as exc:  # surfaced in the test thread
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        assert app.wait_for_state(State.READY, WAIT) or errors, "app did not become ready"
        yield thread
    finally:
        app.stop()
        thread.join(WAIT)
        assert not thread.is_alive(), "app did not stop"
        assert not errors, errors
        assert app.state is State.STOPPED


def config(**overrides) -> Config:
    return load_config(env={}, overrides={"camera.fps": 100.0, "app.hw": "fake", **overrides})


HAPPY = FrameResult(faces=(face("happy"),), lowlight=False)


def test_press_speaks_the_description_after_the_earcon():
    pipeline = FakePipeline(HAPPY)
    app, sink, _ = make_app(config(), pipeline)
    with running(app):
        app.press()
        assert sink.wait_said("looks happy")
    expected = describe(HAPPY, "terse")
    assert expected == "looks happy"
    assert sink.played[0] == "ready"
    assert sink.played[sink.played.index(expected) - 1] == EARCON
    assert pipeline.calls == [((48, 64, 3), False)]  # bright frame: day branch
    assert app.last_phrase == expected


def test_every_phrase_is_warmed_while_idle():
    app, _, _ = make_app(config(), FakePipeline(HAPPY))
    with running(app):
        assert app.parts.cache.all_warm.wait(WAIT)
    assert len(app.parts.cache.warmed) == len(set(app.parts.cache.warmed))  # each once


def test_verbose_two_faces_left_to_right():
    result = FrameResult(faces=(face("sad", x=0.8), face("happy", x=0.2)), lowlight=False)
    app, sink, _ = make_app(config(**{"speech.verbosity": "verbose"}), FakePipeline(result))
    with running(app):
        app.press()
        expected = describe(result, "verbose")
        assert sink.wait_said(expected)
    assert expected.startswith("two people: ") and expected.index("happy") < expected.index("sad")


def test_double_press_repeats_the_last_phrase_without_new_analysis():
    pipeline = FakePipeline(HAPPY)
    app, sink, _ = make_app(config(), pipeline)
    with running(app):
        app.press(ButtonEvent.REPEAT)
        assert sink.wait_said("nothing to repeat")
        app.press()
        assert sink.wait_said("looks happy")
        app.press(ButtonEvent.REPEAT)
        assert sink.wait_said("looks happy", times=2)
    assert len(pipeline.calls) == 1


def test_dark_frame_takes_the_night_branch_and_says_too_dark():
    pipeline = FakePipeline(FrameResult(faces=(), lowlight=True))
    app, sink, _ = make_app(config(), pipeline, reader_factory=lambda: ConstantReader(value=5))
    with running(app):
        app.press()
        assert sink.wait_said("too dark")
    assert pipeline.calls[0][1] is True


def test_lowlight_off_forces_the_day_branch():
    pipeline = FakePipeline(FrameResult(faces=(), lowlight=False))
    app, sink, _ = make_app(config(**{"vision.lowlight": "off"}), pipeline, reader_factory=lambda: ConstantReader(5))
    with running(app):
        app.press()
        assert sink.wait_said("too dark")
    assert pipeline.calls[0][1] is False


def test_pipeline_error_is_spoken_once_and_the_loop_goes_on():
    pipeline = FakePipeline(RuntimeError("model exploded"))
    app, sink, _ = make_app(config(), pipeline)
    with running(app):
        app.press()
        assert sink.wait_said("something went wrong")
        pipeline.result = HAPPY
        app.press()
        assert sink.wait_said("looks happy")
    assert sink.played.count("something went wrong") == 1


def write_video(path: Path, n: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 48))
    for i in range(n):
        writer.write(np.full((48, 64, 3), 100 + 10 * i, np.uint8))
    writer.release()
    return path


class FlakyFileCamera:
    """A video file that plays once and ends; then 'unplugged' until `plug_in` is set."""

    def __init__(self, path: Path, config: CameraConfig) -> None:
        self.path, self.config = path, config
        self.opens = 0
        self.failed_opens = 0
        self.retried = threading.Event()
        self.plug_in = threading.Event()

    def __call__(self) -> VideoFileReader:
        self.opens += 1
        if self.opens == 1:
            return VideoFileReader(self.path, loop=False)
        if not self.plug_in.is_set():
            self.failed_opens += 1
            if self.failed_opens >= 3:
                self.retried.set()
            raise CameraError(f"camera video file {self.path}: unplugged")
        return VideoFileReader(self.path, loop=True)


def test_camera_lost_and_back_are_said_exactly_once(tmp_path):
    cfg = config()
    flaky = FlakyFileCamera(write_video(tmp_path / "clip.avi", 10), cfg.camera)
    pipeline = FakePipeline(HAPPY)
    app, sink, camera = make_app(cfg, pipeline, reader_factory=flaky)
    with running(app):
        assert sink.wait_said("camera lost")  # the file ended by itself
        assert flaky.retried.wait(WAIT)  # several reconnect attempts failed meanwhile
        flaky.plug_in.set()
        assert sink.wait_said("camera back")
        app.press()  # and the loop still works on the returned camera
        assert sink.wait_said("looks happy")
    assert sink.played.count("camera lost") == 1
    assert sink.played.count("camera back") == 1
    assert sink.played.index("camera lost") < sink.played.index("camera back")
    assert flaky.failed_opens >= 3


def test_a_short_blip_is_not_announced(tmp_path):
    """A video file that ends and reopens at once (a rewind, a USB re-enumeration): nothing is said."""
    cfg = config(**{"camera.loop": False})
    clip = write_video(tmp_path / "clip.avi", 10)
    opens = []

    def factory():
        opens.append(time.monotonic())
        return VideoFileReader(clip, loop=False)

    app, sink, _ = make_app(cfg, FakePipeline(HAPPY), reader_factory=factory)
    app._status_grace_s = 30.0
    with running(app):
        deadline = time.monotonic() + WAIT
        while len(opens) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        app.press()
        assert sink.wait_said("looks happy")
    assert len(opens) >= 3  # it really went down and came back several times
    assert "camera lost" not in sink.played and "camera back" not in sink.played


def test_a_camera_that_keeps_failing_is_announced_once():
    ended = threading.Event()

    class DeadReader(ConstantReader):
        def read(self) -> np.ndarray:
            ended.set()
            raise CameraError("camera dead: read failed")

    def factory():
        if ended.is_set():
            raise CameraError("camera dead: cannot open")
        return DeadReader()

    app, sink, _ = make_app(config(), FakePipeline(HAPPY), reader_factory=factory)
    with running(app):
        assert sink.wait_said("camera lost")
        assert ended.wait(WAIT)
    assert sink.played.count("camera lost") == 1
    assert "looks happy" not in sink.played


def test_continuous_mode_speaks_only_when_the_description_changes():
    pipeline = FakePipeline(HAPPY)
    cfg = config(**{"app.continuous_interval_s": 0.5})
    app, sink, _ = make_app(cfg, pipeline)
    with running(app):
        app.press(ButtonEvent.CONTINUOUS)
        assert sink.wait_said("continuous on")
        assert app.wait_for_state(State.CONTINUOUS, WAIT)
        assert pipeline.wait_calls(3)
        assert sink.played.count("looks happy") == 1
        pipeline.result = FrameResult(faces=(face("sad"),), lowlight=False)
        assert sink.wait_said("looks sad")
        # the same person followed from tick to tick (one track id): only the news is said
        pipeline.result = FrameResult(faces=(dataclasses.replace(face("sad"), track_id=7),), lowlight=False)
        assert pipeline.wait_calls(len(pipeline.calls) + 2)  # a new id, the same words: nothing new to say
        pipeline.result = FrameResult(faces=(dataclasses.replace(face("happy"), track_id=7),), lowlight=False)
        assert sink.wait_said("now smiling")
        app.press(ButtonEvent.CONTINUOUS)
        assert sink.wait_said("continuous off")
        assert app.wait_for_state(State.READY, WAIT)
    assert EARCON not in sink.played  # continuous analyses are silent until something changes
    assert app.continuous is False
    assert all(pipeline.tracked)  # every tick followed the faces of the last one
    assert sink.played.count("looks sad") == 1


def test_gpio_button_drives_the_loop_through_the_queue():
    factory = MockFactory()
    try:
        cfg = config()
        button_config = ButtonConfig(hold_time=5.0)
        app, sink, _ = make_app(
            cfg,
            FakePipeline(HAPPY),
            open_button=lambda emit: GpioButton(button_config, emit, pin_factory=factory),
        )
        with running(app):
            pin = factory.pin(17)
            pin.drive_low()
            pin.drive_high()
            assert sink.wait_said("looks happy")
    finally:
        factory.reset()


def test_simulated_presses_then_exit():
    pipeline = FakePipeline(HAPPY)
    app, sink, _ = make_app(config(), pipeline)
    thread = threading.Thread(target=app.run, kwargs={"presses": 2, "exit_after_presses": True}, daemon=True)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert app.state is State.STOPPED
    assert sink.played.count("looks happy") == 2
    assert len(pipeline.calls) == 2


def test_no_sound_card_falls_back_to_a_wav_file(monkeypatch, tmp_path):
    monkeypatch.setattr(app_module, "has_sound_card", lambda: False)
    assert resolve_sink_endpoint("alsa:default", tmp_path) == f"wav:{tmp_path / 'last_speech.wav'}"
    assert resolve_sink_endpoint("null:", tmp_path) == "null:"
    monkeypatch.setattr(app_module, "has_sound_card", lambda: True)
    assert resolve_sink_endpoint("alsa:plughw:1,0", tmp_path) == "alsa:plughw:1,0"


def test_cli_run_demo_presses(monkeypatch):
    from edge import cli_run

    seen: list[Config] = []
    sinks: list[RecordingSink] = []

    @contextlib.contextmanager
    def fake_core(cfg: Config):  # the devices are the real ones: demo camera, frame brightness, no button
        seen.append(cfg)
        sink = RecordingSink()
        sinks.append(sink)
        yield Parts(FakePipeline(HAPPY), FakeCache(), sink)

    monkeypatch.setattr(app_module, "open_core", fake_core)
    parser = argparse.ArgumentParser()
    cli_run.add_arguments(parser)
    args = parser.parse_args(["--demo", "--presses", "1", "--exit-after-presses", "--set", "camera.fps=50"])
    assert cli_run.main(args) == 0
    assert seen[0].camera.source == "demo" and seen[0].app.hw == "fake" and seen[0].camera.fps == 50.0
    assert "looks happy" in sinks[0].played


def test_bright_but_noisy_frame_with_no_face_says_too_dark_and_a_clean_one_no_face():
    # a camera at full gain: normal brightness, mostly noise (light.too_noisy), vs an empty clean room
    noisy = FakePipeline(FrameResult(faces=(), lowlight=False, brightness=120.0, noise=20.0))
    app, sink, _ = make_app(config(), noisy, reader_factory=lambda: ConstantReader(120))
    with running(app):
        app.press()
        assert sink.wait_said("too dark")
    clean = FakePipeline(FrameResult(faces=(), lowlight=False, brightness=120.0, noise=2.0))
    app, sink, _ = make_app(config(), clean, reader_factory=lambda: ConstantReader(120))
    with running(app):
        app.press()
        assert sink.wait_said("no face")


class Speaker(NullSink):
    """The real sink's queue, stop() and records, with audio that takes its own length to play."""

    def _write(self, samples: np.ndarray) -> None:
        deadline = time.monotonic() + len(samples) / RATE
        while not self._stop_requested() and time.monotonic() < deadline:
            time.sleep(0.005)


RATE = 8_000


class ClipCache(FakeCache):
    """Phrase cache whose clips are silence of `seconds`, labelled with their text."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def get(self, text: str) -> AudioClip:
        return AudioClip(np.zeros(int(self.seconds * RATE), np.int16), RATE, text)

    compose = get


def speaking_app(seconds: float) -> tuple[App, Speaker]:
    cfg = config()
    lux, switch = open_light(cfg.light, real=False)
    sink = Speaker()
    parts = Parts(pipeline=FakePipeline(HAPPY), cache=ClipCache(seconds), sink=sink,
                  camera=Camera(cfg.camera, reader_factory=ConstantReader), lux=lux, switch=switch,
                  earcon=AudioClip(np.zeros(RATE // 20, np.int16), RATE, EARCON))
    return App(cfg, parts, backoff=(0.01, 0.05)), sink


def test_presses_made_while_the_loop_was_busy_each_get_their_own_answer():
    """`run --presses 3`: three tones and three answers, none cut by the press after it (#18 item 13)."""
    app, sink = speaking_app(seconds=0.3)
    thread = threading.Thread(target=app.run, kwargs={"presses": 3, "exit_after_presses": True}, daemon=True)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive()
    heard = [r.text for r in sink.records if not r.stopped]
    assert heard == ["ready"] + [EARCON, "looks happy"] * 3, [(r.text, r.stopped) for r in sink.records]


def test_a_press_while_an_answer_plays_cuts_it():
    app, sink = speaking_app(seconds=3.0)
    with running(app):
        app.press()
        deadline = time.monotonic() + WAIT
        while not (sink.first_audio_ns and sink.records and sink.records[-1].text == EARCON):
            assert time.monotonic() < deadline, "the first answer never started"
            time.sleep(0.01)
        time.sleep(0.1)  # the answer is playing now
        app.press()
        assert sink.wait(WAIT)
    answers = [r for r in sink.records if r.text == "looks happy"]
    assert [r.stopped for r in answers] == [True, False]


def test_ready_line_says_how_to_press_and_how_to_quit(caplog):
    """`make run` / `edge run --presses N` keep running: one line at ready tells the person at the terminal how
    to press and how to stop (#18 item 12)."""
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd) as keys, os.fdopen(write_fd, "w"):
        app, sink, _ = make_app(config(), FakePipeline(HAPPY), open_button=lambda emit: TerminalButton(emit, keys))
        with caplog.at_level("INFO", logger="edge.app"), running(app, presses=1):
            assert sink.wait_said("looks happy")
    ready = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ready: ")]
    assert ready == ["ready: press Enter to read faces (r = repeat, c = continuous on/off), Ctrl-C to quit; "
                     "1 simulated press(es) first (--exit-after-presses stops after them)"]



def test_every_part_in_the_package_and_every_fake_here_implements_its_protocol(tmp_path):
    """Parts are typed nouns (edge.parts): the loop calls `failed`, `hint`, `take_notice()`, `stop()`,
    `wait()` directly, so each production part, each fake shipped in the package and each fake the
    tests drive the loop with must have them (a missing member was a getattr default before)."""
    import io

    from edge import parts as p
    from edge.config import BridgeConfig, LightConfig
    from edge.hw.bridge import Bridge
    from edge.hw.button import NoButton
    from edge.hw.light import FrameBrightness, GpioLightSensor
    from edge.offload.client import OffloadingPipeline
    from edge.pipeline import Pipeline
    from edge.speech.playback import WavSink
    from edge.speech.tts import PhraseCache

    assert issubclass(Pipeline, p.Analyser) and issubclass(OffloadingPipeline, p.Analyser)
    assert issubclass(PhraseCache, p.Phrases)
    for protocol, fake in ((p.Analyser, FakePipeline(HAPPY)), (p.Phrases, FakeCache()), (p.Sink, RecordingSink())):
        assert isinstance(fake, protocol), f"test fake {type(fake).__name__} is not an edge.parts.{protocol.__name__}"
    factory = MockFactory()
    with contextlib.ExitStack() as stack:
        stack.callback(factory.reset)
        devices = [
            (p.Camera, Camera(CameraConfig(source="demo"))),
            (p.Button, GpioButton(ButtonConfig(), lambda event: None, pin_factory=factory)),
            (p.Button, TerminalButton(lambda event: None, io.StringIO(""))),
            (p.Button, NoButton()),
            (p.LightSource, FrameBrightness()),
            (p.LightSource, GpioLightSensor("GPIO27", pin_factory=factory)),
            (p.Sink, NullSink()),
            (p.Sink, WavSink(tmp_path / "speech.wav")),
            (p.Bridge, Bridge(BridgeConfig(port=str(tmp_path / "ttyNONE")))),
        ]
        for protocol, part in devices:
            stack.callback(part.close)
            assert isinstance(part, protocol), f"{type(part).__name__} is not an edge.parts.{protocol.__name__}"
        for light, bridge in ((LightConfig(source="frame"), None), (LightConfig(source="gpio"), None),
                              (LightConfig(source="serial"), devices[-1][1])):
            source, switch = open_light(light, real=False, bridge=bridge)  # serial: a FallbackSwitch
            assert isinstance(source, p.LightSource) and isinstance(switch, p.Switch)
        assert NoButton().failed is None and GpioButton.failed is None  # cannot tell: kept open until stop
