"""`python -m edge run` — the wearer loop: press the button, hear the expression in front of you.

    python -m edge run                      # camera if present, else the demo face
    python -m edge run --demo               # demo face, Enter on the terminal is the button
    python -m edge run --demo --presses 1 --exit-after-presses   # one simulated press, then exit

Ctrl-C (SIGINT) or SIGTERM stops it; SIGHUP (`systemctl reload`) re-reads the configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from edge.cli_config import add_config_arguments, config_from_args

_LOGGER = logging.getLogger(__name__)

_POLL_S = 0.25
"""Longest the main thread sleeps between looks at what the signals asked for."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--demo", action="store_true", help="use the built-in demo face and fake hardware (terminal button)"
    )
    parser.add_argument(
        "--presses", type=_count, default=0, metavar="N",
        help="simulate N button presses once ready; the loop then keeps serving the button until Ctrl-C",
    )
    parser.add_argument(
        "--exit-after-presses", action="store_true",
        help="stop once the N simulated presses have been answered (a scripted run that ends by itself)",
    )


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


class _Requests:
    """What SIGINT/SIGTERM (stop) and SIGHUP (reload) asked for. The handlers only set these flags;
    the main thread acts on them, so a signal is never lost to a loop that is being replaced."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.wake = threading.Event()

    def install(self) -> Callable[[], None]:
        """Install the handlers; returns what puts the previous ones back."""
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        signal.signal(signal.SIGINT, lambda *_: self._set(self.stop))
        signal.signal(signal.SIGTERM, lambda *_: self._set(self.stop))
        signal.signal(signal.SIGHUP, lambda *_: self._set(self.reload))
        return lambda: [signal.signal(s, h) for s, h in previous.items()]

    def _set(self, flag: threading.Event) -> None:
        flag.set()
        self.wake.set()


def main(args: argparse.Namespace) -> int:
    """Run the loop until stopped. A reload opens the new pipeline and speech while the old loop still
    answers, and swaps only when they all opened; otherwise it logs one line and keeps the old ones."""
    from edge.app import open_core, open_devices
    from edge.service import Notifier

    extra = {"camera.source": "demo", "app.hw": "fake"} if args.demo else {}
    config = config_from_args(args, extra)
    notifier = Notifier()
    requests = _Requests()
    core = contextlib.ExitStack()
    parts = core.enter_context(open_core(config))
    restore = requests.install()
    try:
        presses = args.presses
        while not requests.stop.is_set():
            with open_devices(config, parts) as devices:
                new = _serve(config, devices, notifier, requests, presses, args.exit_after_presses,
                             lambda: _open_new(args, extra, notifier))
            if new is None:
                break
            core.close()
            config, parts, core = new
            presses = 0
    finally:
        core.close()
        restore()
    notifier.notify("STOPPING=1")
    _LOGGER.info("stopped")
    return 0


def _serve(config: Any, parts: Any, notifier: Any, requests: _Requests, presses: int, exit_after_presses: bool,
           open_new: Callable[[], tuple[Any, Any, contextlib.ExitStack] | None]) -> tuple | None:
    """Run one App on a thread until a stop (None) or a reload whose new parts opened (they are returned)."""
    from edge.app import App

    app = App(config, parts, notifier=notifier)
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            app.run(presses=presses, exit_after_presses=exit_after_presses)
        except BaseException as exc:  # noqa: BLE001 — re-raised on the main thread below
            errors.append(exc)
        finally:
            requests.wake.set()

    thread = threading.Thread(target=loop, name="wearer-loop", daemon=True)
    thread.start()
    new = None
    try:
        while thread.is_alive() and not requests.stop.is_set() and new is None:
            requests.wake.wait(_POLL_S)
            requests.wake.clear()
            if requests.reload.is_set() and not requests.stop.is_set():
                requests.reload.clear()
                new = open_new()
    finally:
        app.stop()
        thread.join()
    if new is not None and (errors or requests.stop.is_set()):
        new[2].close()  # a stop that came while the new parts opened wins over the reload
        new = None
    if errors:
        raise errors[0]
    return new


def _open_new(args: argparse.Namespace, extra: dict, notifier: Any) -> tuple[Any, Any, contextlib.ExitStack] | None:
    """The reloaded config with its pipeline and speech opened, or None (logged once) to keep the old."""
    from edge.app import open_core

    notifier.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
    stack = contextlib.ExitStack()
    try:
        config = config_from_args(args, extra)
        parts = stack.enter_context(open_core(config))
    except Exception as exc:  # noqa: BLE001 — whatever fails, the glasses keep the configuration they run
        stack.close()
        _LOGGER.error("reload: %s; keeping the running configuration", exc)
        notifier.notify("READY=1", f"STATUS=ready (reload failed: {exc})")
        return None
    _LOGGER.info("configuration reloaded")
    return config, parts, stack
