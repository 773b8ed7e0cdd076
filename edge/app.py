"""The wearer loop: button → newest frame → day/night → pipeline → words → phrase cache → sink.

Everything the loop reacts to arrives on ONE queue: button events (posted by gpiozero or terminal
callbacks, which do nothing else) and part status from the supervisors. The loop thread is the
only one that runs inference or touches speech, so there is no locking around the pipeline.

Each hardware part is opened by a `Supervisor` thread: open → wait until it fails → log → back off
(capped exponential) → reopen. Supervisors post only *transitions*, and the loop remembers which
parts it has announced as lost, so the wearer hears "camera lost" once and "camera back" once,
however many reconnect attempts happen in between.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import queue
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from edge.config import Config
from edge.results import too_dark
from edge.errors import CameraError, EdgeError
from edge.hw.button import ButtonEvent, Emit
from edge.parts import Analyser, Bridge, Button, Camera, LightSource, Phrases, Sink, Supervised, Switch
from edge.vision.enhance import brightness
from edge.speech.phrases import Changes, Status, all_phrases, describe

if TYPE_CHECKING:
    from edge.service import Notifier
    from edge.speech.tts import AudioClip, Voice

_LOGGER = logging.getLogger(__name__)

_IDLE_POLL_S = 0.25
"""Longest the loop sleeps between looks at the stop flag (signal handlers only set a flag)."""


_FIRST_OPEN_TIMEOUT_S = 10.0

STATUS_GRACE_S = 2.0
"""A part must stay down this long before the wearer hears "… lost": a video file that rewinds or a
USB camera that re-enumerates in a second is a blip, and "camera lost, camera back" every few
seconds would be noise. "… back" is said only after a "… lost" was."""


class State(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    CONTINUOUS = "continuous"
    """Idle between analyses in continuous mode."""
    CAPTURING = "capturing"
    ANALYSING = "analysing"
    SPEAKING = "speaking"
    STOPPING = "stopping"
    STOPPED = "stopped"


class EventKind(enum.Enum):
    BUTTON = "button"
    PART_DOWN = "part down"
    PART_UP = "part up"


@dataclass(frozen=True)
class Event:
    kind: EventKind
    button: ButtonEvent | None = None
    part: str = ""
    detail: str = ""
    at: float = field(default_factory=time.monotonic)
    """When it was posted: a press taken later than that (the loop was busy) must not cut the answers
    that were given meanwhile."""


@dataclass
class Parts:
    """What the loop drives, each part typed by its protocol (edge.parts). Production builds them with
    `open_parts` (`open_core`, then `open_devices` fills in camera, light, button and bridge); tests
    pass fakes that implement the same protocols."""

    pipeline: Analyser
    cache: Phrases
    sink: Sink
    camera: Camera | None = None
    lux: LightSource | None = None
    switch: Switch | None = None
    open_button: Callable[[Emit], Button] | None = None
    """Opens the button given the callback that posts its events; None = presses come from code only."""
    earcon: AudioClip | None = None
    """Clip played the moment a press is taken."""
    bridge: Bridge | None = None
    """The MCU bridge; None = no MCU."""


class Backoff:
    """Capped exponential delays: initial, 2×, 4×, … up to cap; reset() after a success."""

    def __init__(self, initial: float = 0.5, cap: float = 30.0) -> None:
        self.initial, self.cap = initial, cap
        self._next = initial

    def next(self) -> float:
        delay, self._next = self._next, min(self.cap, self._next * 2)
        return delay

    def reset(self) -> None:
        self._next = self.initial


class Supervisor:
    """Keeps one part open on its own thread and posts PART_DOWN / PART_UP on transitions only."""

    def __init__(
        self,
        name: str,
        open_part: Callable[[], Supervised],
        post: Callable[[Event], None],
        backoff: Backoff,
    ) -> None:
        self.name, self._open, self._post, self._backoff = name, open_part, post, backoff
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"supervise-{name}", daemon=True)
        self.part: Supervised | None = None
        self.first_attempt = threading.Event()
        """Set once the first open has succeeded or failed (the loop waits for it before READY)."""

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        up: bool | None = None  # None: not opened yet, so a first success is not news
        try:
            while not self._stop.is_set():
                try:
                    self.part = part = self._open()
                except Exception as exc:  # noqa: BLE001 — any failure to open is retried
                    delay = self._backoff.next()
                    _LOGGER.warning("%s: cannot open (%s); retrying in %.1f s", self.name, exc, delay)
                    if up is not False:
                        self._post(Event(EventKind.PART_DOWN, part=self.name, detail=str(exc)))
                        up = False
                    self.first_attempt.set()
                    self._stop.wait(delay)
                    continue
                self._backoff.reset()
                if up is False:
                    _LOGGER.info("%s: back (%s)", self.name, part.description)
                    self._post(Event(EventKind.PART_UP, part=self.name))
                up = True
                self.first_attempt.set()
                failed = part.failed
                if failed is None:  # a part that cannot report failure stays up until stop
                    self._stop.wait()
                while failed is not None and not self._stop.is_set() and not failed.wait(_IDLE_POLL_S):
                    pass
                if self._stop.is_set():
                    break
                delay = self._backoff.next()
                _LOGGER.warning("%s: lost (%s); reconnecting in %.1f s", self.name, part.error, delay)
                self._post(Event(EventKind.PART_DOWN, part=self.name))
                up = False
                self._close_part()
                self._stop.wait(delay)
        finally:
            self._close_part()

    def _close_part(self) -> None:
        part, self.part = self.part, None
        if part is not None:
            with contextlib.suppress(Exception):
                part.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)


class App:
    """The wearer loop. `run()` blocks until `stop()` (or the simulated presses are done)."""

    def __init__(
        self, config: Config, parts: Parts, *, backoff: tuple[float, float] = (0.5, 30.0), status_grace_s: float = STATUS_GRACE_S,
        notifier: Notifier | None = None,
    ) -> None:
        self.config, self.parts = config, parts
        self._notifier = notifier
        """edge.service.Notifier (READY=1 once ready, WATCHDOG=1 while the loop turns); None outside systemd."""
        self._backoff = backoff
        self._status_grace_s = status_grace_s
        self._down: dict[str, float] = {}
        self._queue: queue.Queue[Event] = queue.Queue()
        self._stop_requested = threading.Event()
        self._state = State.STARTING
        self._state_changed = threading.Condition()
        self._announced_down: set[str] = set()
        self._continuous = False
        self._next_tick = 0.0
        self._changes = Changes()
        self._to_warm: deque[str] = deque()
        self._warmed = 0
        self._spoken_at = float("-inf")
        """When the loop last handed audio to the sink."""
        self.last_phrase: str | None = None
        self.presses_done = 0

    # ---- called from any thread

    def post(self, event: Event) -> None:
        """Hand an event to the loop (the only thing callbacks do)."""
        self._queue.put(event)

    def press(self, kind: ButtonEvent = ButtonEvent.PRESS) -> None:
        self.post(Event(EventKind.BUTTON, button=kind))

    def stop(self) -> None:
        """Ask the loop to stop; safe from a signal handler (it only sets a flag)."""
        self._stop_requested.set()

    @property
    def state(self) -> State:
        return self._state

    @property
    def continuous(self) -> bool:
        return self._continuous

    def wait_for_state(self, state: State, timeout: float) -> bool:
        with self._state_changed:
            return self._state_changed.wait_for(lambda: self._state is state, timeout)

    # ---- the loop

    def run(self, presses: int = 0, exit_after_presses: bool = False) -> None:
        """Start the parts, then serve events until stop() (or `presses` presses with exit_after_presses)."""
        supervisors = [Supervisor("camera", self.parts.camera.open, self.post, Backoff(*self._backoff))]
        if self.parts.open_button is not None:
            open_button = self.parts.open_button
            supervisors.append(Supervisor("button", lambda: open_button(self._on_button), self.post, Backoff(*self._backoff)))
        try:
            for supervisor in supervisors:
                supervisor.start()
            if self.parts.bridge is not None:
                self.parts.bridge.attach(self._on_button, self._on_part_status)
            for supervisor in supervisors:
                if not supervisor.first_attempt.wait(_FIRST_OPEN_TIMEOUT_S):
                    _LOGGER.warning("%s: still opening after %.0f s; starting anyway", supervisor.name, _FIRST_OPEN_TIMEOUT_S)
            self._to_warm.extend(all_phrases(self.config.speech.verbosity, self.config.vision.classes))  # warmed while idle
            for _ in range(presses):
                self.press()
            self._set_state(State.READY)
            button = supervisors[1].part if len(supervisors) > 1 else None  # opened by open_button: a Button
            _LOGGER.info("ready: %s", _how_to_use(button, presses, exit_after_presses))
            self._say(Status.READY.value)
            if self._notifier is not None:
                self._notifier.notify("READY=1", "STATUS=ready")
            while not self._stop_requested.is_set():
                if exit_after_presses and self.presses_done >= presses:
                    break
                self._step()
        finally:
            self._set_state(State.STOPPING)
            for supervisor in supervisors:
                supervisor.stop()
            self._finish_speech()
            self._set_state(State.STOPPED)

    def _step(self) -> None:
        if self._notifier is not None:
            self._notifier.pet()  # only a turning loop gets here: a hung analysis or sink starves the watchdog
        self._announce_outages()
        now = time.monotonic()
        if self._continuous and now >= self._next_tick:
            self._next_tick = now + self.config.app.continuous_interval_s
            self._describe(continuous=True)
            return
        timeout = 0.0 if self._to_warm else _IDLE_POLL_S
        if self._continuous:
            timeout = min(_IDLE_POLL_S, max(0.0, self._next_tick - now))
        try:
            event = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            if self._to_warm:
                self._warm_one()
            return
        self._handle(event)

    def _handle(self, event: Event) -> None:
        if event.kind is EventKind.PART_DOWN:
            self._part_down(event.part)
        elif event.kind is EventKind.PART_UP:
            self._part_up(event.part)
        elif event.button is ButtonEvent.PRESS:
            self._describe(continuous=False, pressed_at=event.at)
            self.presses_done += 1
        elif event.button is ButtonEvent.REPEAT:
            self._say(self.last_phrase or Status.NOTHING_TO_REPEAT.value, interrupt=True)
        elif event.button is ButtonEvent.CONTINUOUS:
            self._continuous = not self._continuous
            self._changes.reset()
            self._next_tick = time.monotonic() + 1.0  # after the "continuous on" phrase
            self._say((Status.CONTINUOUS_ON if self._continuous else Status.CONTINUOUS_OFF).value, interrupt=True)
            self._set_state(self._idle_state())
        elif event.button is ButtonEvent.QUIT:
            self.stop()

    def _on_button(self, kind: ButtonEvent) -> None:
        self.press(kind)

    def _on_part_status(self, part: str, up: bool, detail: str = "") -> None:
        self.post(Event(EventKind.PART_UP if up else EventKind.PART_DOWN, part=part, detail=detail))

    # ---- one description

    def _describe(self, *, continuous: bool, pressed_at: float = float("inf")) -> None:
        if not continuous:
            # a press cuts what the wearer was hearing when they pressed, so they need not wait for an
            # old sentence; presses made while the loop was still busy each get their answer in turn
            if pressed_at > self._spoken_at:
                self._stop_speech()
            self._play(self.parts.earcon)
            if self.parts.bridge is not None and self.config.bridge.haptic:
                self.parts.bridge.haptic()
        self._set_state(State.CAPTURING)
        try:
            if "camera" in self._down:
                if not continuous:  # the wearer asked: answer, but do not repeat on every tick
                    self._announced_down.add("camera")
                    self._say(Status.CAMERA_LOST.value)
                return
            try:
                frame = self.parts.camera.latest(timeout=2.0)
            except CameraError as exc:
                _LOGGER.warning("capture failed: %s", exc)
                self._part_down("camera")
                return
            luma = brightness(frame.image)
            night = self._night(luma)
            self._set_state(State.ANALYSING)
            try:
                # continuous mode follows each face from tick to tick (the mesh's own region of interest,
                # the detector only when needed): ids stay with people, so only changes are spoken
                result = self.parts.pipeline.analyze(frame.image, lowlight=night, track=continuous)
            except Exception:  # noqa: BLE001 — one bad frame must not end the loop
                _LOGGER.exception("analysis of frame %d failed", frame.index)
                if not continuous:
                    self._say(Status.ERROR.value)
                return
            dark = too_dark(result, self.config.light.too_dark_luma, self.config.light.too_noisy)
            if continuous:
                text = self._changes.update(result, self.config.speech.verbosity, too_dark=dark)
            else:
                text = describe(result, self.config.speech.verbosity, too_dark=dark)
            _LOGGER.info("frame %d (%s, luma %.0f): %s", frame.index, "night" if night else "day", luma, text or "(no change)")
            notice = self.parts.pipeline.take_notice()  # offload: "offload unavailable" once
            if text is not None:
                self.last_phrase = text
                self._say(text, sentence=True)
            if notice:
                self._say(notice)
        finally:
            self._set_state(self._idle_state())

    def _night(self, luma: float) -> bool:
        mode = self.config.vision.lowlight
        if mode != "auto":
            return mode == "on"
        self.parts.lux.observe(luma)
        try:
            lux = self.parts.lux.read()
        except Exception as exc:  # noqa: BLE001 — a flaky sensor keeps the current mode
            _LOGGER.warning("%s: read failed (%s); keeping the current mode", self.parts.lux.description, exc)
            lux = None
        return self.parts.switch.update(lux)

    # ---- status

    def _part_down(self, name: str) -> None:
        self._down.setdefault(name, time.monotonic())

    def _announce_outages(self) -> None:
        now = time.monotonic()
        for name, since in self._down.items():
            if name not in self._announced_down and now - since >= self._status_grace_s:
                self._announced_down.add(name)
                self._say(f"{name} lost")

    def _part_up(self, name: str) -> None:
        self._down.pop(name, None)
        if name in self._announced_down:
            self._announced_down.discard(name)
            self._say(f"{name} back")

    # ---- speech (errors are logged, never fatal: the next press tries again)

    def _say(self, text: str, *, sentence: bool = False, interrupt: bool = False) -> None:
        """Look the words up in the phrase cache and hand them to the sink (which plays them on its thread)."""
        _LOGGER.debug("say: %s", text)  # what the wearer hears, for `--debug` and the fault-matrix tests
        previous = self._state
        self._set_state(State.SPEAKING)
        try:
            clip = self.parts.cache.compose(text) if sentence else self.parts.cache.get(text)
            if interrupt:
                self._stop_speech()
            self._play(clip)
        except EdgeError as exc:
            _LOGGER.error("cannot say %r: %s", text, exc)
        finally:
            self._set_state(previous)

    def _play(self, clip: AudioClip | None) -> None:
        if clip is None:
            return
        try:
            self.parts.sink.play(clip, block=False)
            self._spoken_at = time.monotonic()
        except EdgeError as exc:
            _LOGGER.error("audio sink: %s", exc)

    def _stop_speech(self) -> None:
        self.parts.sink.stop()

    def _finish_speech(self) -> None:
        try:
            self.parts.sink.wait(10.0)
        except EdgeError as exc:
            _LOGGER.error("audio sink: %s", exc)

    def _warm_one(self) -> None:
        text = self._to_warm.popleft()
        try:
            self.parts.cache.warm([text])
            self._warmed += 1
        except EdgeError as exc:
            _LOGGER.warning("speech cache: cannot warm %r: %s", text, exc)
        if not self._to_warm:
            _LOGGER.info("speech cache: %d phrases ready", self._warmed)

    def _idle_state(self) -> State:
        return State.CONTINUOUS if self._continuous else State.READY

    def _set_state(self, state: State) -> None:
        with self._state_changed:
            if state is not self._state:
                _LOGGER.debug("state: %s → %s", self._state.value, state.value)
                self._state = state
                self._state_changed.notify_all()


def _how_to_use(button: Button | None, presses: int, exit_after_presses: bool) -> str:
    """The one line a person at the terminal needs once the loop is ready: how to press, how to stop."""
    if exit_after_presses:
        return f"answering {presses} simulated press(es), then stopping"
    how = button.hint if button is not None else "presses come only from --presses N"
    first = f"; {presses} simulated press(es) first (--exit-after-presses stops after them)" if presses else ""
    return f"{how}, Ctrl-C to quit{first}"


# --------------------------------------------------------------------------- production parts


def has_sound_card() -> bool:
    """True when ALSA lists a playback card (`aplay -l`)."""
    aplay = shutil.which("aplay")
    if not Path("/dev/snd").is_dir() or aplay is None:
        return False
    try:
        listing = subprocess.run([aplay, "-l"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "card " in listing


def resolve_sink_endpoint(endpoint: str, state_dir: Path) -> str:
    """An "alsa:" endpoint becomes wav:<state_dir>/last_speech.wav when there is no sound card."""
    if not endpoint.startswith("alsa:") or has_sound_card():
        return endpoint
    target = state_dir / "last_speech.wav"
    _LOGGER.warning("no sound card (aplay -l lists none): speech is written to %s", target)
    return f"wav:{target}"


@dataclass(frozen=True)
class Speech:
    """The wearer's voice, phrase cache and audio sink, as `run` and `say` both set them up."""

    voice: Voice
    cache: Phrases
    sink: Sink
    earcon: AudioClip


