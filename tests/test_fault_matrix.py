"""The fault matrix (issue #18): the real glasses process and the real offload server, each under one
fault at a time, checked from outside for what the wearer hears and that the process keeps going.

Loop rows run `python -m edge --debug run` (tests.test_service.Glasses: a pty is the terminal whose
Enter is the button; every phrase the wearer hears is logged as "say: …"). Server rows run
`python -m edge serve` on 127.0.0.1 (tests.test_offload.Server). Each row ends with the process still
answering: a press gets an answer about a face, a normal crop gets 200.
"""

from __future__ import annotations

import os
import pty
import signal
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from firmware_bridge.simulator import Simulator
from tests.test_offload import Server, jpeg, request
from tests.test_service import ANSWER, WAIT, Glasses

FACE_WORDS = ("looks ", "not sure")
"""An answer about a face (terse verbosity): an expression, or "not sure"."""
SAID_WITHIN = 30.0


def answered(glasses: Glasses, count: int) -> bool:
    """Press, then wait for the loop's `count`-th answer; True when it was about a face."""
    glasses.press()
    if not glasses.wait_for(ANSWER, count=count, timeout=SAID_WITHIN):
        return False
    last = [line for line in glasses.lines if ANSWER in line][count - 1]
    return any(word in last for word in FACE_WORDS)


def wait_heard(glasses: Glasses, phrase: str, timeout: float = SAID_WITHIN) -> bool:
    return glasses.wait_for(f"edge.app: say: {phrase}", timeout=timeout)


@pytest.fixture
def frames(tmp_path, grace_hopper) -> Path:
    """A folder of camera frames: her portrait three times."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        cv2.imwrite(str(folder / name), grace_hopper)
    return folder


def start(tmp_path: Path, config: str = "", *args: str, camera: Path | None = None) -> Glasses:
    config_file = tmp_path / "config.toml"
    config_file.write_text('[speech]\nverbosity = "terse"\n' + config)
    extra = [*args, "--set", f"camera.source={camera}", "--set", "camera.loop=true"] if camera else list(args)
    glasses = Glasses(tmp_path, config_file, *extra, demo=camera is None)
    assert glasses.wait_for("ready: "), glasses.log()
    assert answered(glasses, 1), glasses.log()
    return glasses


def still_running(glasses: Glasses, answers: int) -> None:
    """The process is alive, a press is still answered about a face, and SIGTERM ends it cleanly."""
    assert glasses.proc.poll() is None, glasses.log()
    assert answered(glasses, answers), glasses.log()
    glasses.signal(signal.SIGTERM)
    assert glasses.proc.wait(WAIT) == 0, glasses.log()
    assert "Traceback" not in glasses.log()


# --------------------------------------------------------------------------- the wearer loop


def test_camera_gone_then_back(tmp_path, frames):
    glasses = start(tmp_path, camera=frames)
    try:
        hidden = tmp_path / "hidden"
        frames.rename(hidden)  # the camera is unplugged
        assert wait_heard(glasses, "camera lost"), glasses.log()
        hidden.rename(frames)
        assert wait_heard(glasses, "camera back"), glasses.log()
        still_running(glasses, 2)
    finally:
        glasses.close()
    assert glasses.heard().count("camera lost") == 1 and glasses.heard().count("camera back") == 1


def test_a_frame_file_that_does_not_decode_is_skipped(tmp_path, frames):
    (frames / "b.jpg").write_bytes(b"not a jpeg at all")
    glasses = start(tmp_path, camera=frames)
    try:
        time.sleep(1.0)  # the folder goes round a few times at camera.fps
        still_running(glasses, 2)
    finally:
        glasses.close()
    assert "camera lost" not in glasses.heard()
    assert sum("b.jpg" in line for line in glasses.lines if "WARNING" in line) == 1, glasses.log()


@pytest.mark.parametrize("bad, logged", [
    ("[speech\nverbosity = 'verbose'\n", "keeping the running configuration"),  # not TOML
    ("[speech]\nverbositty = 'verbose'\n", "keeping the running configuration"),  # an unknown key
    ("[vision]\nmodel = '/nonexistent/model.json'\n", "keeping the running configuration"),  # a missing model
])
def test_a_reload_that_cannot_be_applied_keeps_the_glasses_answering(tmp_path, bad, logged):
    glasses = start(tmp_path)
    try:
        (tmp_path / "config.toml").write_text(bad)
        glasses.signal(signal.SIGHUP)
        assert glasses.wait_for(logged), glasses.log()
        still_running(glasses, 2)
    finally:
        glasses.close()
    assert sum(logged in line for line in glasses.lines) == 1
    assert not any(phrase.startswith(("something went wrong", "error")) for phrase in glasses.heard())


def test_a_stop_right_after_a_reload_is_not_lost(tmp_path):
    """`kill -HUP; sleep 0.05; kill -TERM` ends the process (it used to run on)."""
    glasses = start(tmp_path)
    try:
        glasses.signal(signal.SIGHUP)
        time.sleep(0.05)
        glasses.signal(signal.SIGTERM)
        assert glasses.proc.wait(20.0) == 0, glasses.log()
    finally:
        glasses.close()


class FrozenServer:
    """A TCP server on 127.0.0.1 that accepts connections and never answers (a hung offload box)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                continue

    def close(self) -> None:
        self._stop.set()
        for conn in self.held:
            conn.close()
        self.sock.close()


FROZEN_DEADLINE_MS = 2000
"""The press's offload deadline is counted from the frame, and the glasses skip the server when the
on-device pass has used it up: at the default 300 ms a loaded 2-core machine sometimes did, and the
row then never met the frozen server. 2 s leaves room to try it on any machine."""


