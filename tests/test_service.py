"""The service side: sd_notify (READY, watchdog only while the loop turns, reload), the unit file
measured with systemd-analyze, the install script's plan, the udev rule."""

from __future__ import annotations

import argparse
import contextlib
import os
import pty
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import edge.app as app_module
import edge.cli_run as cli_run
from edge.app import App, Parts
from edge.config import Config, load_config
from edge.hw.camera import Camera
from edge.hw.light import open_light
from edge.results import FrameResult
from edge.service import Notifier
from tests.test_app import ConstantReader, FakeCache, FakePipeline, RecordingSink

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "glasses.service"
WAIT = 10.0
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd)"
)


class NotifySocket:
    """A datagram socket standing in for the service manager's $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except (TimeoutError, socket.timeout):
                return self.messages

    def wait_for(self, text: str, count: int = 1, timeout: float = WAIT) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(text in m for m in self.drain()) >= count:
                return True
        return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def manager(tmp_path):
    notify = NotifySocket(tmp_path / "notify")
    yield notify
    notify.close()


class QuietCache(FakeCache):
    stats = argparse.Namespace(disk_hits=0, misses=0, hits=0)


class HangingPipeline(FakePipeline):
    """Blocks in analyze() until released: a hung inference."""

    def __init__(self) -> None:
        super().__init__(FrameResult(faces=(), lowlight=False))
        self.release = threading.Event()
        self.entered = threading.Event()

    def analyze(self, image, lowlight=False, track=False):
        self.entered.set()
        self.release.wait(WAIT)
        return super().analyze(image, lowlight)


def fake_parts(config: Config, pipeline) -> Parts:
    lux, switch = open_light(config.light, real=False)
    return Parts(pipeline=pipeline, cache=QuietCache(), sink=RecordingSink(),
                 camera=Camera(config.camera, reader_factory=ConstantReader), lux=lux, switch=switch, earcon="<earcon>")


# --------------------------------------------------------------------------- sd_notify


def test_notifier_sends_datagrams_and_rate_limits_the_watchdog(manager):
    now = [100.0]
    notifier = Notifier({"NOTIFY_SOCKET": str(manager.path), "WATCHDOG_USEC": "2000000"}, clock=lambda: now[0])
    assert notifier.enabled and notifier.watchdog_s == 2.0
    assert notifier.notify("READY=1", "STATUS=ready")
    for _ in range(5):
        notifier.pet()  # same instant: one datagram
    now[0] += 1.0
    notifier.pet()
    assert manager.drain() == ["READY=1\nSTATUS=ready", "WATCHDOG=1", "WATCHDOG=1"]


def test_notifier_outside_systemd_does_nothing():
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_s is None
    assert notifier.notify("READY=1") is False
    notifier.pet()


def test_watchdog_is_for_another_pid_is_not_armed(manager):
    notifier = Notifier({"NOTIFY_SOCKET": str(manager.path), "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert notifier.watchdog_s is None


def test_loop_says_ready_and_feeds_the_watchdog_only_while_it_turns(manager):
    config = Config()
    pipeline = HangingPipeline()
    parts = fake_parts(config, pipeline)
    notifier = Notifier({"NOTIFY_SOCKET": str(manager.path), "WATCHDOG_USEC": "200000"})
    app = App(config, parts, backoff=(0.05, 0.2), notifier=notifier)
    thread = threading.Thread(target=app.run, daemon=True)
    thread.start()
    try:
        assert manager.wait_for("READY=1")
        assert manager.wait_for("WATCHDOG=1", count=3)
        app.press()
        assert pipeline.entered.wait(WAIT)  # the loop is now stuck in an analysis
        time.sleep(0.3)
        manager.drain()
        before = len(manager.messages)
        time.sleep(0.6)  # six watchdog half-periods with the loop stuck
        assert manager.drain()[before:] == []
        pipeline.release.set()
        assert manager.wait_for("WATCHDOG=1", count=manager.messages.count("WATCHDOG=1") + 1)
    finally:
        pipeline.release.set()
        app.stop()
        thread.join(WAIT)
        parts.camera.close()


def test_sighup_reloads_the_config_and_a_bad_reload_keeps_the_old_one(manager, monkeypatch, tmp_path):
    """`systemctl reload` path: RELOADING=1, parts reopened with the new file, READY=1 again; SIGTERM stops."""
    config_file = tmp_path / "config.toml"
    config_file.write_text('[speech]\nverbosity = "terse"\n')
    opened: list[Config] = []

    @contextlib.contextmanager
    def open_core(config):
        opened.append(config)
        yield fake_parts(config, FakePipeline(FrameResult(faces=(), lowlight=False)))

    monkeypatch.setattr(app_module, "open_core", open_core)
    monkeypatch.setenv("NOTIFY_SOCKET", str(manager.path))
    for name in ("GLASSES_SPEECH__VERBOSITY", "EDGE_HW"):
        monkeypatch.delenv(name, raising=False)
    previous = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}

    def operator() -> None:  # what systemctl does, from outside the loop
        assert manager.wait_for("READY=1")
        config_file.write_text('[speech]\nverbosity = "verbose"\n')
        os.kill(os.getpid(), signal.SIGHUP)
        assert manager.wait_for("READY=1", count=2)
        config_file.write_text('[speech]\nverbosty = "terse"\n')  # a typo: must not take the service down
        os.kill(os.getpid(), signal.SIGHUP)
        assert manager.wait_for("READY=1", count=3)  # the reload is over: the old configuration runs on
        os.kill(os.getpid(), signal.SIGTERM)

    helper = threading.Thread(target=operator, daemon=True)
    helper.start()
    args = argparse.Namespace(config=str(config_file), settings=[], demo=True, presses=0, exit_after_presses=False)
    try:
        assert cli_run.main(args) == 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    helper.join(WAIT)
    assert [c.speech.verbosity for c in opened] == ["terse", "verbose"]  # the typo opened nothing
    messages = manager.drain()
    assert sum("RELOADING=1" in m for m in messages) == 2
    assert messages[-1] == "STOPPING=1"


class Glasses:
    """`python -m edge run --demo` as its own process, as systemd or a person at a terminal runs it: the
    real pipeline, voice and loop, the null: sink, and a pty as the terminal whose Enter is the button."""

    def __init__(self, tmp_path: Path, config_file: Path, *args: str, terminal: bool = True, demo: bool = True) -> None:
        """args: more `edge run` arguments (e.g. --set camera.source=DIR with demo=False). `--debug` is on,
        so every phrase the wearer hears is logged as "say: …" (edge.app)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GLASSES_", "NOTIFY_SOCKET", "EDGE_HW"))}
        env.update(XDG_STATE_HOME=str(tmp_path / "state"), XDG_CACHE_HOME=str(tmp_path / "cache"))
        self._keys, stdin = pty.openpty() if terminal else (None, subprocess.DEVNULL)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge", "--debug", "run", *(["--demo"] if demo else []), "--config", str(config_file),
             "--set", "speech.sink=null:", *args],
            cwd=ROOT, env=env, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        if terminal:
            os.close(stdin)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def count(self, text: str) -> int:
        with self._cond:
            return sum(text in line for line in self.lines)

    def wait_for(self, text: str, count: int = 1, timeout: float = 60.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: sum(text in line for line in self.lines) >= count, timeout)

    def press(self) -> None:
        os.write(self._keys, b"\n")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT)
        self._reader.join(WAIT)
        if self._keys is not None:
            os.close(self._keys)

    def log(self) -> str:
        return "\n".join(self.lines)

    def heard(self) -> list[str]:
        """Every phrase the wearer heard so far, in order."""
        with self._cond:
            return [line.split("edge.app: say: ", 1)[1] for line in self.lines if "edge.app: say: " in line]


