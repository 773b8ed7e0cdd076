"""The glasses' side of offload: the on-device pipeline first, the AI server as a better opinion.

`OffloadingPipeline.analyze` runs the local pipeline (which finds the faces and already has an
answer), crops each detected face with a margin, JPEG-encodes the crops (smaller and more private
than the frame; an image with no detected face is never sent) and posts them to `edge serve` in
parallel. Whatever has not arrived by the deadline — counted from the start of the call — is
dropped and the local answer is returned at once. Any failure (timeout, refused connection, bad
certificate or pin, rejected token, 429/5xx) opens a circuit breaker: for `cooldown_s` no request
is tried at all, then one is. The wearer is told once, "offload unavailable", and once more,
"offload back", when a request succeeds again (`take_notice`). Each request names the glasses' class
set (`?classes=7|5`, vision.classes), so the server answers in the labels the glasses speak; an answer
in any other labels is a failure, never spoken.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from edge.errors import OffloadError
from edge.results import FaceResult, FrameResult, labels_for
from edge.speech.phrases import Status

_LOGGER = logging.getLogger(__name__)

CROP_MARGIN = 0.25
"""Added on each side of the detected box, as a fraction of its size: the server's detector needs
some forehead, chin and background to find the face again."""
CROP_MAX_SIDE = 256
"""Crops are scaled down to this: more pixels do not help a 48-pixel expression model."""
JPEG_QUALITY = 90
TIMEOUT_BACKSTOP_S = 1.0
"""aiohttp's own timeout sits this far past the caller's deadline: the caller's wait ends the request
(a cancellation, silent), and aiohttp's timer only frees the connection if that were ever lost. With
both set to the deadline they raced, and each lost race logged a "Task exception was never
retrieved" traceback from the loop thread, holding the GIL just as the wearer's answer was due."""


def crop_jpeg(frame: np.ndarray, box: Sequence[int], margin: float = CROP_MARGIN, max_side: int = CROP_MAX_SIDE) -> bytes:
    """The face box plus margin, clipped to the frame, scaled to ≤ max_side, as JPEG bytes."""
    x, y, w, h = (int(v) for v in box)
    height, width = frame.shape[:2]
    dx, dy = int(w * margin), int(h * margin)
    x0, y0 = max(0, x - dx), max(0, y - dy)
    x1, y1 = min(width, x + w + dx), min(height, y + h + dy)
    crop = frame[y0:y1, x0:x1]
    if crop.size == 0:
        raise ValueError(f"face box {list(box)} lies outside the {width}×{height} frame")
    scale = max_side / max(crop.shape[:2])
    if scale < 1.0:
        crop = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding of the face crop failed")
    return encoded.tobytes()


