"""`python -m edge bench` — per-stage and press-to-first-audio latency as p50/p95/p99, over SSH or --json.

    python -m edge bench                          # demo face, 200 frames, 30 presses, plain table
    python -m edge bench --duration 60 --warmup 20 --compare-mediapipe --plot /tmp/bench.png
    python -m edge bench --source 0 --json        # camera 0; one JSON object on stdout
    python -m edge bench --source clip.mp4 --set vision.backend=onnx --set vision.threads=4

What each number measures is written in edge/bench.py's docstring.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from edge.cli_config import add_config_arguments, config_from_args

_LOGGER = logging.getLogger(__name__)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--source", default="scene", metavar="scene|demo|PATH|INDEX",
        help="frames from the scene (default: the demo face close, at 2 m and in a group of three), the demo "
             "face alone, a video file, an image folder, or a camera index/path",
    )
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--frames", type=_positive_int, default=None, metavar="N", help="timed frames (default 200)")
    amount.add_argument("--duration", type=_seconds, default=None, metavar="S", help="time frames for S seconds instead")
    parser.add_argument("--warmup", type=_count, default=10, metavar="N", help="untimed frames first (default 10)")
    parser.add_argument(
        "--presses", type=_count, default=30, metavar="N",
        help="mock button taps timed to first audio (default 30; 0 skips)",
    )
    parser.add_argument(
        "--compare-mediapipe", action="store_true",
        help="also time MediaPipe's FaceMesh solution on the same frames and report the ratio",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout instead of the table")
    parser.add_argument("--plot", type=Path, default=None, metavar="FILE.png", help="write latency histograms")


def main(args: argparse.Namespace) -> int:
    t_bench = time.time()
    from edge import bench

    config = config_from_args(args)
    frames = args.frames if args.frames is not None or args.duration is not None else 200
    options = bench.BenchOptions(
        source=str(args.source), frames=frames, duration_s=args.duration, warmup=args.warmup,
        presses=args.presses, compare_mediapipe=args.compare_mediapipe,
    )
    if args.plot is not None:
        from edge.plotting import matplotlib_or_refuse

        matplotlib_or_refuse("--plot")  # before a minute of measuring, not after it
    result = bench.run(config, options, t_bench=t_bench)
    report = result.to_json()
    if args.plot is not None:
        bench.write_plot(result, args.plot)
        _LOGGER.info("latency histograms written to %s", args.plot)
    if args.json:
        print(json.dumps(report), flush=True)
    else:
        sys.stdout.write(bench.format_table(report))
    return 0
