"""The host end of the serial bridge: open the port, read frames on a thread, reconnect with back-off.

Any pyserial URL works (`serial.serial_for_url`): /dev/ttyAMA0 (the Pi's UART pins), /dev/ttyACM0
(USB), /dev/glasses-bridge (the udev rule's name), loop://, or a pty from the simulator. The link is
up once a valid frame has arrived, not when the port opens: a port that opens but carries nothing
valid (MCU off, wrong baud rate, TX/RX not crossed) counts as down, and so does silence longer than
`timeout_s` (the firmware sends a heartbeat every second). Going down, the link closes the port and
opens it again with capped exponential back-off, for as long as it runs.

Callbacks (`on_message`, `on_state`) run on the reader thread; they must only hand work on.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import serial

from firmware_bridge.firmware import wire
from firmware_bridge.protocol import Message, Parser, frame

_LOGGER = logging.getLogger(__name__)

_READ_TIMEOUT_S = 0.1
_GARBAGE_REPORT_BYTES = 64
"""This many bytes without one valid frame make the link say what is probably wrong, once per open."""


class LinkSilent(Exception):
    """No valid frame for too long on an open port."""


class LinkError(Exception):
    """The link is down or the MCU did not answer: raised by send, command and ping unless the caller names
    its own class (`BridgeLink(error=...)`; the glasses pass edge.errors.HardwareError). firmware_bridge
    imports nothing from edge: edge/hw/bridge.py uses this package, not the other way round."""


def describe_open_error(url: str, exc: BaseException) -> str:
    """What went wrong opening `url`, and what to do about it."""
    code = getattr(exc, "errno", None)
    if code == errno.ENOENT or "No such file" in str(exc):
        return (f"bridge.port {url}: no such port (is the MCU plugged in? USB shows up as /dev/ttyACM0; the Pi's "
                "UART pins need enable_uart=1: raspi-config → Interface Options → Serial Port, login shell off)")
    if code == errno.EACCES or "Permission denied" in str(exc):
        return f"bridge.port {url}: permission denied (add the user to group dialout; the glasses service user has it)"
    if code == errno.EBUSY:
        return f"bridge.port {url}: busy (another program has it open: a serial console or getty?)"
    if isinstance(exc, ValueError):
        return f"bridge.port {url}: {exc} (expected a device path such as /dev/ttyAMA0, or a pyserial URL such as loop://)"
    return f"bridge.port {url}: cannot open: {exc}"


class BridgeLink:
    """The serial link to the MCU, kept up on its own thread. Context manager; `close()` is idempotent."""

    def __init__(
        self,
        url: str,
        *,
        baudrate: int = 115200,
        timeout_s: float = 3.0,
        backoff: tuple[float, float] = (0.5, 10.0),
        on_message: Callable[[Message], None] | None = None,
        on_state: Callable[[bool, str], None] | None = None,
        hello_messages: tuple[tuple[int, tuple], ...] = (),
        serial_for_url: Callable[..., Any] = serial.serial_for_url,
        error: type[Exception] = LinkError,
    ) -> None:
        self.url, self.baudrate, self.timeout_s = url, baudrate, timeout_s
        self._backoff_initial, self._backoff_cap = backoff
        self._on_message, self._on_state = on_message, on_state
        self._hello_messages = hello_messages
        self._serial_for_url = serial_for_url
        self._error = error
        self.connected = threading.Event()
        self.error = ""
        """Why the link is down (empty while up)."""
        self.hello: Message | None = None
        """The MCU's last HELLO: values (caps, sensor, version bytes)."""
        self.connects = 0
        self.parser = Parser()
        self._port: Any = None
        self._write_lock = threading.Lock()
        self._seq = 0
        self._pending: dict[int, tuple[threading.Event, list[int]]] = {}
        self._pongs: dict[int, threading.Event] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bridge-link", daemon=True)
        self._started = False

    @property
    def description(self) -> str:
        return f"bridge on {self.url}"

    def start(self) -> BridgeLink:
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    # ---- sending (any thread)

    def send(self, kind: int, *values: object) -> int:
        """Send one frame; returns its sequence number. The link's error class (LinkError) when it is down."""
        with self._write_lock:
            return self._send_locked(kind, values, None)

    def _send_locked(self, kind: int, values: tuple, waiter: tuple[threading.Event, list[int]] | None) -> int:
        port = self._port
        if port is None or not self.connected.is_set():
            raise self._error(f"{self.description}: not connected ({self.error or 'connecting'})")
        self._seq = (self._seq + 1) & 0xFF
        seq = self._seq
        if waiter is not None:  # registered before the write, so a fast ACK is not missed
            self._pending[seq] = waiter
        try:
            port.write(frame(kind, seq, *values))
        except (serial.SerialException, OSError) as exc:
            self._pending.pop(seq, None)
            raise self._error(f"{self.description}: write failed: {exc}") from exc
        return seq

    def command(self, kind: int, *values: object, timeout: float = 1.0) -> int:
        """Send a command and wait for its ACK; returns the ACK status (wire.ACK_OK = done)."""
        done, result = threading.Event(), []
        with self._write_lock:
            seq = self._send_locked(kind, values, (done, result))
        try:
            if not done.wait(timeout):
                raise self._error(f"{self.description}: no acknowledgement within {timeout:.1f} s")
            return result[0]
        finally:
            with self._write_lock:
                self._pending.pop(seq, None)

    def ping(self, timeout: float = 1.0) -> float:
        """Round-trip time in seconds of a PING/PONG."""
        token = int(time.monotonic_ns() & 0xFFFFFFFF)
        got = threading.Event()
        self._pongs[token] = got
        try:
            start = time.perf_counter()
            self.send(wire.PING, token)
            if not got.wait(timeout):
                raise self._error(f"{self.description}: no answer to ping within {timeout:.1f} s")
            return time.perf_counter() - start
        finally:
            self._pongs.pop(token, None)

    # ---- the reader thread

    def _run(self) -> None:
        delay = self._backoff_initial
        while not self._stop.is_set():
            try:
                port = self._serial_for_url(self.url, baudrate=self.baudrate, timeout=_READ_TIMEOUT_S, write_timeout=1.0)
            except (serial.SerialException, OSError, ValueError) as exc:
                self._down(describe_open_error(self.url, exc), delay)
                self._stop.wait(delay)
                delay = min(self._backoff_cap, delay * 2)
                continue
            try:
                self._serve(port)
                delay = self._backoff_initial  # it was up: reconnect quickly
            except LinkSilent as exc:
                self._down(str(exc), delay)
            except (serial.SerialException, OSError) as exc:
                self._down(f"{self.description}: lost ({exc})", delay)
            finally:
                with self._write_lock:
                    self._port = None
                try:
                    port.close()
                except (serial.SerialException, OSError):
                    pass
            if not self._stop.is_set():
                self._stop.wait(delay)
                delay = min(self._backoff_cap, delay * 2)
        if self.connected.is_set():
            self.connected.clear()
            self._state(False, "closed")

    def _serve(self, port: Any) -> None:
        self.parser.reset()
        with self._write_lock:
            self._port = port
        port.write(frame(wire.HELLO_REQ, 0))
        opened = last_rx = last_ping = asked = time.monotonic()
        garbage_reported = False
        frames_at_open, bytes_read = self.parser.frames, 0
        while not self._stop.is_set():
            data = port.read(port.in_waiting or 1)
            now = time.monotonic()
            if data:
                bytes_read += len(data)
                for message in self.parser.feed(data):
                    last_rx = now
                    self._dispatch(message, port)
            got_frames = self.parser.frames > frames_at_open
            if not got_frames and not garbage_reported and bytes_read >= _GARBAGE_REPORT_BYTES:
                garbage_reported = True
                _LOGGER.warning("%s", self._garbage_hint(bytes_read))
            if now - last_rx > self.timeout_s:
                if got_frames:
                    raise LinkSilent(f"{self.description}: no frame for {now - last_rx:.1f} s (MCU reset or cable loose?)")
                hint = self._garbage_hint(bytes_read) if bytes_read else (
                    f"{self.description}: nothing received in {now - opened:.1f} s (is the MCU powered and flashed "
                    "with firmware_bridge/firmware? TX and RX crossed, GND shared?)")
                raise LinkSilent(hint)
            if not self.connected.is_set() and now - asked > 1.0:
                asked = now
                self._write_quietly(port, frame(wire.HELLO_REQ, 0))
            if self.connected.is_set() and now - last_ping > self.timeout_s / 3:
                last_ping = now
                self._write_quietly(port, frame(wire.PING, 0, 0))

    def _garbage_hint(self, n: int) -> str:
        errors = self.parser.errors
        if self.parser.other_version is not None:
            return (f"{self.description}: the firmware speaks protocol v{self.parser.other_version}, this host "
                    f"v{wire.PROTOCOL_VERSION}: flash firmware_bridge/firmware from this checkout")
        bad = ", ".join(f"{k} {v}" for k, v in errors.items() if v)
        return (f"{self.description}: {n} bytes and no valid frame ({bad or 'no frame boundary'}): is bridge.baudrate "
                f"({self.baudrate}) the firmware's, and is the Pi's serial console off (raspi-config)?")

    def _dispatch(self, message: Message, port: Any) -> None:
        if message.kind == wire.HELLO:
            self.hello = message
            if not self.connected.is_set():
                self.connects += 1
                self.error = ""
                self.connected.set()
                caps, sensor, version = message.values
                _LOGGER.info(
                    "%s: up (firmware %s, lux sensor %s)", self.description,
                    version.decode("ascii", "replace"), wire.SENSOR_NAMES.get(sensor, "?"),
                )
                for kind, values in self._hello_messages:
                    self._write_quietly(port, frame(kind, 0, *values))
                self._state(True, "")
        elif message.kind == wire.ACK:
            acked, status = message.values
            with self._write_lock:
                pending = self._pending.get(acked)
            if pending is not None:
                pending[1].append(status)
                pending[0].set()
        elif message.kind == wire.PONG:
            waiter = self._pongs.get(message.values[0])
            if waiter is not None:
                waiter.set()
        elif not self.connected.is_set():
            return  # frames before HELLO (opened mid-stream): _serve asks for HELLO again
        if self._on_message is not None:
            self._on_message(message)

    def _write_quietly(self, port: Any, data: bytes) -> None:
        with self._write_lock:
            port.write(data)

    def _down(self, reason: str, delay: float) -> None:
        first = reason != self.error
        self.error = reason
        if first:
            _LOGGER.warning("%s; retrying in %.1f s", reason, delay)
        else:
            _LOGGER.debug("%s; retrying in %.1f s", reason, delay)
        if self.connected.is_set():
            self.connected.clear()
            self._state(False, reason)
        elif self.connects == 0 and first:
            self._state(False, reason)

    def _state(self, up: bool, detail: str) -> None:
        if self._on_state is not None:
            try:
                self._on_state(up, detail)
            except Exception:  # noqa: BLE001 — a callback bug must not end the link
                _LOGGER.exception("%s: state callback failed", self.description)

    def close(self) -> None:
        self._stop.set()
        if self._started and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    def __enter__(self) -> BridgeLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
