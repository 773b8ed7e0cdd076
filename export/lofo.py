"""`python -m export lofo`: leave-one-family-out training with the short recipe — held-out vs in-family accuracy.

For each mask family (export.masks.FAMILIES) in turn, a model is trained with export.train.train (the short
recipe of `export cv`: `--epochs 3 --width 16`, no teachers) on Training faces whose masked view is drawn from
the *other* families only, then read on PublicTest masked with the family left out (held out) and with each
family it was trained on (in family). Figures are relative: short recipe, a seeded stratified subset of
Training (`--train-faces`), and no dark views (their slots hold the clean view, so draws are 60 % clean, 40 %
masked); accuracy is the fusion head's in PyTorch, mirror-averaged, on faces aligned by the device's own
code on the mesh found on the masked image (as `export cv` measures), not the int8 file through the pipeline.

Work is cached under --work (git-ignored build/lofo): the meshes and device views of every family's masked
copy of the subset and of PublicTest are made once per family and shared by all folds; each fold checkpoints
every epoch; models/results/lofo.json is written after every fold (complete: false until the last), so a
run stopped by the clock leaves its finished folds and a rerun resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from edge.errors import EdgeError
from edge.files import write_atomic
from export.card import MODELS
from export.dataset import SHARED_FER

_LOGGER = logging.getLogger(__name__)

RESULTS = MODELS / "results" / "lofo.json"
CLEAN = "clean"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from export.masks import FAMILIES

    p.add_argument("--train", type=Path, default=SHARED_FER / "fer2013_train.npz")
    p.add_argument("--test", type=Path, default=SHARED_FER / "fer2013_publictest.npz")
    p.add_argument("--work", type=Path, default=Path("build/lofo"), help="views, meshes and fold checkpoints (git-ignored)")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--family", action="append", choices=list(FAMILIES), default=None,
                   help="hold out only these families (repeatable; default every family, in FAMILIES order)")
    p.add_argument("--train-faces", type=int, default=8000, help="stratified, seeded subset of Training (0: all 28,709)")
    p.add_argument("--test-faces", type=int, default=0, help="first N PublicTest faces (0: all 3,589)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--seed", type=int, default=0, help="subset, per-face family and training seed")
    p.add_argument("--mask-seed", type=int, default=2013, help="mask styles of the PublicTest copies (Training copies use --seed)")
    p.add_argument("--threads", type=int, default=1)


def subset(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a stratified, seeded subset of n faces (all when n is 0 or too large)."""
    if not n or n >= len(y):
        return np.arange(len(y))
    from export.dataset import stratified_split

    return np.flatnonzero(stratified_split(y, n / len(y), seed))


def family_views(work: Path, split: str, x: np.ndarray, mesh: np.ndarray, family: str, seed: int,
                 threads: int) -> dict[str, np.ndarray]:
    """The device views (face, features, mirrored) of x masked by one family, or of x itself for CLEAN,
    aligned on the mesh found on the masked image; cached in work."""
    from export.dataset import usable_landmarks, views
    from export.landmarks import dataset_landmarks
    from export.masks import mask_batch

    path = work / f"views.{split}.{family}.{len(x)}.{seed}.npz"
    if path.is_file():
        return dict(np.load(path))
    start = time.perf_counter()
    images = x if family == CLEAN else mask_batch(x, mesh, seed=seed, fraction=1.0, families=[family])[0]
    landmarks, presence, _ = dataset_landmarks(images, threads=threads)
    faces, feats, ffaces, ffeats = views(images, usable_landmarks({"landmarks": landmarks, "presence": presence}))
    out = {"faces": faces, "features": feats, "ffaces": ffaces, "ffeatures": ffeats}
    work.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    _LOGGER.info("%s %s: %d faces masked, meshed and aligned in %.0f s", split, family, len(x), time.perf_counter() - start)
    return out


def fold_data(train: dict[str, dict[str, np.ndarray]], y: np.ndarray, targets: np.ndarray, families: list[str], seed: int):
    """A Prepared whose masked view of each face comes from one of `families` (seeded, uniform per face);
    the dark slots hold the clean view."""
    from export.dataset import Prepared, stratified_split

    pick = np.random.default_rng([seed, 17]).integers(len(families), size=len(y))
    clean = train[CLEAN]
    masked = {k: v.copy() for k, v in train[families[0]].items()}
    for j, family in enumerate(families[1:], start=1):
        for k in masked:
            masked[k][pick == j] = train[family][k][pick == j]
    order = [(clean, "faces"), (clean, "ffaces"), (masked, "faces"), (masked, "ffaces"), (clean, "faces"), (clean, "ffaces")]
    faces = np.stack([v[k] for v, k in order])
    feats = np.stack([v[k.replace("faces", "features")] for v, k in order])
    return Prepared(faces, feats, y, targets, stratified_split(y, 0.1, seed))


