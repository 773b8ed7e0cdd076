"""`python -m export cv`: K-fold cross-validation of the training recipe, so a 1-point gain can be told from noise.

The training faces are split into K stratified, seeded folds (export.train.fold_split); each fold in turn is
held out as the validation split and a model is trained on the others with export.train.train, sequentially,
in this one process (the prepared views are loaded once). Each fold's figure is the last epoch's validation
accuracy of the fusion head on the clean, masked and dark views, as the training log computes it. Writes
models/results/cv.json (per fold, mean, sample standard deviation, the command) after every fold; `python -m export.card`
puts it in the model card. Each fold checkpoints every epoch, so running the command again resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from edge.errors import EdgeError
from edge.files import write_atomic
from export.card import MODELS
from export.dataset import SHARED_FER, load_prepared, prepare

_LOGGER = logging.getLogger(__name__)

RESULTS = MODELS / "results" / "cv.json"
VIEWS = ("clean", "masked", "dark")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=SHARED_FER / "fer2013_train.npz", help="FER2013 Training npz (prepared once, cached)")
    p.add_argument("--cache", type=Path, default=Path("cache"))
    p.add_argument("--prepared", type=Path, default=None, help="a prepared views file (cache/prepared.*.npz) instead of --data")
    p.add_argument("--out", type=Path, default=Path("cache/cv"), help="one checkpoint folder per fold under it")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=3, help="per fold (the shipped recipe: 48, distilled)")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)


def summarise(folds: list[dict]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation (ddof 1) over the folds of each view's fusion accuracy."""
    out = {}
    for view in VIEWS:
        values = np.array([f[view] for f in folds])
        out[view] = {"mean": round(float(values.mean()), 4), "std": round(float(values.std(ddof=1)) if len(values) > 1 else 0.0, 4)}
    return out


def command(args: argparse.Namespace) -> str:
    parts = ["python -m export cv", f"--folds {args.folds}", f"--epochs {args.epochs}", f"--width {args.width}"]
    parts += [f"--batch {args.batch}"] if args.batch != 128 else []
    parts += [f"--seed {args.seed}"] if args.seed else []
    return " ".join(parts)


def write_results(args: argparse.Namespace, n: int, folds: list[dict]) -> None:
    results = {
        "command": command(args),
        "recipe": {"folds": args.folds, "epochs": args.epochs, "width": args.width, "batch": args.batch, "lr": args.lr,
                   "seed": args.seed, "teachers": []},
        "n": n,
        "head": "fusion",
        "complete": len(folds) == args.folds,
        "folds": folds,
        "summary": summarise(folds),
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.results, (json.dumps(results, indent=2) + "\n").encode("utf-8"))
    _LOGGER.info("%d of %d folds: %s → %s", len(folds), args.folds, json.dumps(results["summary"]), args.results)


def main(args: argparse.Namespace) -> int:
    import torch

    from export.train import fold_split, train

    if args.folds < 2 or args.epochs < 1:
        raise EdgeError(f"--folds {args.folds} --epochs {args.epochs}: use at least 2 folds and 1 epoch")
    torch.set_num_threads(args.threads)
    if args.prepared and not args.prepared.is_file():
        raise EdgeError(f"--prepared {args.prepared} not found: give a cache/prepared.*.npz, or leave it out to prepare --data")
    data = load_prepared(args.prepared) if args.prepared else prepare(args.data, args.cache, seed=args.seed)
    folds: list[dict] = []
    for fold in range(args.folds):
        split = fold_split(data, args.folds, fold, args.seed)
        out_dir = args.out / f"fold{fold}"
        out_dir.mkdir(parents=True, exist_ok=True)
        final = train(split, out_dir, args.epochs, args.batch, args.lr, args.seed, resume=True, width=args.width)
        history = torch.load(final, weights_only=False)["history"]
        last = history[-1]
        folds.append({"fold": fold, "n_train": int((~split.val).sum()), "n_val": int(split.val.sum()),
                      **{view: last[f"val_{view}"]["fusion"] for view in VIEWS}, "train_minutes": round(sum(r["seconds"] for r in history) / 60, 1)})
        _LOGGER.info("fold %d of %d: %s", fold, args.folds, json.dumps(folds[-1]))
        write_results(args, len(data.y), folds)  # after every fold: an interrupted run leaves its finished folds
    return 0