def test_a_frozen_offload_server_costs_the_deadline_not_the_answer(tmp_path):
    frozen = FrozenServer()
    token = tmp_path / "token"
    token.write_text("x" * 43)
    token.chmod(0o600)
    config = (f'[offload]\nenabled = true\nurl = "http://127.0.0.1:{frozen.port}"\nallow_http = true\n'
              f'token_file = "{token}"\ndeadline_ms = {FROZEN_DEADLINE_MS}\n')
    try:
        glasses = start(tmp_path, config)
        try:
            assert frozen.held, "the glasses never tried the server"
            still_running(glasses, 2)
        finally:
            glasses.close()
    finally:
        frozen.close()
    heard = glasses.heard()
    assert heard.count("offload unavailable") == 1, heard
    assert all(p.startswith(FACE_WORDS) or p in ("ready", "offload unavailable") for p in heard), heard


def test_bridge_unplugged_then_back(tmp_path):
    """The MCU's cable pulled (or its firmware killed) and put back: the link says so in the log and
    heals by itself; the wearer only hears answers."""
    with Simulator(tmp_path / "ttyBRIDGE", lux=300.0, lux_interval_ms=100).start() as sim:
        glasses = start(tmp_path, f'[bridge]\nport = "{sim.port}"\ntimeout_s = 1.5\n')
        try:
            assert glasses.wait_for("firmware_bridge.link: bridge on"), glasses.log()
            sim.unplug()
            assert glasses.wait_for(": lost ("), glasses.log()
            assert answered(glasses, 2), glasses.log()
            sim.plug()
            assert glasses.wait_for(": up (", count=2), glasses.log()
            still_running(glasses, 3)
        finally:
            glasses.close()
    assert all(p.startswith(FACE_WORDS) or p == "ready" for p in glasses.heard()), glasses.heard()


def test_garbage_on_the_serial_line(tmp_path):
    """A pty whose far end sends noise (wrong baud rate, another device): named once, never fatal."""
    master, slave = pty.openpty()
    link = tmp_path / "ttyNOISE"
    link.symlink_to(os.ttyname(slave))
    stop = threading.Event()

    def noise() -> None:
        rng = np.random.default_rng(0)
        while not stop.is_set():
            try:
                os.write(master, rng.integers(0, 256, 256, dtype=np.uint8).tobytes())
            except OSError:
                pass
            stop.wait(0.05)

    writer = threading.Thread(target=noise, daemon=True)
    writer.start()
    try:
        glasses = start(tmp_path, f'[bridge]\nport = "{link}"\ntimeout_s = 1.5\n')
        try:
            time.sleep(3.0)
            still_running(glasses, 2)
        finally:
            glasses.close()
    finally:
        stop.set()
        writer.join(WAIT)
        os.close(master), os.close(slave)
    assert any("baud" in line for line in glasses.lines), glasses.log()


# --------------------------------------------------------------------------- the offload server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from edge.offload.tokens import TokenStore

    folder = tmp_path_factory.mktemp("matrix-server")
    store = TokenStore(folder / "offload_tokens")
    tokens = {name: store.add(name) for name in ("anna", "ben")}
    serving = Server("--insecure-http", "--host", "127.0.0.1", "--port", "0", "--tokens", str(store.path), "--no-speech")
    try:
        serving.wait_ready()
        yield serving, tokens, store
    finally:
        serving.stop()


def _png(shape: tuple[int, int]) -> bytes:
    return cv2.imencode(".png", np.zeros((*shape, 3), np.uint8))[1].tobytes()


@pytest.mark.parametrize("fault, body, status", [
    ("a huge blank image", lambda: _png((4000, 3999)), 400),
    ("a decompression bomb", lambda: _png((16000, 16000)), None),  # refused at the header or at the size limit
    ("bytes that are no image", lambda: b"\x00garbage" * 1000, 400),
    ("an empty body", lambda: b"", 400),
    ("a body over the size limit", lambda: b"\xff" * (3 << 20), 413),
])
def test_the_server_refuses_bad_bodies_and_keeps_serving(server, grace_hopper, fault, body, status):
    serving, tokens, _ = server
    got, _ = request(serving.port, "POST", "/v1/analyze", body(), token=tokens["anna"])
    assert (got == status) if status is not None else (400 <= got < 500), (fault, got)
    ok, answer = request(serving.port, "POST", "/v1/analyze", jpeg(grace_hopper[100:400, 120:420]), token=tokens["ben"])
    assert ok == 200 and answer["faces"], fault
    assert serving.proc.poll() is None


def test_an_oversized_authorization_header_is_one_line_without_its_content(server, grace_hopper):
    serving, tokens, _ = server
    secret = "s3cret-" * 2000
    with socket.create_connection(("127.0.0.1", serving.port), timeout=WAIT) as conn:
        conn.sendall(f"POST /v1/analyze HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\r\nContent-Length: 0\r\n\r\n".encode())
        assert conn.recv(100).split(b" ")[1] == b"400"
    time.sleep(0.5)
    assert not any("s3cret" in line for line in serving.lines)
    ok, _ = request(serving.port, "POST", "/v1/analyze", jpeg(grace_hopper[100:400, 120:420]), token=tokens["ben"])
    assert ok == 200 and serving.proc.poll() is None


def test_a_removed_token_is_refused_at_once_and_a_new_one_works(server, grace_hopper):
    serving, tokens, store = server
    crop = jpeg(grace_hopper[100:400, 120:420])
    assert request(serving.port, "POST", "/v1/analyze", crop, token=tokens["anna"])[0] == 200
    store.remove("anna")
    assert request(serving.port, "POST", "/v1/analyze", crop, token=tokens["anna"])[0] == 401
    carl = store.add("carl")
    assert request(serving.port, "POST", "/v1/analyze", crop, token=carl)[0] == 200
    assert serving.proc.poll() is None
