"""Bounded load on an `edge serve` server: a fixed number of requests, then a JSON report.

    python -m edge.offload.loadtest --url https://127.0.0.1:8443 --token-file TOKEN --ca-file cert.pem \
        --count 400 --concurrency 4                # closed loop: the most the server can answer
    python -m edge.offload.loadtest ... --count 300 --arrival-rate 20   # open loop: glasses pressing at random

By default each request carries what the glasses send: the JPEG face crop of the demo portrait
(edge/data/grace_hopper.jpg), cut exactly as the client cuts it (`--full` sends the whole image instead). It
stops by itself after `--count` requests; it is a measuring tool, not a stress tool.

Closed loop (`--concurrency N`): N requests always in flight, so requests/s is the server's
capacity. Open loop (`--arrival-rate R`): requests start at random (Poisson) times, R per second on
average, however slowly the server answers — what many independent wearers look like — so the
latency percentiles include the queueing a real fleet would see at that rate.
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
from typing import Any

import numpy as np


def payload(image_path: Path | None, full: bool) -> bytes:
    import cv2

    from edge.offload.client import crop_jpeg
    from edge.pipeline import Pipeline

    if image_path is None:
        from edge.images import DEMO_PORTRAIT

        image_path = DEMO_PORTRAIT
    data = image_path.read_bytes()
    if full:
        return data
    frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if frame is None:
        raise SystemExit(f"{image_path}: not a readable image")
    with Pipeline(threads=1) as pipeline:
        faces = [f for f in pipeline.analyze(frame, lowlight=None).faces if not f.fallback]
    if not faces:
        raise SystemExit(f"{image_path}: no face found to crop; use --full")
    return crop_jpeg(frame, faces[0].box)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a local process has used (Linux /proc): what a request costs the server
    whatever else the machine is doing, unlike its wall-clock rate."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError as exc:
        raise SystemExit(f"--server-pid {pid}: cannot read its CPU time ({exc.strerror}); it must be a local process on Linux") from None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": round(float(p50), 1), "p95": round(float(p95), 1), "p99": round(float(p99), 1)}


async def run(
    url: str,
    token: str,
    ssl: object,
    body: bytes,
    count: int,
    concurrency: int = 4,
    arrival_rate: float | None = None,
    seed: int = 0,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """Send `count` requests (closed loop with `concurrency`, or open loop at `arrival_rate`/s); the report."""
    import aiohttp

    latencies: list[float] = []
    ok_latencies: list[float] = []
    server_ms: list[float] = []
    statuses: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "image/jpeg"}
    endpoint = url.rstrip("/") + "/v1/analyze"
    limit = concurrency if arrival_rate is None else 0  # open loop: as many connections as requests in flight

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl, limit=limit), headers=headers) as session:

        async def one() -> None:
            start = time.perf_counter_ns()
            try:
                async with session.post(endpoint, data=body) as response:
                    data = await response.read()
                    key = str(response.status)
            except aiohttp.ClientError as exc:
                key, data = type(exc).__name__, b""
            elapsed = (time.perf_counter_ns() - start) / 1e6
            latencies.append(elapsed)
            statuses[key] = statuses.get(key, 0) + 1
            if key == "200":
                ok_latencies.append(elapsed)
                server_ms.append(float(json.loads(data)["timings_ms"]["total"]))

        async with session.get(url.rstrip("/") + "/healthz") as response:  # connect once before timing
            health = await response.json()
        load_before = os.getloadavg()
        cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
        start = time.perf_counter()
        if arrival_rate is None:
            todo = iter(range(count))

            async def worker() -> None:
                for _ in todo:
                    await one()

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            gaps = np.random.default_rng(seed).exponential(1.0, count)
            gaps *= (count / arrival_rate) / gaps.sum()  # random spacing, but exactly the offered rate overall
            tasks = []
            for at in np.cumsum(gaps) - gaps[0]:
                delay = start + float(at) - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one()))
            await asyncio.gather(*tasks)
        wall = time.perf_counter() - start
        load_after = os.getloadavg()
        cpu_used = cpu_seconds(server_pid) - cpu_before if server_pid else None
    return {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "load_avg_1m": {"before": round(load_before[0], 2), "after": round(load_after[0], 2)},
        "server": health,
        "mode": "closed" if arrival_rate is None else "open",
        "count": count,
        "concurrency": concurrency if arrival_rate is None else None,
        "arrival_rate_per_s": arrival_rate,
        "payload_bytes": len(body),
        "statuses": statuses,
        "wall_s": round(wall, 3),
        "requests_per_s": round(count / wall, 1),
        "ok_per_s": round(len(ok_latencies) / wall, 1),
        "latency_ms": _percentiles(latencies),
        "ok_latency_ms": _percentiles(ok_latencies),
        "server_pipeline_ms": _percentiles(server_ms),
        "server_cpu_ms_per_request": round(cpu_used * 1e3 / count, 1) if cpu_used is not None else None,
    }


def main(argv: list[str] | None = None) -> int:
    from edge.offload.tls import client_ssl

    parser = argparse.ArgumentParser(prog="python -m edge.offload.loadtest", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="https://HOST:PORT of `python -m edge serve`")
    parser.add_argument("--token-file", type=Path, required=True, help="file with a device token")
    parser.add_argument("--ca-file", default="", help="the server's certificate (self-signed) or CA, PEM")
    parser.add_argument("--count", type=int, default=400, help="requests in all (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=4, help="closed loop: requests in flight at once (default %(default)s)")
    parser.add_argument("--arrival-rate", type=float, default=None, help="open loop instead: start this many requests per second at random (Poisson) times")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the open-loop arrival times (default %(default)s)")
    parser.add_argument("--server-pid", type=int, default=None, help="pid of a local `edge serve`: also report its CPU time per request")
    parser.add_argument("--image", type=Path, default=None, help="image to send (default: the demo portrait, edge/data/grace_hopper.jpg)")
    parser.add_argument("--full", action="store_true", help="send the whole image, not the face crop the glasses send")
    args = parser.parse_args(argv)
    if args.count < 1 or args.concurrency < 1 or (args.arrival_rate is not None and args.arrival_rate <= 0):
        parser.error("--count and --concurrency must be 1 or more, --arrival-rate above 0")
    ssl = client_ssl(args.ca_file) if args.url.startswith("https") else False
    body = payload(args.image, args.full)
    try:
        token = args.token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        parser.error(f"--token-file {args.token_file}: {exc.strerror}")
    report = asyncio.run(run(args.url, token, ssl, body, args.count, args.concurrency, args.arrival_rate, args.seed, args.server_pid))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
