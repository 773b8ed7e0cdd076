"""What one offload request may cost the server, and the per-token rate limit (no aiohttp import here,
so `python -m edge --help` stays fast)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one request may cost the server."""

    max_body_bytes: int = 2 * 1024 * 1024
    """Larger bodies are refused with 413 (a 640×480 JPEG frame is ~50 KB, a face crop ~10 KB)."""
    max_pixels: int = 640 * 480
    """Width × height from the image header above this is refused with 400 before decoding. The
    glasses send face crops of at most 256 px; anything far bigger is refused, not decoded. The work
    grows with it: an all-black 640×480 image (low-light branch) costs ~60 ms alone (up to ~230 ms
    on a busy 2-core machine) and ~20 MB; the 16 MP allowed before cost 2.5 s and ~900 MB, and one
    device sending those starved the rest."""
    max_per_device: int = 8
    """Requests one token may have queued or running at once; more get 429 (a press sends one
    per face, at most 4 at a time), so no device fills the shared queue."""
    rate_per_s: float = 20.0
    """Sustained requests per second per token (token bucket)."""
    burst: int = 40
    """Requests a token may make at once before the rate applies."""
    timeout_s: float = 5.0
    """Longest a request may take, body upload and queueing included (then 503)."""
    max_queue: int = 32
    """Requests waiting for the inference worker beyond this are refused with 503."""
    idle_timeout_s: float = 30.0
    """A connection that has not sent a whole request header within this is closed: the same timer
    ends idle keep-alive connections (the glasses reuse theirs between presses) and clients that
    trickle headers; aiohttp's own default is an hour."""


class RateLimiter:
    """One token bucket per device name."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate_per_s, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """0 when a request may go now, else the seconds until one may."""
        now = self._clock()
        level, last = self._buckets.get(key, (float(self.burst), now))
        level = min(float(self.burst), level + (now - last) * self.rate)
        if level >= 1.0:
            self._buckets[key] = (level - 1.0, now)
            return 0.0
        self._buckets[key] = (level, now)
        return (1.0 - level) / self.rate
