"""The MCU without the board: runs firmware/bridge.py under CPython on a pty pair.

A small `machine` shim stands in for the RP2040 peripherals: the UART is the pty's master side, the
I²C bus carries a simulated BH1750 or VEML7700 (raw registers, so the real drivers convert them),
the button is a pin the test drives, the motor PWM records its duty changes. The firmware code is
the file that goes on the board, unchanged.

`unplug()` closes the pty (the host sees the port vanish, as when a USB cable is pulled) and
`plug()` makes a new one and points the same link path at it, then boots the firmware again.

    python -m firmware_bridge.simulator --link /tmp/glasses-bridge     # then:
    python -m edge run --demo --set light.source=serial --set bridge.port=/tmp/glasses-bridge
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.util
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import tty
import types
from pathlib import Path
from typing import Any

_LOGGER = logging.getLogger(__name__)

FIRMWARE_DIR = Path(__file__).resolve().parent / "firmware"
FIRMWARE_MODULES = ("ticks", "wire", "bh1750", "veml7700", "haptic", "bridge")
_TICKS_PERIOD = 1 << 30  # MicroPython's ticks_ms wraps here on the RP2040
_POLL_S = 0.002


# --------------------------------------------------------------------------- the machine shim


def ticks_ms() -> int:
    return int(time.monotonic() * 1000) % _TICKS_PERIOD


def ticks_add(ticks: int, delta: int) -> int:
    return (ticks + delta) % _TICKS_PERIOD


def ticks_diff(a: int, b: int) -> int:
    half = _TICKS_PERIOD // 2
    return ((a - b + half) % _TICKS_PERIOD) - half


def sleep_ms(ms: int) -> None:
    time.sleep(ms / 1000)


class Pin:
    IN, OUT, PULL_UP, PULL_DOWN = 0, 1, 1, 2

    def __init__(self, ident: int = 0, mode: int = 0, pull: int | None = None) -> None:
        self.ident = ident
        self.level = 1 if pull == self.PULL_UP else 0

    def value(self, level: int | None = None) -> int | None:
        if level is None:
            return self.level
        self.level = int(bool(level))
        return None


class ADC:
    def __init__(self, ident: Any = 0) -> None:
        self.raw = 0

    def read_u16(self) -> int:
        return self.raw


class PWM:
    def __init__(self, pin: Any = None) -> None:
        self.frequency = 0
        self.duty = 0
        self.changes: list[tuple[float, int]] = []
        """(time.monotonic(), duty) for every change: what the motor did."""

    def freq(self, hz: int | None = None) -> int | None:
        if hz is None:
            return self.frequency
        self.frequency = hz
        return None

    def duty_u16(self, duty: int | None = None) -> int | None:
        if duty is None:
            return self.duty
        if duty != self.duty:
            self.changes.append((time.monotonic(), duty))
        self.duty = duty
        return None


class SimBH1750:
    """Answers as a BH1750 in continuous high-resolution mode: two bytes, big-endian, lux × 1.2."""

    def __init__(self, lux: float) -> None:
        self.lux = lux
        self.powered = False

    def write(self, data: bytes) -> None:
        if data[:1] == b"\x01":
            self.powered = True

    def read(self, n: int) -> bytes:
        raw = max(0, min(65535, round(self.lux * 1.2))) if self.powered else 0
        return raw.to_bytes(2, "big")[:n]

    def read_register(self, register: int, n: int) -> bytes:
        raise OSError(errno.EIO, "BH1750 has no registers")


class SimVEML7700:
    """Answers as a VEML7700 at gain 1, 100 ms: ALS register (0x04) little-endian, lux / 0.0576."""

    def __init__(self, lux: float) -> None:
        self.lux = lux

    def write(self, data: bytes) -> None:
        pass

    def read(self, n: int) -> bytes:
        raise OSError(errno.EIO, "VEML7700 needs a register address")

    def read_register(self, register: int, n: int) -> bytes:
        raw = max(0, min(65535, round(self.lux / 0.0576))) if register == 0x04 else 0
        return raw.to_bytes(2, "little")[:n]


class I2C:
    """An I²C bus with simulated devices by address; a missing device raises OSError(ENODEV) as on the board."""

    def __init__(self, ident: int = 0, **_: Any) -> None:
        self.devices: dict[int, Any] = {}

    def _device(self, address: int) -> Any:
        device = self.devices.get(address)
        if device is None:
            raise OSError(errno.ENODEV, "no device at 0x%02x" % address)
        return device

    def scan(self) -> list[int]:
        return sorted(self.devices)

    def writeto(self, address: int, data: bytes) -> int:
        self._device(address).write(bytes(data))
        return 1

    def readfrom(self, address: int, n: int) -> bytes:
        return self._device(address).read(n)

    def writeto_mem(self, address: int, register: int, data: bytes) -> None:
        self._device(address).write(bytes((register,)) + bytes(data))

    def readfrom_mem(self, address: int, register: int, n: int) -> bytes:
        return self._device(address).read_register(register, n)


class PtyUart:
    """The firmware's UART: the master side of a pty (non-blocking; output is dropped when nobody reads)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)

    def read(self) -> bytes | None:
        try:
            return os.read(self.fd, 512) or None
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            if exc.errno == errno.EIO:  # no host has the port open
                return None
            raise

    def write(self, data: bytes) -> int:
        try:
            return os.write(self.fd, data)
        except (BlockingIOError, InterruptedError):
            return 0  # the host is not reading: a real UART drops bytes too


