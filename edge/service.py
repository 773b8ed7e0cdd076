"""systemd integration: READY=1, WATCHDOG=1, RELOADING=1, STOPPING=1 and STATUS= over $NOTIFY_SOCKET.

The protocol is one datagram on a Unix socket, so this is a dozen lines rather than a dependency.
Outside systemd (no NOTIFY_SOCKET) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

_LOGGER = logging.getLogger(__name__)


class Notifier:
    """Talks to the service manager; `pet()` feeds the watchdog at most twice per WatchdogSec."""

    def __init__(self, env: Mapping[str, str] | None = None, *, clock=time.monotonic) -> None:
        env = os.environ if env is None else env
        self._address = env.get("NOTIFY_SOCKET", "")
        if self._address.startswith("@"):
            self._address = "\0" + self._address[1:]
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watched = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        self.watchdog_s = int(usec) / 1e6 if watched else None
        """WatchdogSec= as the manager told us, or None when no watchdog is armed for this process."""
        self._clock = clock
        self._last_pet = float("-inf")

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, *fields: str) -> bool:
        if not self._address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            _LOGGER.warning("cannot notify the service manager at %s: %s", self._address.lstrip("\0"), exc)
            return False
        return True

    def pet(self) -> None:
        """Feed the watchdog; call it from the loop only while the loop is healthy."""
        if self.watchdog_s is None:
            return
        now = self._clock()
        if now - self._last_pet >= self.watchdog_s / 2:
            self._last_pet = now
            self.notify("WATCHDOG=1")
