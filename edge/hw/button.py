"""The one button: tap = describe now, double tap = repeat the last phrase, hold = continuous mode.

Callbacks only hand a `ButtonEvent` to `emit` (the app puts it on its queue); nothing slow ever runs
on gpiozero's callback threads. A tap acts on release, so a hold is never also a tap.
"""

from __future__ import annotations

import enum
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TextIO

from edge.config import ButtonConfig
from edge.errors import HardwareError

_LOGGER = logging.getLogger(__name__)


class ButtonEvent(enum.Enum):
    PRESS = "press"
    """Describe what is in front now."""
    REPEAT = "repeat"
    """Say the last phrase again."""
    CONTINUOUS = "continuous"
    """Toggle continuous mode."""
    QUIT = "quit"
    """Stop the app (terminal button only)."""


Emit = Callable[[ButtonEvent], None]


class _Button:
    """What every button shares (edge.parts.Button): none can report a failure (gpiozero and a
    terminal give no such signal), so the Supervisor keeps it open until the loop stops."""

    failed: threading.Event | None = None
    error: Exception | None = None


class GpioButton(_Button):
    """gpiozero `Button` (pin to ground, internal pull-up). Context manager; close() is idempotent."""

    def __init__(
        self,
        config: ButtonConfig,
        emit: Emit,
        *,
        pin_factory: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from gpiozero import Button

        self._emit, self._clock = emit, clock
        self._window = config.double_press_window
        self._pressed_at = 0.0
        self._was_held = False
        self._last_tap: float | None = None
        try:
            self._button = Button(config.pin, pull_up=True, hold_time=config.hold_time, pin_factory=pin_factory)
        except Exception as exc:  # noqa: BLE001 — gpiozero raises many kinds (no factory, pin busy, bad name)
            raise HardwareError(f"button.pin {config.pin}: cannot open: {exc}") from exc
        self.description = f"button on {config.pin}"
        self.hint = f"press the button on {config.pin} to read faces (twice quickly = repeat, hold = continuous on/off)"
        self._button.when_pressed = self._on_pressed
        self._button.when_held = self._on_held
        self._button.when_released = self._on_released

    def _on_pressed(self) -> None:
        self._pressed_at = self._clock()
        self._was_held = False

    def _on_held(self) -> None:
        self._was_held = True
        self._last_tap = None
        self._emit(ButtonEvent.CONTINUOUS)

    def _on_released(self) -> None:
        if self._was_held:
            return
        if self._last_tap is not None and self._pressed_at - self._last_tap <= self._window:
            self._last_tap = None
            self._emit(ButtonEvent.REPEAT)
        else:
            self._last_tap = self._clock()
            self._emit(ButtonEvent.PRESS)

    def close(self) -> None:
        button = getattr(self, "_button", None)
        if button is not None:
            button.close()  # gpiozero's close() is idempotent

    def __enter__(self) -> GpioButton:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_KEYS = {"": ButtonEvent.PRESS, "r": ButtonEvent.REPEAT, "c": ButtonEvent.CONTINUOUS, "q": ButtonEvent.QUIT}


class _Lines:
    """The one reader of a stream, shared by every TerminalButton on it, for the life of the process.

    A blocked readline() cannot be interrupted, so a thread per button would outlive the button's
    close(): after a reload the closed button's thread took the next line and dropped it. Lines read
    while no button is attached (between a close and the next open) wait for the next one."""

    _by_stream: dict[int, _Lines] = {}
    _registry_lock = threading.Lock()

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._handler: Callable[[str], None] | None = None
        self._waiting: deque[str] = deque(maxlen=16)
        threading.Thread(target=self._read, name="terminal-lines", daemon=True).start()

    @classmethod
    def of(cls, stream: TextIO) -> _Lines:
        with cls._registry_lock:
            lines = cls._by_stream.get(id(stream))
            if lines is None:
                lines = cls._by_stream[id(stream)] = cls(stream)
            return lines

    def attach(self, handler: Callable[[str], None]) -> None:
        with self._lock:
            self._handler = handler
            while self._waiting:
                handler(self._waiting.popleft())

    def detach(self, handler: Callable[[str], None]) -> None:
        with self._lock:
            if self._handler == handler:
                self._handler = None

    def _read(self) -> None:
        try:
            for line in self._stream:
                with self._lock:  # handlers only enqueue, so holding the lock keeps the lines in order cheaply
                    if self._handler is None:
                        self._waiting.append(line)
                    else:
                        self._handler(line)
        except (OSError, ValueError) as exc:  # the stream was closed under us
            _LOGGER.debug("terminal button: input closed (%s)", exc)
        _LOGGER.debug("terminal button: end of input")
        with self._registry_lock:
            self._by_stream.pop(id(self._stream), None)


class TerminalButton(_Button):
    """Demo/fake mode: Enter = press, "r" = repeat, "c" = continuous toggle, "q" = quit (one per line)."""

    description = "terminal button (Enter = press, r = repeat, c = continuous, q = quit)"
    hint = "press Enter to read faces (r = repeat, c = continuous on/off)"

    def __init__(self, emit: Emit, stream: TextIO | None = None) -> None:
        self._emit = emit
        self._lines = _Lines.of(stream if stream is not None else sys.stdin)
        self._lines.attach(self._on_line)

    def _on_line(self, line: str) -> None:
        event = _KEYS.get(line.strip().lower())
        if event is None:
            _LOGGER.info("keys: Enter = describe, r = repeat, c = continuous on/off, q = quit")
        else:
            self._emit(event)

    def close(self) -> None:
        self._lines.detach(self._on_line)

    def __enter__(self) -> TerminalButton:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NoButton(_Button):
    """Fake mode without a terminal (service, CI): presses come only from `--presses`."""

    description = "no button (no terminal; use --presses N)"
    hint = "no terminal, so no button (presses come only from --presses N)"

    def close(self) -> None:
        pass

    def __enter__(self) -> NoButton:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def open_button(config: ButtonConfig, emit: Emit, *, real: bool) -> GpioButton | TerminalButton | NoButton:
    """The GPIO button on real hardware; otherwise Enter on a terminal, or nothing without one."""
    if real:
        return GpioButton(config, emit)
    if sys.stdin is not None and sys.stdin.isatty():
        return TerminalButton(emit)
    return NoButton()
