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


class GpioButton:
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


class TerminalButton:
    """Demo/fake mode: Enter = press, "r" = repeat, "c" = continuous toggle, "q" = quit (one per line)."""

    description = "terminal button (Enter = press, r = repeat, c = continuous, q = quit)"

    def __init__(self, emit: Emit, stream: TextIO | None = None) -> None:
        self._emit = emit
        self._stream = stream if stream is not None else sys.stdin
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, name="terminal-button", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        # A blocking readline() cannot be interrupted; close() stops events, the daemon thread dies with us.
        for line in self._stream:
            if self._closed.is_set():
                return
            event = _KEYS.get(line.strip().lower())
            if event is None:
                _LOGGER.info("keys: Enter = describe, r = repeat, c = continuous on/off, q = quit")
            else:
                self._emit(event)
        _LOGGER.debug("terminal button: end of input")

    def close(self) -> None:
        self._closed.set()

    def __enter__(self) -> TerminalButton:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NoButton:
    """Fake mode without a terminal (service, CI): presses come only from `--presses`."""

    description = "no button (no terminal; use --presses N)"

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
