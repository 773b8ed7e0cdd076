"""Firmware bridge: the frames, the firmware under the simulator over a real pty, the host link, the app.

Everything talks over real ptys (os.openpty) or pyserial's loop://; nothing needs the board.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import tty
import types

import pytest

from edge.app import App, Parts
from edge.config import BridgeConfig, Config, LightConfig, load_config
from edge.errors import ConfigError, EdgeError, HardwareError
from edge.hw.bridge import PART, Bridge
from edge.hw.button import ButtonEvent
from edge.hw.camera import Camera
from edge.hw.light import BridgeLightSensor, open_light
from edge.results import FrameResult
from firmware_bridge.firmware import wire
from firmware_bridge.link import BridgeLink, LinkError
from firmware_bridge.protocol import Parser, frame
from firmware_bridge.simulator import Simulator, ticks_add, ticks_diff

from tests.test_app import ConstantReader, FakeCache, FakePipeline, RecordingSink

WAIT = 10.0  # generous waits on conditions; nothing here asserts on timing
FAST = dict(timeout_s=1.5, stale_s=0.6, lux_interval_ms=100)


def wait_until(predicate, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


class Recorder:
    """Collects what the bridge hands to the app: button events and part status."""

    def __init__(self) -> None:
        self.buttons: list[ButtonEvent] = []
        self.status: list[tuple[str, bool, str]] = []

    def emit(self, event: ButtonEvent) -> None:
        self.buttons.append(event)

    def on_status(self, part: str, up: bool, detail: str) -> None:
        self.status.append((part, up, detail))


# --------------------------------------------------------------------------- frames


@pytest.mark.parametrize(
    "kind, values",
    [
        (wire.HELLO, (wire.CAP_LUX | wire.CAP_HAPTIC, wire.SENSOR_VEML7700, b"1.0.0")),
        (wire.LUX, (123.5,)),
        (wire.BUTTON, (wire.BUTTON_HOLD,)),
        (wire.BATTERY, (3871,)),
        (wire.HEARTBEAT, (4_000_000_000,)),
        (wire.ACK, (17, wire.ACK_UNSUPPORTED)),
        (wire.PING, (0xDEADBEEF,)),
        (wire.SET_RATE, (250,)),
        (wire.HELLO_REQ, ()),
    ],
)
def test_every_message_round_trips(kind, values):
    data = frame(kind, 200, *values)
    assert data[0] == 0 and data[-1] == 0 and 0 not in data[1:-1]
    (message,) = Parser().feed(data)
    assert (message.kind, message.seq, message.values) == (kind, 200, values)


def test_payload_with_zero_bytes_survives_cobs():
    payload = bytes(range(0, 48))  # zeros and every low byte value
    (decoded,) = wire.Decoder().feed(wire.encode(wire.LUX, 0, payload))
    assert decoded == (wire.LUX, 0, payload)


def test_a_flipped_bit_is_dropped_and_counted_as_crc():
    data = bytearray(frame(wire.LUX, 1, 42.0))
    data[5] ^= 0x04
    parser = Parser()
    assert parser.feed(bytes(data)) == []
    assert parser.errors["crc"] + parser.errors["cobs"] == 1


def test_receiver_resyncs_after_garbage_and_a_cut_frame():
    good = frame(wire.LUX, 9, 7.0)
    cut = frame(wire.BATTERY, 3, 3700)[:5]
    parser = Parser()
    messages = parser.feed(b"\xff\x13garbage" + cut + good + b"\x01\x02" + good)
    assert [(m.kind, m.values) for m in messages] == [(wire.LUX, (7.0,)), (wire.LUX, (7.0,))]
    assert sum(parser.errors.values()) >= 1


def test_endless_garbage_is_bounded_and_recovery_follows():
    decoder = wire.Decoder()
    assert decoder.feed(b"\x55" * 10_000) == []
    assert len(decoder._buf) <= wire.MAX_ENCODED
    assert decoder.feed(wire.pack(wire.BUTTON, 1, wire.BUTTON_TAP)) == [(wire.BUTTON, 1, b"\x01")]
    assert decoder.errors["overflow"] == 1


def test_other_protocol_version_is_named():
    body = bytes((wire.PROTOCOL_VERSION + 1, wire.LUX, 0)) + struct.pack("<f", 1.0)
    body += struct.pack("<I", wire._crc32(body))
    parser = Parser()
    assert parser.feed(b"\x00" + wire.cobs_encode(body) + b"\x00") == []
    assert parser.other_version == wire.PROTOCOL_VERSION + 1


def test_wrong_payload_length_is_a_layout_error():
    parser = Parser()
    assert parser.feed(wire.encode(wire.LUX, 0, b"\x01\x02")) == []
    assert parser.errors["layout"] == 1


def test_bitwise_crc_fallback_matches_binascii(monkeypatch):
    data = bytes(range(256)) * 3
    expected = wire._crc32(data)
    monkeypatch.setattr(wire, "crc32", None)  # a MicroPython build without binascii.crc32
    assert wire._crc32(data) == expected


def test_ticks_wrap_like_micropython():
    near_end = (1 << 30) - 10
    later = ticks_add(near_end, 25)
    assert later == 15
    assert ticks_diff(later, near_end) == 25
    assert ticks_diff(near_end, later) == -25


# --------------------------------------------------------------------------- firmware on a real pty


@pytest.fixture
def sim(tmp_path):
    with Simulator(tmp_path / "ttyBRIDGE", lux=150.0, lux_interval_ms=100).start() as simulator:
        yield simulator


def test_simulator_over_pty_lux_button_haptic_and_replug(sim):
    """The bar: readings and events arrive, commands are acknowledged, and an unplug heals by itself."""
    messages = []
    states: list[bool] = []
    with BridgeLink(sim.port, timeout_s=1.5, backoff=(0.05, 0.4),
                    on_message=messages.append, on_state=lambda up, _: states.append(up)) as link:
        assert link.wait_connected(WAIT)
        caps, sensor, version = link.hello.values
        assert caps == wire.CAP_LUX | wire.CAP_BUTTON | wire.CAP_BATTERY | wire.CAP_HAPTIC
        assert (sensor, version) == (wire.SENSOR_BH1750, b"1.0.0")

        sim.set_lux(42.0)
        assert wait_until(lambda: any(m.kind == wire.LUX and abs(m.values[0] - 42.0) < 1.0 for m in messages))
        assert wait_until(lambda: any(m.kind == wire.BATTERY for m in messages))
        battery = next(m.values[0] for m in messages if m.kind == wire.BATTERY)
        assert abs(battery - 3900) < 5

        sim.press(0.1)
        assert wait_until(lambda: [m.values for m in messages if m.kind == wire.BUTTON] == [(wire.BUTTON_TAP,)])
        sim.press(1.3)
        assert wait_until(lambda: (wire.BUTTON_HOLD,) in [m.values for m in messages if m.kind == wire.BUTTON])
        assert [m.values for m in messages if m.kind == wire.BUTTON].count((wire.BUTTON_TAP,)) == 1

        assert link.command(wire.HAPTIC, wire.HAPTIC_DOUBLE, timeout=WAIT) == wire.ACK_OK
        assert wait_until(lambda: [d for _, d in sim.pwm.changes] == [52000, 0, 52000, 0])
        assert link.command(wire.HAPTIC, 99, timeout=WAIT) == wire.ACK_BAD_PAYLOAD
        assert link.command(wire.SET_RATE, 1000, timeout=WAIT) == wire.ACK_OK
        assert link.ping(timeout=WAIT) < WAIT

        sim.unplug()
        assert wait_until(lambda: not link.connected.is_set())
        assert "lost" in link.error or "no such port" in link.error
        time.sleep(0.5)  # a few failed reopen attempts while the cable is out
        assert "no such port" in link.error
        sim.set_lux(7.0)
        sim.plug()
        assert link.wait_connected(WAIT)
        assert link.connects == 2 and sim.boots == 2
        count = len(messages)
        assert wait_until(lambda: any(m.kind == wire.LUX and abs(m.values[0] - 7.0) < 1.0 for m in messages[count:]))
    assert states[:3] == [True, False, True]


def test_veml7700_driver_reads_through_the_simulated_registers(tmp_path):
    with Simulator(tmp_path / "tty", sensor="veml7700", lux=800.0, lux_interval_ms=100).start() as sim:
        messages = []
        with BridgeLink(sim.port, on_message=messages.append) as link:
            assert link.wait_connected(WAIT)
            assert link.hello.values[1] == wire.SENSOR_VEML7700
            assert wait_until(lambda: any(m.kind == wire.LUX for m in messages))
            lux = next(m.values[0] for m in messages if m.kind == wire.LUX)
            assert abs(lux - 800.0) < 0.1


def test_board_without_haptic_says_so_in_the_ack(tmp_path):
    with Simulator(tmp_path / "tty").start() as sim:
        with BridgeLink(sim.port) as link:
            assert link.wait_connected(WAIT)
            sim.firmware.haptic = None
            assert link.command(wire.HAPTIC, wire.HAPTIC_TAP, timeout=WAIT) == wire.ACK_UNSUPPORTED


# --------------------------------------------------------------------------- bad lines and ports


def test_unplugged_port_names_the_problem_and_the_fix(tmp_path, caplog):
    states = []
    caplog.set_level(logging.WARNING, logger="firmware_bridge.link")
    with BridgeLink(str(tmp_path / "ttyNONE"), backoff=(0.05, 0.2), on_state=lambda up, d: states.append((up, d))) as link:
        assert wait_until(lambda: states)
        assert not link.connected.is_set()
    assert states[0][0] is False
    assert "no such port" in states[0][1] and "/dev/ttyACM0" in states[0][1]
    assert "no such port" in caplog.text


def test_garbage_on_the_line_gets_a_baudrate_hint_and_counts_as_down():
    master, slave = os.openpty()
    tty.setraw(slave)
    stop = threading.Event()

    def noise() -> None:  # a line at the wrong speed: bytes, never a frame
        while not stop.is_set():
            os.write(master, bytes([0x55, 0xAA, 0x00, 0xF3, 0x81, 0x07, 0x42] * 4))
            stop.wait(0.02)
            try:
                os.read(master, 4096)  # keep the host's writes from filling the pty
            except BlockingIOError:
                pass

    os.set_blocking(master, False)
    writer = threading.Thread(target=noise, daemon=True)
    writer.start()
    states = []
    try:
        with BridgeLink(os.ttyname(slave), timeout_s=1.5, backoff=(0.05, 0.2),
                        on_state=lambda up, d: states.append((up, d))) as link:
            assert wait_until(lambda: states)
            assert not link.connected.is_set()
            assert sum(link.parser.errors.values()) > 0
    finally:
        stop.set()
        writer.join(2.0)
        os.close(master)
        os.close(slave)
    up, detail = states[0]
    assert up is False and "no valid frame" in detail and "bridge.baudrate (115200)" in detail


def test_loop_url_opens_and_echoed_requests_do_not_count_as_an_mcu():
    with BridgeLink("loop://", timeout_s=1.5) as link:
        time.sleep(1.2)
        assert link.parser.frames >= 1  # our own HELLO request came back through the loop
        assert not link.connected.is_set()


def test_bad_url_scheme_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown URL scheme 'lop'"):
        load_config(env={}, overrides={"bridge.port": "lop://"})
    with pytest.raises(ConfigError, match="needs bridge.port"):
        load_config(env={}, overrides={"light.source": "serial"})
    config = load_config(env={}, overrides={"light.source": "serial", "bridge.port": "/dev/ttyAMA0"})
    assert config.bridge.port == "/dev/ttyAMA0" and config.light.source == "serial"


# --------------------------------------------------------------------------- the app's view


def test_bridge_reports_fresh_lux_button_and_a_stale_sensor(sim):
    recorder = Recorder()
    with Bridge(BridgeConfig(port=sim.port, **FAST), backoff=(0.05, 0.4)).start() as bridge:
        bridge.attach(recorder.emit, recorder.on_status)
        assert wait_until(lambda: bridge.lux() is not None)
        assert abs(bridge.lux() - 150.0) < 1.0
        assert wait_until(lambda: bridge.battery_mv is not None)

        sim.press(0.1)
        assert wait_until(lambda: recorder.buttons == [ButtonEvent.PRESS])

        sim.remove_sensor()  # a loose I²C wire
        assert wait_until(lambda: (PART, False) in [(p, up) for p, up, _ in recorder.status])
        assert bridge.lux() is None
        detail = next(d for p, up, d in recorder.status if not up)
        assert "I²C" in detail

        light = BridgeLightSensor(bridge)
        light.observe(255.0)
        assert light.read() == pytest.approx(1000.0) and light.used_frame

        sim.i2c.devices[0x23] = sim.sensor  # wire back on: the firmware finds it again
        assert wait_until(lambda: recorder.status[-1][:2] == (PART, True))
        assert light.read() == pytest.approx(150.0, abs=1.0) and not light.used_frame
    assert [up for _, up, _ in recorder.status] == [False, True]


def test_unplugged_bridge_goes_stale_then_heals(sim):
    recorder = Recorder()
    with Bridge(BridgeConfig(port=sim.port, **FAST), backoff=(0.05, 0.4)).start() as bridge:
        bridge.attach(recorder.emit, recorder.on_status)
        assert wait_until(lambda: bridge.lux() is not None)
        sim.unplug()
        assert wait_until(lambda: recorder.status and recorder.status[-1][1] is False)
        assert "no such port" in recorder.status[-1][2] or "lost" in recorder.status[-1][2]
        sim.plug()
        assert wait_until(lambda: recorder.status[-1][:2] == (PART, True))
        assert bridge.lux() is not None


def test_switch_uses_sensor_thresholds_then_frame_thresholds_when_stale():
    class StubBridge:
        port = "stub"
        value: float | None = 5.0

        def lux(self):
            return self.value

    bridge = StubBridge()
    source, switch = open_light(LightConfig(source="serial", min_dwell_s=0.0), real=False, bridge=bridge)
    source.observe(200.0)  # a bright frame
    assert switch.update(source.read()) is True  # 5 lux from the sensor: night
    bridge.value = None  # stale: the bright frame decides, with the frame's thresholds
    assert switch.update(source.read()) is False
    bridge.value = 30.0
    assert switch.update(source.read()) is False  # sensor above day_lux: day


class QuietCache(FakeCache):
    """FakeCache plus the counters the loop logs once every phrase is warm."""

    stats = types.SimpleNamespace(disk_hits=0, misses=0, hits=0)


def test_wearer_loop_mcu_button_describes_and_buzzes(sim):
    """The MCU's button reaches the loop through the one queue, and the taken press buzzes the motor."""
    config = Config(bridge=BridgeConfig(port=sim.port, **FAST), light=LightConfig(source="serial"))
    pipeline = FakePipeline(FrameResult(faces=(), lowlight=False))
    sink = RecordingSink()
    camera = Camera(config.camera, reader_factory=ConstantReader)
    with Bridge(config.bridge, backoff=(0.05, 0.4)).start() as bridge:
        lux, switch = open_light(config.light, real=False, bridge=bridge)
        parts = Parts(pipeline=pipeline, cache=QuietCache(), sink=sink, camera=camera, lux=lux, switch=switch,
                      earcon="<earcon>", bridge=bridge)
        app = App(config, parts, backoff=(0.05, 0.2), status_grace_s=0.0)
        thread = threading.Thread(target=app.run, daemon=True)
        thread.start()
        try:
            assert wait_until(lambda: bridge.lux() is not None)
            assert wait_until(lambda: "ready" in sink.played)
            sim.press(0.1)
            assert pipeline.wait_calls(1)
            assert wait_until(lambda: [d for _, d in sim.pwm.changes][:2] == [52000, 0])
            sim.remove_sensor()
            assert sink.wait_said("light sensor lost")
        finally:
            app.stop()
            thread.join(WAIT)
            camera.close()
    assert app.presses_done == 1


def test_a_link_that_is_down_raises_its_own_error_and_the_glasses_link_hardware_error(tmp_path):
    """firmware_bridge imports nothing from edge (tests/test_imports.py), yet the app and `edge doctor`
    still catch the link's failures as edge's HardwareError."""
    with BridgeLink(str(tmp_path / "ttyNONE"), backoff=(0.05, 0.2)) as link:
        with pytest.raises(LinkError, match="not connected") as raised:
            link.send(wire.PING, 1)
    assert not isinstance(raised.value, EdgeError)
    with Bridge(BridgeConfig(port=str(tmp_path / "ttyNONE"), **FAST), backoff=(0.05, 0.2)).start() as bridge:
        with pytest.raises(HardwareError, match="not connected"):
            bridge.link.ping(timeout=0.1)
        assert bridge.haptic() is False