ANSWER = "INFO edge.app: frame "
"""The loop's log line for each answer it gives ("frame 3 (day, luma 94): looks calm")."""


def test_reloads_keep_answering_the_terminal_button_and_a_missing_model_keeps_the_old_parts(tmp_path):
    """#18 items 3, 9, 12 on the real loop: the ready line says how to press and quit; after a reload
    Enter still answers; a reload naming a missing model logs one line and the glasses keep answering."""
    config_file = tmp_path / "config.toml"
    config_file.write_text('[speech]\nverbosity = "terse"\n')
    glasses = Glasses(tmp_path, config_file)
    try:
        assert glasses.wait_for("ready: "), glasses.log()
        ready = [line for line in glasses.lines if "ready: " in line][0]
        assert "press Enter to read faces" in ready and "Ctrl-C to quit" in ready, ready
        glasses.press()
        assert glasses.wait_for(ANSWER), glasses.log()

        config_file.write_text('[speech]\nverbosity = "verbose"\n')
        glasses.signal(signal.SIGHUP)
        assert glasses.wait_for("configuration reloaded") and glasses.wait_for("ready: ", count=2), glasses.log()
        glasses.press()  # the first Enter after the reload: answered by the new loop, in the new verbosity
        assert glasses.wait_for(ANSWER, count=2), glasses.log()
        assert "o'clock" in [line for line in glasses.lines if ANSWER in line][-1]

        config_file.write_text(f'[vision]\nmodel = "{tmp_path / "missing.json"}"\n')
        glasses.signal(signal.SIGHUP)
        assert glasses.wait_for("keeping the running configuration"), glasses.log()
        glasses.press()
        assert glasses.wait_for(ANSWER, count=3), glasses.log()
        assert glasses.proc.poll() is None
        glasses.signal(signal.SIGTERM)
        assert glasses.proc.wait(WAIT) == 0
    finally:
        glasses.close()
    failed = [line for line in glasses.lines if "reload:" in line]
    assert len(failed) == 1 and "missing.json is missing" in failed[0], glasses.log()
    assert "error:" not in glasses.log()


