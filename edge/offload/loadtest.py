"""Bounded load on an `edge serve` server: a fixed number of requests, then a JSON report.

    python -m edge.offload.loadtest --url https://127.0.0.1:8443 --token-file TOKEN --ca-file cert.pem \
        --count 400 --concurrency 4

By default each request carries what the glasses send: the JPEG face crop of matplotlib's Grace
Hopper portrait, cut exactly as the client cuts it (`--full` sends the whole image instead). It
stops by itself after `--count` requests; it is a measuring tool, not a stress tool.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def payload(image_path: Path | None, full: bool) -> bytes:
    import cv2

    from edge.offload.client import crop_jpeg
    from edge.pipeline import Pipeline

    if image_path is None:
        from matplotlib import cbook

        image_path = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    data = image_path.read_bytes()
    if full:
        return data
    frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    with Pipeline(threads=1) as pipeline:
        faces = [f for f in pipeline.analyze(frame, lowlight=None).faces if not f.fallback]
    if not faces:
        raise SystemExit(f"{image_path}: no face found to crop; use --full")
    return crop_jpeg(frame, faces[0].box)


async def run(url: str, token: str, ssl: object, body: bytes, count: int, concurrency: int) -> dict:
    import aiohttp

    latencies: list[float] = []
    statuses: dict[str, int] = {}
    todo = iter(range(count))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "image/jpeg"}

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl, limit=concurrency), headers=headers) as session:

        async def worker() -> None:
            for _ in todo:
                start = time.perf_counter_ns()
                try:
                    async with session.post(url.rstrip("/") + "/v1/analyze", data=body) as response:
                        await response.read()
                        key = str(response.status)
                except aiohttp.ClientError as exc:
                    key = type(exc).__name__
                latencies.append((time.perf_counter_ns() - start) / 1e6)
                statuses[key] = statuses.get(key, 0) + 1

        async with session.get(url.rstrip("/") + "/healthz") as response:  # connect once before timing
            await response.read()
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "count": count,
        "concurrency": concurrency,
        "payload_bytes": len(body),
        "statuses": statuses,
        "wall_s": round(wall, 3),
        "requests_per_s": round(count / wall, 1),
        "latency_ms": {"p50": round(float(p50), 1), "p95": round(float(p95), 1), "p99": round(float(p99), 1)},
    }


def main(argv: list[str] | None = None) -> int:
    from edge.offload.tls import client_ssl

    parser = argparse.ArgumentParser(prog="python -m edge.offload.loadtest", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="https://HOST:PORT of `python -m edge serve`")
    parser.add_argument("--token-file", type=Path, required=True, help="file with a device token")
    parser.add_argument("--ca-file", default="", help="the server's certificate (self-signed) or CA, PEM")
    parser.add_argument("--count", type=int, default=400, help="requests in all (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight at once (default %(default)s)")
    parser.add_argument("--image", type=Path, default=None, help="image to send (default: matplotlib's grace_hopper.jpg)")
    parser.add_argument("--full", action="store_true", help="send the whole image, not the face crop the glasses send")
    args = parser.parse_args(argv)
    ssl = client_ssl(args.ca_file) if args.url.startswith("https") else False
    body = payload(args.image, args.full)
    token = args.token_file.read_text(encoding="utf-8").strip()
    print(json.dumps(asyncio.run(run(args.url, token, ssl, body, args.count, args.concurrency))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
