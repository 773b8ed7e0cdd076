"""The parts the wearer loop drives, as nouns with typed members (as gpiozero gives its devices nouns).

One small Protocol per part. The production classes implement them, and so do the fakes that ship
in the package (camera: `edge.hw.camera.Camera` over the demo/scene readers; button: TerminalButton,
NoButton; light: FrameBrightness; sink: NullSink, WavSink; bridge: `edge.hw.bridge.Bridge` on the
firmware simulator), so the whole loop runs on a laptop. What a part may not be able to do is a
member with a "nothing" value (`failed` None: it cannot report a failure; `take_notice()` None:
nothing to say), never a getattr probe.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from edge.hw.bridge import StatusHook
    from edge.hw.button import Emit
    from edge.hw.camera import Frame
    from edge.results import FrameResult
    from edge.speech.tts import AudioClip


@runtime_checkable
class Analyser(Protocol):
    """The pipeline: edge.pipeline.Pipeline, or edge.offload.client.OffloadingPipeline around it."""

    def analyze(self, frame: np.ndarray, lowlight: bool | None = False, track: bool = False) -> FrameResult: ...

    def take_notice(self) -> str | None:
        """A status phrase to say once ("offload unavailable"), or None."""
        ...


@runtime_checkable
class Phrases(Protocol):
    """The phrase cache (edge.speech.tts.PhraseCache): text to audio, warmed while the loop is idle."""

    def get(self, text: str) -> AudioClip: ...

    def compose(self, text: str) -> AudioClip:
        """A describe() sentence from cached fragments."""
        ...

    def warm(self, phrases: Iterable[str]) -> int: ...


@runtime_checkable
class Sink(Protocol):
    """Where speech goes (edge.speech.playback: AlsaSink, WavSink, NullSink); plays on its own thread."""

    @property
    def endpoint(self) -> str: ...

    def play(self, audio: AudioClip, block: bool = True) -> None: ...

    def stop(self) -> None:
        """Cut the current utterance and drop the queued ones."""
        ...

    def wait(self, timeout: float | None = None) -> bool:
        """Block until everything queued has played (True) or `timeout` passed (False)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Supervised(Protocol):
    """A part that a Supervisor keeps open: it says what it is, may report a failure, and closes."""

    @property
    def description(self) -> str: ...

    @property
    def failed(self) -> threading.Event | None:
        """Set when the part is lost and must be reopened; None when it cannot tell (up until closed)."""
        ...

    @property
    def error(self) -> Exception | None:
        """Why it failed, once `failed` is set."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Camera(Supervised, Protocol):
    """The newest frame on demand (edge.hw.camera.Camera); `open()` (re)starts it and returns it."""

    def open(self) -> Camera: ...

    def latest(self, timeout: float = 2.0) -> Frame: ...


@runtime_checkable
class Button(Supervised, Protocol):
    """The one button (edge.hw.button); opened with the callback that posts its events."""

    @property
    def hint(self) -> str:
        """How to press it, for the line logged when the loop is ready."""
        ...


@runtime_checkable
class LightSource(Protocol):
    """Ambient light in rough lux (edge.hw.light.LuxSource and its kinds)."""

    @property
    def description(self) -> str: ...

    def read(self) -> float | None:
        """The latest reading, or None when there is none yet."""
        ...

    def observe(self, luma: float) -> None:
        """Offered every captured frame's mean luma; only frame-based sources use it."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Switch(Protocol):
    """The day/night switch over a LightSource's readings (edge.hw.light.DayNightSwitch, FallbackSwitch)."""

    @property
    def night(self) -> bool: ...

    def update(self, lux: float | None) -> bool:
        """Feed one reading (None: keep the mode); True in night mode."""
        ...


@runtime_checkable
class Bridge(Protocol):
    """The MCU on the serial bridge (edge.hw.bridge.Bridge): button, lux sensor, haptic motor."""

    @property
    def port(self) -> str: ...

    @property
    def description(self) -> str: ...

    def attach(self, emit: Emit, status: StatusHook) -> None:
        """Send button events to `emit` and "light sensor" up/down to `status`."""
        ...

    def lux(self) -> float | None:
        """The latest lux reading, None when it is stale."""
        ...

    def haptic(self) -> bool: ...

    def close(self) -> None: ...