def machine_module() -> types.ModuleType:
    module = types.ModuleType("machine", "CPython stand-in for MicroPython's machine module (simulator)")
    for name, value in {
        "Pin": Pin, "ADC": ADC, "PWM": PWM, "I2C": I2C, "UART": None,
        "ticks_ms": ticks_ms, "ticks_add": ticks_add, "ticks_diff": ticks_diff, "sleep_ms": sleep_ms,
    }.items():
        setattr(module, name, value)
    return module


_load_lock = threading.Lock()


def load_firmware() -> types.ModuleType:
    """firmware/bridge.py (and the modules it imports) as top-level modules, as on the board."""
    with _load_lock:
        if "machine" not in sys.modules:
            sys.modules["machine"] = machine_module()
        for name in FIRMWARE_MODULES:
            path = FIRMWARE_DIR / f"{name}.py"
            loaded = sys.modules.get(name)
            if loaded is not None:
                if Path(getattr(loaded, "__file__", "") or "").resolve() != path:
                    raise RuntimeError(f"simulator: a module named {name!r} is already loaded from {loaded.__file__}")
                continue
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        return sys.modules["bridge"]


# --------------------------------------------------------------------------- the simulator


class Simulator:
    """The firmware on a pty. Context manager; `close()` is idempotent.

    `port` is the path the host opens: `link` (a symlink kept pointing at the current pty) when
    given, else the pty's own /dev/pts/N.
    """

    def __init__(
        self,
        link: str | Path | None = None,
        *,
        lux: float = 200.0,
        sensor: str | None = "bh1750",
        battery_mv: int = 3900,
        lux_interval_ms: int = 200,
    ) -> None:
        self._fw = load_firmware()
        self.link = Path(link) if link is not None else None
        self.lux_interval_ms = lux_interval_ms
        self.i2c = I2C()
        self.sensor: SimBH1750 | SimVEML7700 | None = None
        if sensor == "bh1750":
            self.sensor = SimBH1750(lux)
            self.i2c.devices[0x23] = self.sensor
        elif sensor == "veml7700":
            self.sensor = SimVEML7700(lux)
            self.i2c.devices[0x10] = self.sensor
        elif sensor is not None:
            raise ValueError(f"sensor {sensor!r}: expected 'bh1750', 'veml7700' or None")
        self.button = Pin(15, Pin.IN, Pin.PULL_UP)
        self.adc = ADC(26)
        self.battery_mv = battery_mv
        self.pwm = PWM()
        self.firmware: Any = None
        self._fds: tuple[int, int] | None = None
        self.pty_name = ""
        self.boots = 0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> str:
        return str(self.link) if self.link is not None else self.pty_name

    @property
    def battery_mv(self) -> int:
        return round(self.adc.raw * 3300 * 2 / 65535)

    @battery_mv.setter
    def battery_mv(self, mv: int) -> None:
        self.adc.raw = max(0, min(65535, round(mv / 2 * 65535 / 3300)))

    def set_lux(self, lux: float) -> None:
        if self.sensor is not None:
            self.sensor.lux = lux

    def remove_sensor(self) -> None:
        """Take the lux sensor off the bus (a loose I²C wire)."""
        self.i2c.devices.clear()

    def press(self, hold_s: float = 0.1) -> None:
        """Press the MCU's button for `hold_s` seconds (blocks that long)."""
        self.button.value(0)
        time.sleep(hold_s)
        self.button.value(1)

    def start(self) -> Simulator:
        self.plug()
        self._thread = threading.Thread(target=self._run, name="bridge-simulator", daemon=True)
        self._thread.start()
        return self

    def plug(self) -> None:
        """A new pty (the link path follows it) and a fresh boot of the firmware."""
        with self._lock:
            if self._fds is not None:
                return
            master, slave = os.openpty()
            tty.setraw(slave)  # no echo or line editing before the host opens it
            self._fds = (master, slave)
            self.pty_name = os.ttyname(slave)
            if self.link is not None:
                tmp = self.link.with_name(self.link.name + ".new")
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                tmp.symlink_to(self.pty_name)
                os.replace(tmp, self.link)
            uart = PtyUart(master)
            self.firmware = self._fw.Bridge(
                uart, self.i2c, button=self.button, battery=self.adc,
                haptic=sys.modules["haptic"].Haptic(self.pwm), lux_interval_ms=self.lux_interval_ms,
            )
            self.boots += 1
            _LOGGER.info("simulator: firmware booted on %s (%s)", self.pty_name, self.port)

    def unplug(self) -> None:
        """Close the pty: the host's port fails as when the cable is pulled."""
        with self._lock:
            if self._fds is None:
                return
            self.firmware = None
            if self.link is not None:
                with contextlib.suppress(FileNotFoundError):
                    self.link.unlink()
            for fd in self._fds:
                os.close(fd)
            self._fds = None
            _LOGGER.info("simulator: unplugged %s", self.pty_name)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if self.firmware is not None:
                    self.firmware.poll()
            self._stop.wait(_POLL_S)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        self.unplug()

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_link() -> Path:
    return Path(tempfile.gettempdir()) / "glasses-bridge"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m firmware_bridge.simulator", description=__doc__.splitlines()[0])
    parser.add_argument("--link", type=Path, default=default_link(), help="symlink to the pty (default: %(default)s)")
    parser.add_argument("--lux", type=float, default=200.0, help="light level the sensor reports")
    parser.add_argument("--sensor", choices=("bh1750", "veml7700", "none"), default="bh1750")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Simulator(args.link, lux=args.lux, sensor=None if args.sensor == "none" else args.sensor).start() as sim:
        print(f"bridge simulator on {sim.port} -> {sim.pty_name}; Ctrl-C stops", flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