@contextlib.contextmanager
def open_speech(config: Config) -> Iterator[Speech]:
    """Voice (Piper, else espeak-ng), phrase cache and sink for `config.speech`; no sound card → WAV file."""
    from edge.speech.playback import earcon, open_sink
    from edge.speech.tts import PhraseCache, load_voice

    speech = config.speech
    endpoint = resolve_sink_endpoint(speech.sink, config.app.state_path)
    with load_voice(speech.voice or None, speech.espeak_voice) as voice, open_sink(endpoint) as sink:
        cache = PhraseCache(voice, rate=speech.rate, volume=speech.volume, cache_dir=speech.cache_path)
        yield Speech(voice, cache, sink, earcon(voice.sample_rate, volume=0.4 * speech.volume))


@contextlib.contextmanager
def open_core(config: Config) -> Iterator[Parts]:
    """Pipeline (and offload) and speech: the parts a bad value (a missing model or voice, a bad sink)
    makes fail. They hold nothing exclusive, so a reload opens the new ones while the old loop runs."""
    from edge.pipeline import Pipeline

    with contextlib.ExitStack() as stack:
        pipeline: Analyser = stack.enter_context(Pipeline.from_config(config.vision, config.light))
        if config.offload.enabled:
            from edge.offload.client import OffloadingPipeline

            pipeline = stack.enter_context(OffloadingPipeline.from_config(pipeline, config.offload, config.vision.classes))
        speech = stack.enter_context(open_speech(config))
        yield Parts(pipeline=pipeline, cache=speech.cache, sink=speech.sink, earcon=speech.earcon)


