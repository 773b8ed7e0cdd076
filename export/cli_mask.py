"""`python -m export mask --data IN.npz --out OUT.npz`: every face masked by our generator (the masked test set)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

_LOGGER = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=2013, help="mask styles are drawn from this seed (fixed: a reproducible test set)")
    parser.add_argument("--fraction", type=float, default=1.0)
    parser.add_argument("--cache", type=Path, default=Path("cache"))
    parser.add_argument("--family", action="append", default=None, metavar="NAME",
                        help="draw the masks from this family of export.masks.FAMILIES (repeatable: a mix); default: the shipped generator")


def main(args: argparse.Namespace) -> int:
    from export.dataset import mesh_array, usable_landmarks
    from export.evaluate import load_npz
    from export.landmarks import cached_landmarks
    from export.masks import mask_batch

    x, y = load_npz(args.data)
    landmarks = mesh_array(usable_landmarks(cached_landmarks(args.data, args.cache)))
    masked, was_masked = mask_batch(x, landmarks, seed=args.seed, fraction=args.fraction, families=args.family)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.stem + ".tmp.npz")
    np.savez_compressed(tmp, x=masked, y=y, masked=was_masked)
    tmp.replace(args.out)
    _LOGGER.info("%s: %d of %d faces masked → %s", args.data.name, int(was_masked.sum()), len(x), args.out)
    return 0