# --------------------------------------------------------------------------- the unit, the script, the rule


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_has_the_contract_settings():
    s = unit_settings()
    assert s["Type"] == ["notify"] and s["Restart"] == ["always"]
    assert int(s["WatchdogSec"][0]) > 0 and int(s["StartLimitBurst"][0]) > 0
    assert set(s["SupplementaryGroups"][0].split()) == {"gpio", "video", "audio", "dialout", "i2c"}
    for key in ("ProtectSystem", "PrivateTmp", "NoNewPrivileges", "ProtectHome", "CapabilityBoundingSet",
                "SystemCallFilter", "StateDirectory", "CacheDirectory"):
        assert key in s, key
    assert s["ProtectSystem"] == ["strict"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    env = dict(item.split("=", 1) for item in s["Environment"][0].split())
    assert env["GLASSES_SPEECH__CACHE_DIR"].startswith("/var/cache/glasses")  # CacheDirectory=glasses
    assert env["GLASSES_APP__STATE_DIR"] == "/var/lib/glasses"  # StateDirectory=glasses
    assert load_config(env={k: v for k, v in env.items() if k.startswith("GLASSES_")}).app.state_dir == "/var/lib/glasses"


@needs_systemd_analyze
def test_unit_security_exposure_is_at_most_2():
    out = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", "--no-pager", str(UNIT)],
                         capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for glasses\.service: (\d+\.\d+)", out.stdout + out.stderr)
    assert match, out.stdout + out.stderr
    assert float(match.group(1)) <= 2.0


@needs_systemd_analyze
def test_unit_verifies_clean(tmp_path):
    """Rendered as install.sh renders it (PREFIX = this checkout, whose .venv exists), verify says nothing."""
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv in this checkout (make setup)")
    rendered = tmp_path / "glasses.service"
    rendered.write_text(UNIT.read_text().replace("/opt/glasses", str(ROOT)))
    out = subprocess.run([SYSTEMD_ANALYZE, "verify", str(rendered)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout + out.stderr == "", out.stdout + out.stderr


def test_install_script_plan_is_complete_and_uninstall_keeps_config():
    script = ROOT / "systemd" / "install.sh"
    env = dict(os.environ, PREFIX="/opt/glasses-test")
    plan = subprocess.run(["bash", str(script), "--dry-run"], capture_output=True, text=True, timeout=60, env=env)
    assert plan.returncode == 0, plan.stderr
    text = plan.stdout
    if subprocess.run(["id", "glasses"], capture_output=True).returncode != 0:
        assert "+ useradd --system" in text
    assert "usermod --append --groups gpio,video,audio,dialout,i2c glasses" in text
    assert "/opt/glasses-test/.venv/bin/python -m pip install" in text and "--no-deps" in text
    assert "s#/opt/glasses#/opt/glasses-test#g" in text
    assert "99-glasses-bridge.rules" in text and "systemctl enable glasses.service" in text
    removal = subprocess.run(["bash", str(script), "--dry-run", "--uninstall"], capture_output=True, text=True, timeout=60)
    assert "systemctl disable --now glasses.service" in removal.stdout and "rm -rf" not in removal.stdout
    purge = subprocess.run(["bash", str(script), "--dry-run", "--uninstall", "--purge"], capture_output=True, text=True,
                           timeout=60, env=env)
    assert "rm -rf /opt/glasses-test /etc/glasses /var/lib/glasses /var/cache/glasses" in purge.stdout
    bad = subprocess.run(["bash", str(script), "--dry-run", "--unisntall"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown option --unisntall" in bad.stderr


def test_service_config_and_udev_rule():
    config = load_config(ROOT / "systemd" / "config.toml", env={})
    assert config.app.hw == "real"
    rules = [line for line in (ROOT / "systemd" / "99-glasses-bridge.rules").read_text().splitlines()
             if line and not line.startswith("#")]
    assert rules and all('SYMLINK+="glasses-bridge"' in r and 'GROUP="dialout"' in r for r in rules)
    assert any('ATTRS{idVendor}=="2e8a"' in r for r in rules)