@contextlib.contextmanager
def open_devices(config: Config, core: Parts) -> Iterator[Parts]:
    """`core` with the bridge, light sensor, camera and button added. These hold a serial port, GPIO
    pins or a camera, so a reload opens them only once the old ones are closed; they do not fail on a
    bad value (the bridge and the supervised camera and button reconnect, the light falls back)."""
    from edge.hw.button import open_button
    from edge.hw.camera import Camera
    from edge.hw.light import open_light

    real = config.app.use_real_hw
    with contextlib.ExitStack() as stack:
        bridge = None
        if config.bridge.port:
            from edge.hw.bridge import Bridge

            bridge = stack.enter_context(Bridge.open(config.bridge))
        lux, switch = open_light(config.light, real=real, bridge=bridge)
        stack.callback(lux.close)
        camera = Camera(config.camera)
        stack.callback(camera.close)
        _LOGGER.info("hardware: %s; light: %s; sink: %s", "real" if real else "fake", lux.description,
                     core.sink.endpoint)
        yield replace(core, camera=camera, lux=lux, switch=switch, bridge=bridge,
                      open_button=lambda emit: open_button(config.button, emit, real=real))


@contextlib.contextmanager
def open_parts(config: Config) -> Iterator[Parts]:
    """The real pipeline, voice, phrase cache, sink, camera, light and button for `config`."""
    with open_core(config) as core, open_devices(config, core) as parts:
        yield parts