class CircuitBreaker:
    """Closed: requests go. A failure opens it for `cooldown_s`; then one trial request may go."""

    def __init__(self, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown_s, self._clock = cooldown_s, clock
        self._opened_at: float | None = None

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def allow(self) -> bool:
        return self._opened_at is None or self._clock() - self._opened_at >= self.cooldown_s

    def success(self) -> None:
        self._opened_at = None

    def failure(self) -> None:
        self._opened_at = self._clock()


class OffloadClient:
    """POSTs JPEG crops to `edge serve` with aiohttp on a private event-loop thread (connections kept alive)."""

    def __init__(self, url: str, token: str, ssl: Any, max_parallel: int = 4, classes: int = 7) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self.url = url.rstrip("/") + "/v1/analyze"
        self.classes = classes
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="offload-client", daemon=True)
        self._thread.start()

        async def open_session() -> Any:
            connector = aiohttp.TCPConnector(ssl=ssl, limit=max_parallel)
            return aiohttp.ClientSession(connector=connector, headers={"Authorization": f"Bearer {token}"})

        self._session = asyncio.run_coroutine_threadsafe(open_session(), self._loop).result()
        self._closed = False

    def analyze(self, crops: Sequence[bytes], lowlight: bool, timeout_s: float) -> list[dict[str, Any]]:
        """The server's `analyze` JSON for each crop, all within `timeout_s`, or OffloadError."""
        future = asyncio.run_coroutine_threadsafe(self._analyze_all(crops, lowlight, timeout_s + TIMEOUT_BACKSTOP_S), self._loop)
        try:
            outcome = future.result(timeout_s)
        except TimeoutError:
            future.cancel()  # the request ends as cancelled in the loop: no error left behind to log
            raise OffloadError(f"no answer within {timeout_s * 1e3:.0f} ms") from None
        if isinstance(outcome, OffloadError):
            raise outcome
        return outcome

    async def _analyze_all(self, crops: Sequence[bytes], lowlight: bool, timeout_s: float) -> list[dict[str, Any]] | OffloadError:
        """The answers, or the failure as a value: a task never ends with an exception nobody reads."""
        try:
            return list(await asyncio.gather(*(self._post(crop, lowlight, timeout_s) for crop in crops)))
        except OffloadError as exc:
            return exc

    async def _post(self, body: bytes, lowlight: bool, timeout_s: float) -> dict[str, Any]:
        aiohttp = self._aiohttp
        try:
            async with self._session.post(
                self.url,
                data=body,
                params={"lowlight": "on" if lowlight else "off", "classes": str(self.classes)},
                headers={"Content-Type": "image/jpeg"},
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                allow_redirects=False,
            ) as response:
                if response.status != 200:
                    text = (await response.text())[:200]
                    raise OffloadError(f"server answered {response.status}: {text}")
                return await response.json()
        except aiohttp.ServerFingerprintMismatch:
            raise OffloadError("server certificate does not match offload.pin_sha256") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise OffloadError(f"server certificate not trusted ({exc.certificate_error})") from None
        except (aiohttp.ClientError, ValueError) as exc:
            raise OffloadError(f"{type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._session.close(), self._loop).result(2.0)
        except Exception:  # noqa: BLE001 — closing must not fail the shutdown
            _LOGGER.debug("offload session close failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=2.0)
        if not self._thread.is_alive():
            self._loop.close()


class OffloadingPipeline:
    """`analyze(frame, lowlight=…)` like the local Pipeline; the server's reading replaces the local one
    only when it arrives in time. Closes the client, not the local pipeline (its owner does)."""

    def __init__(
        self,
        local: Any,
        client: OffloadClient,
        *,
        deadline_s: float = 0.3,
        breaker: CircuitBreaker | None = None,
        classes: int = 7,
    ) -> None:
        self.local, self.client, self.deadline_s = local, client, deadline_s
        self.labels = labels_for(classes)
        """The labels the local pipeline answers in (vision.classes); a server answer must use them too."""
        self.breaker = breaker or CircuitBreaker(30.0)
        self._available = True
        self._notice: str | None = None
        self.offloaded = 0
        """Frames answered by the server (for logs and tests)."""

    @classmethod
    def from_config(cls, local: Any, offload: Any, classes: int = 7) -> "OffloadingPipeline":
        """From an OffloadConfig (url, bearer, deadline_ms, ca_file / pin, cooldown_s) and vision.classes."""
        from edge.offload.tls import client_ssl

        client = OffloadClient(offload.url, offload.bearer, client_ssl(offload.ca_file, offload.pin), classes=classes)
        _LOGGER.info("offload to %s (deadline %d ms, cool-down %.0f s)", offload.url, offload.deadline_ms, offload.cooldown_s)
        return cls(local, client, deadline_s=offload.deadline_ms / 1e3, breaker=CircuitBreaker(offload.cooldown_s), classes=classes)

    def analyze(self, frame: np.ndarray, lowlight: bool | None = False, **kwargs: Any) -> FrameResult:
        start = time.perf_counter()
        local: FrameResult = self.local.analyze(frame, lowlight=lowlight, **kwargs)
        detected = [i for i, face in enumerate(local.faces) if not face.fallback]
        if not detected or not self.breaker.allow() or kwargs.get("track"):
            return local  # continuous mode's ticks (track=True, every 0.5 s) stay on the glasses: presses go out
        remaining = self.deadline_s - (time.perf_counter() - start)
        if remaining <= 0.005:
            return local
        sent = time.perf_counter()
        try:
            crops = [crop_jpeg(frame, local.faces[i].box) for i in detected]
            answers = self.client.analyze(crops, local.lowlight, remaining - (time.perf_counter() - sent))
            faces = list(local.faces)
            for i, answer in zip(detected, answers):
                remote = _nearest(answer)
                if remote is not None:
                    faces[i] = _merge(faces[i], remote, self.labels)
        except (OffloadError, ValueError) as exc:
            self._failed(exc)
            return local
        except (KeyError, TypeError, IndexError) as exc:
            self._failed(OffloadError(f"malformed answer from the server ({type(exc).__name__}: {exc})"))
            return local
        self._succeeded()
        timings = dict(local.timings_ms, offload=(time.perf_counter() - sent) * 1e3)
        return dataclasses.replace(local, faces=tuple(faces), timings_ms=timings)

    def take_notice(self) -> str | None:
        """"offload unavailable" / "offload back" once per change; None otherwise."""
        notice, self._notice = self._notice, None
        return notice

    def _failed(self, exc: Exception) -> None:
        was_open = self.breaker.is_open
        self.breaker.failure()
        if was_open:
            _LOGGER.debug("offload still unavailable: %s", exc)
        else:
            _LOGGER.warning("offload failed (%s); on-device answers for %.0f s", exc, self.breaker.cooldown_s)
        if self._available:
            self._available = False
            self._notice = Status.OFFLOAD_UNAVAILABLE.value

    def _succeeded(self) -> None:
        self.breaker.success()
        self.offloaded += 1
        if not self._available:
            self._available = True
            _LOGGER.info("offload back")
            # Unavailable and back before the wearer was told: nothing to say.
            self._notice = None if self._notice == Status.OFFLOAD_UNAVAILABLE.value else Status.OFFLOAD_BACK.value

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "OffloadingPipeline":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _nearest(answer: dict[str, Any]) -> dict[str, Any] | None:
    """The largest detected face in the server's answer for one crop (the crop's own face)."""
    faces = [f for f in answer.get("faces", []) if not f.get("fallback")]
    return max(faces, key=lambda f: f["box"][2] * f["box"][3]) if faces else None


def _merge(local: FaceResult, remote: dict[str, Any], labels: tuple[str, ...]) -> FaceResult:
    """The server's reading of the face; where it is (box, position) stays the local one, in frame pixels."""
    if remote["label"] not in labels or not set(remote["scores"]) <= set(labels):
        raise ValueError(f"server answered label {remote['label']!r} with scores for {sorted(remote['scores'])}, not in the "
                         f"{len(labels)} classes the glasses use ({', '.join(labels)}); update the server")
    return dataclasses.replace(
        local,
        label=str(remote["label"]),
        confidence=float(remote["confidence"]),
        unsure=bool(remote["unsure"]),
        scores={str(k): float(v) for k, v in remote["scores"].items()},
    )
