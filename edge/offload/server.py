"""The AI-server side of offload: `POST /v1/analyze` runs the one pipeline, `GET /healthz` says it is up.

aiohttp serves HTTPS; every request to the API needs a per-device bearer token (stored hashed, see
tokens.py) and passes, in order: token (401) → per-token rate limit (429) → body size (413) → image
header check — format and pixel count read from the PNG/JPEG header *before* anything is decoded,
so a decompression bomb costs a few kilobytes (400) → one inference worker → the same JSON as
`python -m edge analyze --json` (without "path").

The pipeline is not thread-safe, so ONE worker thread owns it and inference is serialised; a queue
deeper than `max_queue` is answered 503 at once instead of making every device late. Bodies are
read into memory and dropped after the answer: nothing is written to disk. The access log is one
JSON line per request with no image data and no token.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import signal
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from edge import images
from edge.errors import ImageError
from edge.offload.limits import Limits, RateLimiter
from edge.offload.tokens import TokenStore

_LOGGER = logging.getLogger(__name__)
ACCESS_LOGGER = logging.getLogger("edge.offload.access")

LOWLIGHT = {"auto": None, "on": True, "off": False}
ALLOWED_FORMATS = ("JPEG", "PNG")


def check_header(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """(format, width, height) from the image header only; ImageError for anything not a sane JPEG/PNG."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageError("empty body: send the JPEG or PNG bytes as the request body")
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
            fmt, (width, height) = image.format, image.size
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image refused: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ImageError("body is not a JPEG or PNG image") from None
    if width * height > max_pixels:
        raise ImageError(f"{fmt} {width}×{height} is over the {max_pixels:,} pixel limit: send a face crop or a ≤640×480 frame")
    return fmt, width, height


class Analyzer:
    """The pipeline on its single worker thread (it is not thread-safe, so inference is serialised)."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.pending = 0

    def run(self, data: bytes, lowlight: bool | None) -> dict[str, Any]:
        frame = images.decode(data, "body")
        return self.pipeline.analyze(frame, lowlight=lowlight).to_json()

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


class JsonAccessLogger(AbstractAccessLogger):
    """One JSON line per request: who, what, status, sizes, time. Never the body or the token."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s",
            json.dumps(
                {
                    "remote": request.remote,
                    "device": request.get("device", "-"),
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

    @web.middleware
    async def guard(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        if request.path == "/healthz":
            return await handler(request)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        device = tokens.check(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if device is None:
            return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="edge"'})
        request["device"] = device
        wait = limiter.take(device)
        if wait > 0:
            return _error(429, f"rate limit: {limits.rate_per_s:g} requests/s per device", {"Retry-After": str(math.ceil(wait))})
        return await handler(request)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "queue": analyzer.pending})

    async def analyze(request: web.Request) -> web.Response:
        lowlight_text = request.query.get("lowlight", "auto")
        if lowlight_text not in LOWLIGHT:
            return _error(400, f"lowlight={lowlight_text!r}: use auto, on or off")
        if request.content_length is not None and request.content_length > limits.max_body_bytes:
            return _error(413, f"body of {request.content_length} bytes is over the {limits.max_body_bytes} byte limit")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(limits.timeout_s):
                data = await request.read()
                check_header(data, limits.max_pixels)
                if analyzer.pending >= limits.max_queue:
                    return _error(503, "busy: too many requests queued for inference; try again", {"Retry-After": "1"})
                analyzer.pending += 1
                try:
                    result = await loop.run_in_executor(analyzer.executor, analyzer.run, data, LOWLIGHT[lowlight_text])
                finally:
                    analyzer.pending -= 1
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body is over the {limits.max_body_bytes} byte limit")
        except TimeoutError:
            return _error(503, f"no answer within {limits.timeout_s:g} s", {"Retry-After": "1"})
        except ImageError as exc:
            return _error(400, str(exc))
        return web.json_response(result)

    app = web.Application(middlewares=[guard], client_max_size=limits.max_body_bytes)
    app.router.add_post("/v1/analyze", analyze)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(
    app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None, ready: Callable[[int], None] | None = None
) -> None:
    """Serve until SIGINT/SIGTERM. `ready(port)` is called once listening (port 0 picks a free one)."""
    runner = web.AppRunner(
        app, access_log_class=JsonAccessLogger, access_log=ACCESS_LOGGER, handle_signals=False, handler_cancellation=True
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        bound = runner.addresses[0][1]
        _LOGGER.info("serving on %s://%s:%d", "https" if ssl_context else "http", host, bound)
        if ready is not None:
            ready(bound)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        _LOGGER.info("stopping")
    finally:
        await runner.cleanup()
