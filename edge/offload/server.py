"""The AI-server side of offload: `POST /v1/analyze` runs the one pipeline, `GET /healthz` says it is up.

aiohttp serves HTTPS; every request to the API needs a per-device bearer token (stored hashed, see
tokens.py, re-read when the file changes) and passes, in order: token (401) → per-token rate
limit (429) → body size (413) → image header check — format and pixel count read from the
PNG/JPEG header *before* anything is decoded, so a decompression bomb or a huge blank image costs a
few kilobytes (400) → a turn at an inference worker → the same JSON as `python -m edge analyze
--json` (without "path").

A pipeline is not thread-safe, so each inference worker thread owns one (`--workers N` loads N).
Requests beyond the workers wait in one line per device, and a freed worker goes to the waiting
device served longest ago (FairTurns), so one device's backlog delays another's request by at
most the requests already running. A device with `max_per_device` requests in flight gets 429, a
queue deeper than `max_queue` 503, at once, instead of making every device late; a request that
runs out of time while waiting is dropped from its line unrun.

`?classes=7|5` picks the class set of the answer's labels and scores (edge.results.CLASS_SETS): the
glasses send their vision.classes, so one server answers glasses of either setting in their own words.
`?speech=1` adds what the glasses would say — the phrase from edge.speech.phrases.describe and its
WAV, composed on a separate speech thread from the phrase cache warmed before the server listens —
for clients without a voice of their own. Bodies are read into memory and dropped after the
answer: nothing is written to disk. The access log is one JSON line per request with no image data
and no token; a request aiohttp cannot parse is one warning line without its content.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import itertools
import json
import logging
import math
import queue
import signal
import ssl
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from edge import images
from edge.errors import AudioError, ImageError, ModelError
from edge.config import LightConfig
from edge.hw.light import LOWLIGHT
from edge.results import CLASS_SETS, FrameResult, too_dark
from edge.offload.limits import Limits, RateLimiter
from edge.offload.tokens import TokenStore

_LOGGER = logging.getLogger(__name__)
ACCESS_LOGGER = logging.getLogger("edge.offload.access")
HTTP_LOGGER = logging.getLogger("edge.offload.http")
"""aiohttp's own connection-level messages (requests it cannot parse), through _NoRequestContent."""

SPEECH = {"0": False, "false": False, "no": False, "1": True, "true": True, "yes": True}
VERBOSITY = ("terse", "verbose")
ALLOWED_FORMATS = ("JPEG", "PNG")
TOO_LARGE_FIX = "send the face crop (the glasses send ≤256 px) or a smaller frame"
DEVICE = web.RequestKey("device", str)
"""The token's device name, set on the request by the guard."""


class Analyzer:
    """The pipelines, one per inference worker thread, and the optional voice on its own thread.

    `speech` is a warmed-or-warming edge.speech.tts.PhraseCache (the wearer loop's own cache class),
    or None when the server runs without a voice. `light` (the config file's [light], as the pipelines
    got it) holds the thresholds of the one too-dark rule (edge.results.too_dark), so an image with no
    face is "too dark" or "no face" as on the glasses."""

    def __init__(self, pipelines: Sequence[Any], speech: Any = None, light: LightConfig | None = None) -> None:
        if not pipelines:
            raise ValueError("Analyzer needs at least one pipeline")
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for pipeline in pipelines:
            self._idle.put(pipeline)
        self.workers = len(pipelines)
        self.executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="inference")
        self.speech = speech
        self.light = light if light is not None else LightConfig()
        self.speech_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="speech") if speech is not None else None
        self.turns = FairTurns(self.workers)
        self.pending = 0

    def run(self, data: bytes, lowlight: bool | None, classes: int | None = None) -> FrameResult:
        """Decode and analyse on an inference thread; as many run at once as there are pipelines."""
        frame = images.decode(data, "body")
        pipeline = self._idle.get()
        try:
            return pipeline.analyze(frame, lowlight=lowlight, classes=classes)
        finally:
            self._idle.put(pipeline)

    async def analyze(self, device: str, data: bytes, lowlight: bool | None, classes: int | None = None) -> FrameResult:
        """`run` on a worker when `device`'s turn comes. Cancelled while waiting, it never runs; cancelled
        while running, the worker finishes it and only then is handed on (so `workers` bounds the work)."""
        await self.turns.acquire(device)
        work = asyncio.get_running_loop().run_in_executor(self.executor, self.run, data, lowlight, classes)
        work.add_done_callback(self._finished)
        return await asyncio.shield(work)

    def _finished(self, work: asyncio.Future[FrameResult]) -> None:
        self.turns.release()
        if not work.cancelled() and work.exception() is not None:  # read here, so an abandoned request's error is not logged as unretrieved
            _LOGGER.debug("inference ended with %s", type(work.exception()).__name__)

    def warm_speech(self, phrases: Sequence[str]) -> None:
        """Synthesise every phrase now, before the server listens: once /healthz answers, no `?speech=1`
        request waits for synthesis (warming on the speech thread meanwhile made the first one ~0.6 s)."""
        if self.speech is None:
            return
        try:
            self.speech.warm(phrases)
        except AudioError as exc:
            _LOGGER.error("speech cache warm-up failed (%s); ?speech=1 answers synthesise each phrase when first asked", exc)

    def say(self, result: FrameResult, verbosity: str) -> dict[str, Any]:
        """What the glasses would say for `result`, and its audio as base64 WAV (speech thread)."""
        from edge.speech.phrases import describe

        dark = too_dark(result, self.light.too_dark_luma, self.light.too_noisy)
        text = describe(result, verbosity, too_dark=dark)  # type: ignore[arg-type]
        clip = self.speech.compose(text)
        return {
            "text": text,
            "format": "audio/wav",
            "sample_rate": clip.sample_rate,
            "duration_s": round(clip.duration_s, 3),
            "wav_base64": base64.b64encode(clip.to_wav_bytes()).decode("ascii"),
        }

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        if self.speech_executor is not None:
            self.speech_executor.shutdown(wait=True, cancel_futures=True)