def accuracy(model, views: dict[str, np.ndarray], y: np.ndarray) -> float:
    """Fusion-head accuracy on one family's views, mirror-averaged: export.train.evaluate_views on a two-view set."""
    from export.dataset import Prepared
    from export.train import evaluate_views

    data = Prepared(np.stack([views["faces"], views["ffaces"]]), np.stack([views["features"], views["ffeatures"]]), y,
                    np.zeros((len(y), 7), np.float32), np.zeros(len(y), bool))
    return evaluate_views(model, data, np.arange(len(y)), 0)["fusion"]


def command(args: argparse.Namespace) -> str:
    parts = ["python -m export lofo", f"--epochs {args.epochs}", f"--width {args.width}", f"--train-faces {args.train_faces}"]
    parts += [f"--test-faces {args.test_faces}"] if args.test_faces else []
    parts += [f"--family {f}" for f in args.family or []]
    parts += [f"--seed {args.seed}"] if args.seed else []
    return " ".join(parts)


def summarise(folds: list[dict]) -> dict[str, object]:
    if not folds:
        return {}
    held = {f["held_out"]: f["held_out_accuracy"] for f in folds}
    worst = min(held, key=held.get)
    return {"worst_held_out_family": worst, "worst_held_out": held[worst], "mean_held_out": round(float(np.mean(list(held.values()))), 4),
            "mean_in_family": round(float(np.mean([f["in_family_mean"] for f in folds])), 4),
            "mean_clean": round(float(np.mean([f["clean"] for f in folds])), 4)}


def main(args: argparse.Namespace) -> int:
    import torch

    from export.dataset import mesh_array, soft_targets, usable_landmarks
    from export.landmarks import cached_landmarks, dataset_landmarks
    from export.masks import FAMILIES
    from export.train import build_model, train as train_model

    if args.epochs < 1:
        raise EdgeError(f"--epochs {args.epochs}: at least 1")
    torch.set_num_threads(args.threads)
    names = list(FAMILIES)
    held_out = args.family or names
    start = time.perf_counter()
    data = np.load(args.train)
    pick = subset(data["y"].astype(np.int64), args.train_faces, args.seed)
    x, y = data["x"][pick], data["y"][pick].astype(np.int64)
    targets = soft_targets(y, data["ferplus"][pick], data["ferplus_cols"])
    args.work.mkdir(parents=True, exist_ok=True)
    mesh_path = args.work / f"train.mesh.{len(pick)}.{args.seed}.npz"
    if not mesh_path.is_file():
        landmarks, presence, _ = dataset_landmarks(x, threads=args.threads)
        np.savez(mesh_path, landmarks=landmarks, presence=presence)
    train_mesh = mesh_array(usable_landmarks(dict(np.load(mesh_path))))
    test = np.load(args.test)
    tx, ty = test["x"], test["y"].astype(np.int64)
    test_mesh = mesh_array(usable_landmarks(cached_landmarks(args.test, Path("cache") if Path("cache").is_dir() else args.work)))
    if args.test_faces:
        tx, ty, test_mesh = tx[: args.test_faces], ty[: args.test_faces], test_mesh[: args.test_faces]
    train_views = {f: family_views(args.work, "train", x, train_mesh, f, args.seed, args.threads) for f in [CLEAN, *names]}
    test_views = {f: family_views(args.work, "test", tx, test_mesh, f, args.mask_seed, args.threads) for f in [CLEAN, *names]}
    views_minutes = round((time.perf_counter() - start) / 60, 1)
    previous = json.loads(args.results.read_text()) if args.results.is_file() else {}
    views_minutes = previous.get("views_minutes", views_minutes) if previous.get("command") == command(args) else views_minutes

    folds: list[dict] = []
    for family in held_out:
        trained_on = [f for f in names if f != family]
        split = fold_data(train_views, y, targets, trained_on, args.seed)
        out_dir = args.work / f"fold-{family}"
        out_dir.mkdir(parents=True, exist_ok=True)
        final = train_model(split, out_dir, args.epochs, args.batch, args.lr, args.seed, resume=True, width=args.width)
        state = torch.load(final, weights_only=False)
        model = build_model(split, args.width)
        model.load_state_dict(state["model"])
        model.eval()
        in_family = {f: accuracy(model, test_views[f], ty) for f in trained_on}
        folds.append({"held_out": family, "trained_on": trained_on, "held_out_accuracy": accuracy(model, test_views[family], ty),
                      "in_family": in_family, "in_family_mean": round(float(np.mean(list(in_family.values()))), 4),
                      "clean": accuracy(model, test_views[CLEAN], ty),
                      "val_masked": state["history"][-1]["val_masked"]["fusion"],
                      "train_minutes": round(sum(r["seconds"] for r in state["history"]) / 60, 1)})
        _LOGGER.info("held out %s: %s", family, json.dumps(folds[-1]))
        results = {"command": command(args),
                   "recipe": {"epochs": args.epochs, "width": args.width, "batch": args.batch, "lr": args.lr, "seed": args.seed,
                              "train_faces": int(len(y)), "test_faces": int(len(ty)), "teachers": [], "dark_views": False},
                   "complete": len(folds) == len(held_out), "families": held_out, "views_minutes": views_minutes,
                   "folds": folds, "summary": summarise(folds)}
        args.results.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.results, (json.dumps(results, indent=2) + "\n").encode("utf-8"))
    return 0
