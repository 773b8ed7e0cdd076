"""Camera sources, newest-frame grabbing, button gestures (gpiozero MockFactory), day/night switch."""

from __future__ import annotations

import io
import os
import queue
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from edge.config import ButtonConfig, CameraConfig, LightConfig
from edge.errors import CameraError, HardwareError
from edge.hw import light as light_module
from edge.hw.button import ButtonEvent, GpioButton, TerminalButton
from edge.hw.camera import Camera, ImageFolderReader, open_reader
from edge.hw.light import (
    DayNightSwitch,
    FrameBrightness,
    ldr_value_to_lux,
    luma_to_lux,
    open_light,
)
from edge.vision.enhance import brightness as mean_luma

from .conftest import StepClock

WAIT = 10.0  # generous: these are waits on events, not timing assertions


def write_video(path: Path, n: int, size=(64, 48)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, size)
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((size[1], size[0], 3), 20 + 40 * i, np.uint8))
    writer.release()
    return path


def drain_until_error(camera: Camera) -> list[int]:
    """Indices of the frames seen until the source reports itself gone."""
    seen: list[int] = []
    while True:
        try:
            seen.append(camera.latest(timeout=WAIT, newer_than=seen[-1] if seen else -1).index)
        except CameraError as exc:
            assert "ended" in str(exc)
            return seen


# ---------------------------------------------------------------- camera


def test_video_file_source_delivers_frames_then_camera_error(tmp_path):
    path = write_video(tmp_path / "clip.avi", 5)
    with Camera(CameraConfig(source=str(path), fps=200.0)) as camera:
        first = camera.latest(timeout=WAIT)
        assert first.image.shape == (48, 64, 3)
        seen = drain_until_error(camera)
        assert camera.failed.wait(WAIT)
        assert 1 <= len(seen) <= 5 and seen == sorted(seen) and max(seen) <= 4


def test_video_file_loops_when_asked(tmp_path):
    path = write_video(tmp_path / "clip.avi", 3)
    with Camera(CameraConfig(source=str(path), fps=200.0, loop=True)) as camera:
        assert camera.latest(timeout=WAIT, newer_than=10).index > 10  # more frames than the file has
        assert not camera.failed.is_set()


def test_reopen_after_the_source_ended(tmp_path):
    path = write_video(tmp_path / "clip.avi", 2)
    camera = Camera(CameraConfig(source=str(path), fps=200.0))
    camera.open()
    before = drain_until_error(camera)
    camera.open()
    again = camera.latest(timeout=WAIT)
    assert again.index > max(before)  # indices keep counting across reopens
    assert not camera.failed.is_set()
    camera.close()
    camera.close()  # idempotent