class FairTurns:
    """`slots` worker turns, handed out fairly between devices: each device's requests wait in their
    own line, and a freed worker goes to the waiting device served longest ago, not to the oldest
    request. Used on the event loop thread only."""

    def __init__(self, slots: int) -> None:
        self.free = slots
        self._lines: dict[str, collections.deque[asyncio.Future[None]]] = {}
        self._served: dict[str, int] = {}  # device → when it last got a turn (one per token: bounded)
        self._turns = itertools.count()

    async def acquire(self, key: str) -> None:
        if self.free > 0 and not self._lines:
            self.free -= 1
            self._served[key] = next(self._turns)
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lines.setdefault(key, collections.deque()).append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # given the turn just as it was cancelled: pass it on
            elif turn in self._lines.get(key, ()):
                self._lines[key].remove(turn)
                if not self._lines[key]:
                    del self._lines[key]
            raise

    def release(self) -> None:
        while self._lines:
            key = min(self._lines, key=lambda k: self._served.get(k, -1))
            line = self._lines[key]
            turn = line.popleft()
            if not line:
                del self._lines[key]
            if not turn.done():
                self._served[key] = next(self._turns)
                turn.set_result(None)
                return
        self.free += 1


class _NoRequestContent(logging.Filter):
    """aiohttp logs a request it cannot parse (a header over its 8 KB limit, bytes that are not HTTP)
    with a traceback quoting the offending line — an `Authorization` header, token and all — so any
    client could fill the log with it. One line instead (a warning at most): who, the status, the kind of error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "%s: refused with %s %s (request content not logged)", (record.getMessage(), exc.code, type(exc).__name__)
            record.exc_info, record.exc_text = None, None
            if record.levelno > logging.WARNING:  # aiohttp's debug-level ones (TLS sent to a plain port) stay debug
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


HTTP_LOGGER.addFilter(_NoRequestContent())


class JsonAccessLogger(AbstractAccessLogger):
    """One JSON line per request: who, what, status, sizes, time. Never the body or the token."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s",
            json.dumps(
                {
                    "remote": request.remote,
                    "device": request.get(DEVICE, "-"),
                    "method": request.method,
                    "path": request.path,
                    "status": response.status,
                    "bytes_in": request.content_length,
                    "bytes_out": response.body_length,
                    "ms": round(time * 1e3, 1),
                }
            ),
        )


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def make_app(analyzer: Analyzer, tokens: TokenStore, limits: Limits = Limits()) -> web.Application:
    limiter = RateLimiter(limits.rate_per_s, limits.burst)
    in_flight: collections.Counter[str] = collections.Counter()

    @web.middleware
    async def guard(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        if request.path == "/healthz":
            return await handler(request)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        device = tokens.check(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if device is None:
            return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="edge"'})
        request[DEVICE] = device
        wait = limiter.take(device)
        if wait > 0:
            return _error(429, f"rate limit: {limits.rate_per_s:g} requests/s per device", {"Retry-After": str(math.ceil(wait))})
        return await handler(request)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "queue": analyzer.pending, "workers": analyzer.workers, "speech": analyzer.speech is not None})

    async def analyze(request: web.Request) -> web.Response:
        lowlight_text = request.query.get("lowlight", "auto")
        if lowlight_text not in LOWLIGHT:
            return _error(400, f"lowlight={lowlight_text!r}: use auto, on or off")
        speech_text = request.query.get("speech", "0").lower()
        if speech_text not in SPEECH:
            return _error(400, f"speech={speech_text!r}: use 1 (add the phrase and its WAV audio) or 0")
        classes_text = request.query.get("classes", "7")
        if classes_text not in map(str, CLASS_SETS):
            return _error(400, f"classes={classes_text!r}: use {' or '.join(map(str, CLASS_SETS))} (the glasses' vision.classes)")
        verbosity = request.query.get("verbosity", "terse")
        if verbosity not in VERBOSITY:
            return _error(400, f"verbosity={verbosity!r}: use terse or verbose")
        if SPEECH[speech_text] and analyzer.speech_executor is None:
            return _error(400, "speech=1: this server runs without a voice (started with --no-speech)")
        if request.content_length is not None and request.content_length > limits.max_body_bytes:
            return _error(413, f"body of {request.content_length} bytes is over the {limits.max_body_bytes} byte limit")
        device = request[DEVICE]
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(limits.timeout_s):
                data = await request.read()
                images.check_header(data, "body", limits.max_pixels, ALLOWED_FORMATS, fix=TOO_LARGE_FIX)
                if in_flight[device] >= limits.max_per_device:
                    return _error(429, f"this device already has {limits.max_per_device} requests in flight; wait for their answers", {"Retry-After": "1"})
                if analyzer.pending >= limits.max_queue:
                    return _error(503, "busy: too many requests queued for inference; try again", {"Retry-After": "1"})
                analyzer.pending += 1
                in_flight[device] += 1
                try:
                    result = await analyzer.analyze(device, data, LOWLIGHT[lowlight_text], int(classes_text))
                finally:
                    analyzer.pending -= 1
                    in_flight[device] -= 1
                    if not in_flight[device]:
                        del in_flight[device]
                answer = result.to_json()
                if SPEECH[speech_text]:
                    answer["speech"] = await loop.run_in_executor(analyzer.speech_executor, analyzer.say, result, verbosity)
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body is over the {limits.max_body_bytes} byte limit")
        except TimeoutError:
            return _error(503, f"no answer within {limits.timeout_s:g} s", {"Retry-After": "1"})
        except ImageError as exc:
            return _error(400, str(exc))
        except ModelError as exc:  # a class set this server's model has no "not sure" threshold for
            return _error(400, f"classes={classes_text}: {exc}")
        return web.json_response(answer)

    app = web.Application(middlewares=[guard], client_max_size=limits.max_body_bytes)
    app.router.add_post("/v1/analyze", analyze)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(
    app: web.Application,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    ready: Callable[[int], None] | None = None,
    idle_timeout_s: float = Limits.idle_timeout_s,
) -> None:
    """Serve until SIGINT/SIGTERM. `ready(port)` is called once listening (port 0 picks a free one).

    The listening socket is made here rather than by aiohttp's TCPSite, which has no TLS handshake
    timeout: asyncio's default of 60 s held connections that never start TLS twice as long as the
    `idle_timeout_s` every other unfinished request gets."""
    runner = web.AppRunner(
        app,
        access_log_class=JsonAccessLogger,
        access_log=ACCESS_LOGGER,
        logger=HTTP_LOGGER,
        handle_signals=False,
        handler_cancellation=True,
        keepalive_timeout=idle_timeout_s,
    )
    await runner.setup()
    assert runner.server is not None
    listener = None
    try:
        loop = asyncio.get_running_loop()
        handshake = {"ssl_handshake_timeout": idle_timeout_s} if ssl_context is not None else {}
        listener = await loop.create_server(runner.server, host, port, ssl=ssl_context, **handshake)
        bound = listener.sockets[0].getsockname()[1]
        _LOGGER.info("serving on %s://%s:%d", "https" if ssl_context else "http", host, bound)
        if ready is not None:
            ready(bound)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        _LOGGER.info("stopping")
    finally:
        if listener is not None:
            listener.close()
        await runner.cleanup()
