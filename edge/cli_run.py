"""`python -m edge run` — the wearer loop: press the button, hear the expression in front of you.

    python -m edge run                      # camera if present, else the demo face
    python -m edge run --demo               # demo face, Enter on the terminal is the button
    python -m edge run --demo --presses 1 --exit-after-presses   # one simulated press, then exit
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time

from edge.cli_config import add_config_arguments, config_from_args

_LOGGER = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--demo", action="store_true", help="use the built-in demo face and fake hardware (terminal button)"
    )
    parser.add_argument(
        "--presses", type=_count, default=0, metavar="N", help="simulate N button presses once ready"
    )
    parser.add_argument(
        "--exit-after-presses", action="store_true", help="stop once the simulated presses have been answered"
    )


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def main(args: argparse.Namespace) -> int:
    """Run the loop; SIGTERM/SIGINT stop it, SIGHUP (systemctl reload) re-reads the config and restarts it.

    A config that fails to load on reload is logged and the running one is kept.
    """
    from edge.app import App, open_parts
    from edge.errors import ConfigError
    from edge.service import Notifier

    extra = {"camera.source": "demo", "app.hw": "fake"} if args.demo else {}
    config = config_from_args(args, extra)
    notifier = Notifier()
    presses = args.presses
    while True:
        reload = threading.Event()
        with open_parts(config) as parts:
            app = App(config, parts, notifier=notifier)
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, lambda *_: app.stop())
            signal.signal(signal.SIGHUP, lambda *_: (reload.set(), app.stop()))
            app.run(presses=presses, exit_after_presses=args.exit_after_presses)
        if not reload.is_set():
            break
        notifier.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        presses = 0
        try:
            config = config_from_args(args, extra)
            _LOGGER.info("configuration reloaded")
        except ConfigError as exc:
            _LOGGER.error("reload: %s; keeping the running configuration", exc)
    notifier.notify("STOPPING=1")
    _LOGGER.info("stopped")
    return 0
