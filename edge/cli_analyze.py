"""`python -m edge analyze PATH… [--json]`: expressions of every face in photos (folders are walked)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from edge.cli_config import add_config_arguments, config_from_args
from edge.config import VisionConfig
from edge.hw.light import LOWLIGHT
from edge.runtime import DEFAULT_BACKEND
from edge.errors import ImageError

_LOGGER = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders of images")
    add_config_arguments(parser)  # [light]: the day/night rule's thresholds for --lowlight auto; vision.classes: 7 or 5 labels
    parser.add_argument("--json", action="store_true", help="one JSON object per image on stdout (JSON Lines)")
    parser.add_argument("--lowlight", choices=tuple(LOWLIGHT), default="auto", help="night branch: decide from brightness (light.frame_night_luma), always, never")
    parser.add_argument("--model", type=Path, default=None, help="expression model sidecar JSON (default: models/expression.json)")
    parser.add_argument("--backend", choices=("tflite", "onnx"), default=DEFAULT_BACKEND, help="expression-model runtime (default %(default)s)")
    parser.add_argument("--precision", choices=("int8", "fp32"), default="int8")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-faces", type=int, default=VisionConfig.max_faces)


MIN_SIDE = 2560
"""A large JPEG is decoded at 1/2, 1/4 or 1/8 scale down to this long side (7000×5000 → 3500×2500):
twice the 1280 px frame the glasses see and every detection figure was measured on. The detector
never looks closer than a 480-px-wide view of any frame (its finest pass: 0.4-wide tiles at 192 px),
and the landmark model reads a face through a 192-px crop of 1.5× its box, so a face over 128 px
(5 % of this side) loses nothing and a smaller one still keeps twice the pixels it would have on the
glasses; boxes are given in the photo's own pixels."""


def main(args: argparse.Namespace) -> int:
    from edge import images
    from edge.pipeline import Pipeline
    from edge.vision.expression import DEFAULT_SIDECAR

    failures = 0
    config = config_from_args(args)
    with Pipeline(
        model=args.model or DEFAULT_SIDECAR, backend=args.backend, threads=args.threads, max_faces=args.max_faces, precision=args.precision,
        light=config.light, classes=config.vision.classes,
    ) as pipeline:
        for path in images.walk(args.paths):
            try:
                frame, size = images.read_scaled(path, MIN_SIDE)
            except ImageError as exc:
                print(f"error: {exc}", file=sys.stderr)
                failures += 1
                continue
            result = pipeline.analyze(frame, lowlight=LOWLIGHT[args.lowlight]).in_image((frame.shape[1], frame.shape[0]), size)
            if args.json:
                print(json.dumps({"path": str(path), **result.to_json()}), flush=True)
            else:
                faces = ", ".join(
                    f"{f.label} {f.confidence:.0%}{' (unsure)' if f.unsure else ''}{' [whole image]' if f.fallback else ''}" for f in result.faces
                )
                print(f"{path}: {faces or 'no face'}", flush=True)
    return 1 if failures else 0
