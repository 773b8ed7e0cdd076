"""The MCU on the serial bridge as the wearer loop sees it: lux with its age, button, haptic, battery.

The link (firmware_bridge.link) keeps the port open and reconnects by itself; this class turns its
messages into what the app needs and decides when the lux reading is too old to trust. It reports
one part to the app, "light sensor": down when no fresh reading has come for `stale_s` (link down,
MCU silent, or the sensor missing on its I²C bus), up when readings are back; the loop then says
"light sensor lost" / "light sensor back" once, and frame brightness decides in between.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from edge.config import BridgeConfig
from edge.errors import HardwareError
from edge.hw.button import ButtonEvent, Emit
from firmware_bridge.firmware import wire
from firmware_bridge.link import BridgeLink
from firmware_bridge.protocol import Message

_LOGGER = logging.getLogger(__name__)

PART = "light sensor"
_CHECK_S = 0.25
StatusHook = Callable[[str, bool, str], None]
"""(part name, up, detail)."""

_BUTTONS = {wire.BUTTON_TAP: ButtonEvent.PRESS, wire.BUTTON_HOLD: ButtonEvent.CONTINUOUS}
_SENSOR_ERRORS = {
    wire.SENSOR_NOT_FOUND: "the MCU finds no lux sensor on its I²C bus (check SDA → GP4, SCL → GP5, 3V3 and GND)",
    wire.SENSOR_READ_FAILED: "the MCU's lux sensor stopped answering (loose I²C wire?)",
}


class Bridge:
    """Context manager; `close()` is idempotent. `attach()` connects it to the app's queue."""

    def __init__(
        self,
        config: BridgeConfig,
        *,
        port: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        backoff: tuple[float, float] = (0.5, 10.0),
        simulator: Any = None,
    ) -> None:
        self.config = config
        self.port = port or config.port
        self._clock = clock
        self._simulator = simulator
        self._lux: tuple[float, float] | None = None
        self.battery_mv: int | None = None
        self.sensor_problem = ""
        """Why the MCU has no lux sensor (from its SENSOR_ERROR), empty when it has one."""
        self._emit: Emit | None = None
        self._status: StatusHook | None = None
        self._fresh: bool | None = None
        self._started_at = clock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.link = BridgeLink(
            self.port,
            baudrate=config.baudrate,
            timeout_s=config.timeout_s,
            backoff=backoff,
            on_message=self._on_message,
            on_state=self._on_link_state,
            hello_messages=((wire.SET_RATE, (config.lux_interval_ms,)),),
            error=HardwareError,  # what the app and `edge doctor` catch
        )
        self._monitor = threading.Thread(target=self._watch, name="bridge-lux-age", daemon=True)
        self.description = f"MCU bridge on {self.port}"

    @classmethod
    def open(cls, config: BridgeConfig, **kwargs: Any) -> Bridge:
        """Start the link (and, for port "sim", the firmware simulator on a pty)."""
        simulator = None
        port = None
        if config.port == "sim":
            from firmware_bridge.simulator import Simulator

            simulator = Simulator(lux_interval_ms=config.lux_interval_ms).start()
            port = simulator.port
            _LOGGER.info("bridge: firmware simulator on %s", port)
        bridge = cls(config, port=port, simulator=simulator, **kwargs)
        return bridge.start()

    def start(self) -> Bridge:
        self.link.start()
        if not self._monitor.is_alive():
            self._monitor.start()
        return self

    def attach(self, emit: Emit, status: StatusHook) -> None:
        """Button events go to `emit`, "light sensor" transitions to `status` (both only enqueue)."""
        self._emit, self._status = emit, status
        if self._fresh is False:
            status(PART, False, self._stale_reason())

    # ---- what the app reads

    def lux(self) -> float | None:
        """The latest lux reading, or None when there is none younger than bridge.stale_s."""
        with self._lock:
            reading = self._lux
        if reading is None or self._clock() - reading[1] > self.config.stale_s:
            return None
        return reading[0]

    def lux_age(self) -> float | None:
        with self._lock:
            reading = self._lux
        return None if reading is None else self._clock() - reading[1]

    def haptic(self, pattern: int = wire.HAPTIC_TAP) -> bool:
        """Start a vibration pattern without waiting for the acknowledgement; False when the link is down."""
        try:
            self.link.send(wire.HAPTIC, pattern)
        except HardwareError as exc:
            _LOGGER.debug("haptic skipped: %s", exc)
            return False
        return True

    # ---- from the link thread

    def _on_message(self, message: Message) -> None:
        if message.kind == wire.LUX:
            (lux,) = message.values
            if lux == lux and lux >= 0.0:  # not NaN, not negative
                with self._lock:
                    self._lux = (float(lux), self._clock())
                self.sensor_problem = ""
                self._check()
        elif message.kind == wire.BUTTON:
            event = _BUTTONS.get(message.values[0])
            if event is not None and self._emit is not None:
                self._emit(event)
        elif message.kind == wire.BATTERY:
            self.battery_mv = message.values[0]
        elif message.kind == wire.SENSOR_ERROR:
            self.sensor_problem = _SENSOR_ERRORS.get(message.values[0], f"sensor error {message.values[0]}")
            _LOGGER.warning("%s: %s", self.description, self.sensor_problem)
        elif message.kind == wire.HELLO:
            caps = message.values[0]
            if not caps & wire.CAP_LUX and not self.sensor_problem:
                self.sensor_problem = _SENSOR_ERRORS[wire.SENSOR_NOT_FOUND]

    def _on_link_state(self, up: bool, detail: str) -> None:
        self._check()

    def _watch(self) -> None:
        while not self._stop.wait(_CHECK_S):
            self._check()

    def _stale_reason(self) -> str:
        if not self.link.connected.is_set():
            return self.link.error or f"{self.description}: connecting"
        return self.sensor_problem or "the MCU sends no lux readings"

    def _check(self) -> None:
        fresh = self.lux() is not None
        if not fresh and self._lux is None and self._clock() - self._started_at < self.config.stale_s:
            return  # still connecting: not news yet
        with self._lock:
            if fresh is self._fresh:
                return
            first, self._fresh = self._fresh is None, fresh
        if fresh:
            if not first:  # the first reading is not news
                _LOGGER.info("%s: lux readings back (%.1f lux)", PART, self.lux() or 0.0)
                self._notify(True, "")
        else:
            age = self.lux_age()
            since = "none yet" if age is None else f"last one {age:.1f} s ago"
            reason = self._stale_reason()
            _LOGGER.warning("%s: no fresh lux reading (%s): %s; frame brightness decides until it is back",
                            PART, since, reason)
            self._notify(False, reason)

    def _notify(self, up: bool, detail: str) -> None:
        status = self._status
        if status is not None:
            status(PART, up, detail)

    def close(self) -> None:
        self._stop.set()
        self.link.close()
        if self._simulator is not None:
            self._simulator.close()
            self._simulator = None

    def __enter__(self) -> Bridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