def test_image_folder_in_name_order_then_ends(tmp_path):
    for name, value in (("b.png", 200), ("a.png", 100), ("c.jpg", 50)):
        cv2.imwrite(str(tmp_path / name), np.full((30, 40, 3), value, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    reader = ImageFolderReader(tmp_path, loop=False)
    values = [int(reader.read().mean().round()) for _ in range(3)]
    assert values[:2] == [100, 200] and abs(values[2] - 50) <= 2
    with pytest.raises(CameraError, match="ended"):
        reader.read()
    with Camera(CameraConfig(source=str(tmp_path), fps=200.0)) as camera:
        assert camera.latest(timeout=WAIT).image.shape == (30, 40, 3)
        drain_until_error(camera)


def test_image_folder_skips_a_file_that_does_not_decode_with_one_warning(tmp_path, caplog):
    """a_real, b_fake, c_real: b is skipped (warned once, however often the folder loops), c is reached."""
    cv2.imwrite(str(tmp_path / "a_real.jpg"), np.full((30, 40, 3), 60, np.uint8))
    (tmp_path / "b_fake.jpg").write_bytes(b"not a jpeg at all")
    cv2.imwrite(str(tmp_path / "c_real.jpg"), np.full((30, 40, 3), 180, np.uint8))
    reader = ImageFolderReader(tmp_path, loop=True)
    with caplog.at_level("WARNING", logger="edge.hw.camera"):
        values = [int(reader.read().mean().round()) for _ in range(6)]
        reopened = ImageFolderReader(tmp_path, loop=False)  # a folder that ends is reopened by the supervisor
        values += [int(reopened.read().mean().round()) for _ in range(2)]
    assert [abs(v - 60) <= 2 for v in values] == [True, False] * 4  # a, c, a, c, …: never stuck on b
    assert [abs(v - 180) <= 2 for v in values] == [False, True] * 4
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "b_fake.jpg" in warnings[0], warnings
    with Camera(CameraConfig(source=str(tmp_path), fps=200.0, loop=True)) as camera:
        assert camera.latest(timeout=WAIT, newer_than=5).index > 5  # it went round several times
        assert not camera.failed.is_set()
    (tmp_path / "a_real.jpg").write_bytes(b"")
    (tmp_path / "c_real.jpg").write_bytes(b"broken")
    with pytest.raises(CameraError, match="no file in it decodes"):
        ImageFolderReader(tmp_path, loop=True).read()


def test_bad_sources_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CameraError, match="no images"):
        open_reader(CameraConfig(source=str(tmp_path / "empty")))
    with pytest.raises(CameraError, match="no such file or folder"):
        open_reader(CameraConfig(source=str(tmp_path / "missing.mp4")))


def test_demo_source_frames_have_configured_size_and_differ():
    with Camera(CameraConfig(source="demo", width=320, height=240, fps=100.0)) as camera:
        a = camera.latest(timeout=WAIT)
        b = camera.latest(timeout=WAIT, newer_than=a.index)
    assert a.image.shape == b.image.shape == (240, 320, 3)
    assert b.index > a.index and b.t_ns > a.t_ns
    assert not np.array_equal(a.image, b.image)
    assert 60 < mean_luma(a.image) < 140  # a real photo, not a blank frame


def test_auto_without_a_device_uses_the_demo(monkeypatch):
    from edge.hw import camera as camera_module

    monkeypatch.setattr(camera_module, "video_devices", lambda: [])
    with Camera(CameraConfig(source="auto", width=160, height=120, fps=100.0)) as camera:
        assert camera.description.startswith("demo face")
        assert camera.latest(timeout=WAIT).image.shape == (120, 160, 3)


class CountingReader:
    """Produces numbered frames, then blocks once `limit` frames are out (until closed)."""

    description, paced = "counting", True

    def __init__(self, limit: int) -> None:
        self.limit, self.count = limit, 0
        self.reached = threading.Event()
        self.released = threading.Event()

    def read(self) -> np.ndarray:
        if self.count >= self.limit:
            self.reached.set()
            self.released.wait(WAIT)
            raise CameraError("counting: closed")
        self.count += 1
        return np.full((4, 4, 3), self.count, np.uint8)

    def close(self) -> None:
        self.released.set()


def test_latest_is_the_newest_frame_not_a_queue():
    reader = CountingReader(limit=25)
    with Camera(CameraConfig(), reader_factory=lambda: reader) as camera:
        assert reader.reached.wait(WAIT)
        frame = camera.latest(timeout=WAIT)
        assert frame.index == 24  # the 25th frame, not the first one still waiting in a queue
        assert frame.image[0, 0, 0] == 25
        assert camera.latest(timeout=WAIT).index == 24  # no older frames left behind it


# ---------------------------------------------------------------- button


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def factory():
    factory = MockFactory()
    yield factory
    factory.reset()


def tap(pin, clock: FakeClock, at: float) -> None:
    clock.t = at
    pin.drive_low()
    clock.t = at + 0.08
    pin.drive_high()


def get_events(events: queue.Queue, n: int) -> list[ButtonEvent]:
    return [events.get(timeout=WAIT) for _ in range(n)]


def test_tap_double_tap_and_slow_taps(factory):
    events: queue.Queue[ButtonEvent] = queue.Queue()
    clock = FakeClock()
    config = ButtonConfig(pin="GPIO17", hold_time=5.0, double_press_window=0.4)
    with GpioButton(config, events.put, pin_factory=factory, clock=clock):
        pin = factory.pin(17)
        tap(pin, clock, 100.0)
        assert get_events(events, 1) == [ButtonEvent.PRESS]
        tap(pin, clock, 100.3)  # within 0.4 s of the first release
        assert get_events(events, 1) == [ButtonEvent.REPEAT]
        tap(pin, clock, 101.0)
        tap(pin, clock, 102.0)  # 0.92 s after the previous release: a new tap
        assert get_events(events, 2) == [ButtonEvent.PRESS, ButtonEvent.PRESS]
    assert events.empty()


def test_hold_toggles_continuous_and_is_not_a_tap(factory):
    events: queue.Queue[ButtonEvent] = queue.Queue()
    clock = FakeClock()
    with GpioButton(ButtonConfig(hold_time=0.1), events.put, pin_factory=factory, clock=clock):
        pin = factory.pin(17)
        pin.drive_low()
        assert events.get(timeout=WAIT) is ButtonEvent.CONTINUOUS
        pin.drive_high()
        tap(pin, clock, 100.2)  # right after the hold: still a plain press, not a double
        assert events.get(timeout=WAIT) is ButtonEvent.PRESS
    assert events.empty()


def test_button_close_is_idempotent_and_bad_pin_is_hardware_error(factory):
    button = GpioButton(ButtonConfig(), lambda e: None, pin_factory=factory)
    button.close()
    button.close()
    with pytest.raises(HardwareError, match="button.pin GPIO999"):
        GpioButton(ButtonConfig(pin="GPIO999"), lambda e: None, pin_factory=factory)


def test_terminal_button_keys():
    events: queue.Queue[ButtonEvent] = queue.Queue()
    with TerminalButton(events.put, io.StringIO("\nr\nC\nwhat\nq\n")):
        assert get_events(events, 4) == [
            ButtonEvent.PRESS,
            ButtonEvent.REPEAT,
            ButtonEvent.CONTINUOUS,
            ButtonEvent.QUIT,
        ]


def test_a_terminal_button_reopened_on_the_same_stream_gets_every_line():
    """A reload closes the terminal button and opens another on stdin: the next Enter goes to the new one."""
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd) as stream, os.fdopen(write_fd, "w") as typed:
        old: queue.Queue[ButtonEvent] = queue.Queue()
        with TerminalButton(old.put, stream):
            typed.write("\n")
            typed.flush()
            assert get_events(old, 1) == [ButtonEvent.PRESS]
        typed.write("r\n")  # typed between the close and the next open: kept for the next button
        typed.flush()
        new: queue.Queue[ButtonEvent] = queue.Queue()
        with TerminalButton(new.put, stream):
            typed.write("\n")
            typed.flush()
            assert get_events(new, 2) == [ButtonEvent.REPEAT, ButtonEvent.PRESS]
        assert old.empty()


# ---------------------------------------------------------------- light


def changes(switch: DayNightSwitch, readings) -> int:
    modes = [switch.update(lux) for lux in readings]
    return sum(a != b for a, b in zip(modes, modes[1:]))


def test_switch_does_not_flap_on_noise_around_a_threshold():
    rng = np.random.default_rng(1)
    noisy = 10.0 + rng.uniform(-4.0, 4.0, size=300)  # straddles night_lux=10, never reaches day_lux
    naive = np.sum(np.diff((noisy < 10.0).astype(int)) != 0)
    assert naive > 50  # a single threshold would flip constantly on this signal
    switch = DayNightSwitch(night_lux=10.0, day_lux=25.0, min_dwell_s=5.0, clock=StepClock(0.5))
    assert changes(switch, noisy) <= 1


def test_dwell_limits_flapping_even_when_noise_crosses_both_thresholds():
    rng = np.random.default_rng(2)
    wild = 17.5 + rng.uniform(-12.0, 12.0, size=400)  # crosses 10 and 25 often
    switch = DayNightSwitch(night_lux=10.0, day_lux=25.0, min_dwell_s=5.0, clock=StepClock(0.1))
    assert changes(switch, wild) <= 400 * 0.1 / 5.0 + 1


def test_switch_follows_a_real_step_after_dwell():
    clock = StepClock(1.0)
    switch = DayNightSwitch(night_lux=10.0, day_lux=25.0, min_dwell_s=5.0, clock=clock)
    assert [switch.update(300.0) for _ in range(8)] == [False] * 8
    assert switch.update(2.0) is True  # dark room: switches at once, the dwell has passed
    assert switch.update(None) is True  # no reading keeps the mode
    assert [switch.update(300.0) for _ in range(5)] == [True, True, True, True, False]


def test_first_reading_decides_directly():
    assert DayNightSwitch(10.0, 25.0, 60.0, clock=StepClock(0.0)).update(1.0) is True
    assert DayNightSwitch(10.0, 25.0, 60.0, clock=StepClock(0.0)).update(15.0) is False


def test_lux_mappings_are_monotonic():
    lumas = [0, 20, 50, 70, 128, 255]
    assert [luma_to_lux(v) for v in lumas] == sorted(luma_to_lux(v) for v in lumas)
    assert luma_to_lux(255) == pytest.approx(1000.0)
    values = [0.0, 0.3, 0.6, 0.9, 0.99]
    lux = [ldr_value_to_lux(v) for v in values]
    assert lux == sorted(lux) and lux[0] == pytest.approx(1.0) and lux[-1] > 500


def test_frame_brightness_source_and_thresholds():
    source, switch = open_light(LightConfig(source="frame"), real=False, clock=StepClock(1.0))
    assert isinstance(source, FrameBrightness)
    assert source.read() is None
    source.observe(mean_luma(np.full((8, 8, 3), 30, np.uint8)))
    assert switch.update(source.read()) is True  # luma 30 < frame_night_luma 50
    assert switch.night_lux == pytest.approx(luma_to_lux(50.0))
    assert switch.day_lux == pytest.approx(luma_to_lux(70.0))


def test_gpio_light_sensor_that_fails_falls_back_to_frame(monkeypatch):
    def broken(pin, **kwargs):
        raise HardwareError(f"light.pin {pin}: cannot open the light sensor: no GPIO")

    monkeypatch.setattr(light_module, "GpioLightSensor", broken)
    source, _ = open_light(LightConfig(source="gpio"), real=True)
    assert isinstance(source, FrameBrightness)
