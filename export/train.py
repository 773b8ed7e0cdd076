"""Train the three candidates in one run: fusion (c) with deep supervision of image (b) and landmark (a) heads.

One run gives all three models on the same split, the same data mix and the same number of steps,
so the model-card table compares like with like and fits a 2-core CPU session. Each epoch draws
each training face once as its clean, masked or dark view (VIEW_MIX; half of all draws are masked),
mirrored with probability ½, plus a small random shift/rotation of the image. The loss is class-weighted (√ inverse frequency: disgust
has 436 faces) on soft targets (FER2013 label blended with FER+ votes). With `--teachers`, earlier runs'
checkpoints on the same prepared data are averaged into an ensemble whose probabilities on each view
are blended into that view's targets (knowledge distillation: the student learns from the ensemble
and the glasses still run one network). Checkpoints every epoch; `--resume` continues an
interrupted run. `--folds K --fold i` holds out fold i of K stratified folds of all training faces instead
of the fixed validation split (cross-validation: `python -m export cv` runs every fold).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge.files import sha256_file
from export.dataset import SHARED_FER, Prepared, prepare
from export.nets import FaceNet, FusionNet, LandmarkHogNet

_LOGGER = logging.getLogger(__name__)


VIEW_MIX = (0.4, 0.4, 0.2)
"""Probability of the clean, masked and dark view of a face in a training draw (dark rows alternate
masked and clean, so masked faces are half of all draws)."""


def draw_views(rng: np.random.Generator, n: int) -> np.ndarray:
    """View index (dataset.VIEW_NAMES) for n training draws: a kind from VIEW_MIX, then mirrored or not."""
    kind = rng.choice(len(VIEW_MIX), size=n, p=VIEW_MIX)
    return 2 * kind + rng.integers(0, 2, n)


def class_weights(y: np.ndarray) -> torch.Tensor:
    counts = np.bincount(y, minlength=7).astype(np.float64)
    w = 1.0 / np.sqrt(counts)
    return torch.tensor(w / (w * counts).sum() * counts.sum(), dtype=torch.float32)


def soft_ce(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    per = -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1)
    w = (targets * weights).sum(dim=1)
    return (per * w).sum() / w.sum()


def jitter(faces: torch.Tensor, rng: torch.Generator, shift: float = 2.0, degrees: float = 8.0, scale: float = 0.06) -> torch.Tensor:
    """Small random similarity transforms of a batch (the aligner's residual error on the glasses)."""
    n = faces.shape[0]
    a = (torch.rand(n, generator=rng) * 2 - 1) * math.radians(degrees)
    s = 1 + (torch.rand(n, generator=rng) * 2 - 1) * scale
    t = (torch.rand(n, 2, generator=rng) * 2 - 1) * shift / 24.0
    theta = torch.stack(
        [torch.stack([s * torch.cos(a), -s * torch.sin(a), t[:, 0]], 1), torch.stack([s * torch.sin(a), s * torch.cos(a), t[:, 1]], 1)], 1
    )
    grid = nn.functional.affine_grid(theta, list(faces.shape), align_corners=False)
    return nn.functional.grid_sample(faces, grid, padding_mode="border", align_corners=False)


def fold_split(data: Prepared, folds: int, fold: int, seed: int) -> Prepared:
    """data with fold `fold` of `folds` (stratified by class, seeded, over all its faces: export.teachers.folds)
    as the validation split in place of the fixed one; data itself when folds is 0 (the default recipe)."""
    if not folds:
        return data
    from export.teachers import folds as stratified_folds

    return dataclasses.replace(data, val=stratified_folds(data.y, np.zeros(len(data.y), bool), folds, seed) == fold)


def build_model(data: Prepared, width: int = 16) -> FusionNet:
    train = ~data.val
    feats = data.features[:, train].reshape(-1, *data.features.shape[2:]).astype(np.float32)
    landmark_net = LandmarkHogNet(n_landmarks=feats.shape[1], n_features=feats.shape[2])
    landmark_net.mean.copy_(torch.from_numpy(feats.mean(axis=0)))
    landmark_net.std.copy_(torch.from_numpy(feats.std(axis=0) + 1e-3))
    return FusionNet(landmark_net, FaceNet(width=width))


def load_checkpoint(data: Prepared, path: Path) -> tuple[FusionNet, dict]:
    """(model in eval mode, the saved dict) for a fusion.pt written by `train` (its width is in the file)."""
    state = torch.load(path, weights_only=False)
    model = build_model(data, state.get("width", 16))
    model.load_state_dict(state["model"])
    model.eval()
    return model, state


def batch_views(data: Prepared, idx: np.ndarray, view: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    faces = torch.from_numpy(data.faces[view, idx].astype(np.float32))[:, None]
    feats = torch.from_numpy(data.features[view, idx].astype(np.float32))
    return faces, feats


@torch.no_grad()
def teacher_probabilities(data: Prepared, checkpoints: list[Path], cache: Path) -> np.ndarray:
    """float32 [3, N, 7]: the teachers' mean softmax on the clean, masked and dark view of every face,
    each averaged with its mirrored view (the label does not change with a mirror).

    Cached in `cache` under the teachers' sha256, so a resumed run blends in the same targets."""
    key = [sha256_file(p) for p in checkpoints]
    if cache.is_file():
        stored = np.load(cache)
        if stored["key"].tolist() == key and stored["probs"].shape[1] == len(data.y):
            return stored["probs"]
    probs = np.zeros((3, len(data.y), 7), np.float32)
    for path in checkpoints:
        model, _ = load_checkpoint(data, path)
        start = time.perf_counter()
        for view in range(6):
            for b in range(0, len(data.y), 1024):
                idx = np.arange(b, min(b + 1024, len(data.y)))
                logits = model(*batch_views(data, idx, np.full(len(idx), view)))
                probs[view // 2, idx] += torch.softmax(logits, dim=1).numpy() / (2 * len(checkpoints))
        _LOGGER.info("teacher %s: 6 views of %d faces in %.0f s", path, len(data.y), time.perf_counter() - start)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, key=np.array(key), probs=probs)
    tmp.replace(cache)
    return probs


def stored_soft_targets(data: Prepared, path: Path) -> np.ndarray:
    """float32 [3, N, 7] teacher probabilities written by `python -m export.teachers targets` (GPU teachers),
    checked against the prepared data they were made for (same faces, same order)."""
    from export.teachers import labels_key

    stored = np.load(path)
    probs = stored["probs"].astype(np.float32)
    if probs.shape != (3, len(data.y), 7) or str(stored["labels_sha256"]) != labels_key(data.y):
        raise ValueError(f"{path} was made for other prepared data (shape {probs.shape}, {len(data.y)} faces here): "
                         "regenerate it with `python -m export.teachers targets` from this data's pack")
    return probs


def blended_targets(targets: torch.Tensor, teacher: np.ndarray | None, idx: np.ndarray, view: np.ndarray, weight: float) -> torch.Tensor:
    """Training targets of a batch: the soft labels, with the teachers' view probabilities blended in."""
    if teacher is None or weight == 0.0:
        return targets[idx]
    return (1.0 - weight) * targets[idx] + weight * torch.from_numpy(teacher[view // 2, idx])


@torch.no_grad()
def evaluate_views(model: FusionNet, data: Prepared, idx: np.ndarray, base: int) -> dict[str, float]:
    """Validation accuracy of fusion / image / landmark heads on one view (0 clean, 2 masked, 4 dark), mirror-averaged."""
    model.eval()
    correct = np.zeros(3)
    for start in range(0, len(idx), 512):
        chunk = idx[start : start + 512]
        outs = [torch.stack(model.all_logits(*batch_views(data, chunk, np.full(len(chunk), base + m)))) for m in (0, 1)]
        pred = ((outs[0] + outs[1]) / 2).argmax(dim=2).numpy()
        correct += (pred == data.y[chunk]).sum(axis=1)
    return dict(zip(("fusion", "face", "landmarks"), (correct / len(idx)).round(4).tolist()))


def train(
    data: Prepared,
    out_dir: Path,
    epochs: int,
    batch: int,
    lr: float,
    seed: int,
    resume: bool,
    width: int = 16,
    teachers: list[Path] | None = None,
    teacher_weight: float = 0.5,
    soft_targets: Path | None = None,
) -> Path:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    trng = torch.Generator().manual_seed(seed)
    model = build_model(data, width)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    train_idx, val_idx = np.flatnonzero(~data.val), np.flatnonzero(data.val)
    steps = epochs * math.ceil(len(train_idx) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    weights = class_weights(data.y[train_idx])
    targets = torch.from_numpy(data.targets)
    teacher = teacher_probabilities(data, teachers, out_dir / "teacher.npz") if teachers else None
    if soft_targets is not None:
        stored = stored_soft_targets(data, soft_targets)
        teacher = stored if teacher is None else (teacher + stored) / 2
    ckpt = out_dir / "checkpoint.pt"
    first_epoch, history = 0, []
    if resume and ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"]), opt.load_state_dict(state["opt"]), sched.load_state_dict(state["sched"])
        first_epoch, history = state["epoch"] + 1, state["history"]
        rng = np.random.default_rng(seed + first_epoch)
        _LOGGER.info("resumed at epoch %d", first_epoch)
    for epoch in range(first_epoch, epochs):
        model.train()
        start, total = time.perf_counter(), 0.0
        order = rng.permutation(train_idx)
        for b in range(0, len(order), batch):
            idx = order[b : b + batch]
            view = draw_views(rng, len(idx))
            faces, feats = batch_views(data, idx, view)
            faces = jitter(faces, trng)
            fused, face_only, lmk_only = model.all_logits(faces, feats)
            t = blended_targets(targets, teacher, idx, view, teacher_weight)
            loss = soft_ce(fused, t, weights) + 0.5 * (soft_ce(face_only, t, weights) + soft_ce(lmk_only, t, weights))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        row = {
            "epoch": epoch,
            "loss": round(total / len(order), 4),
            "val_clean": evaluate_views(model, data, val_idx, 0),
            "val_masked": evaluate_views(model, data, val_idx, 2),
            "val_dark": evaluate_views(model, data, val_idx, 4),
            "seconds": round(time.perf_counter() - start, 1),
        }
        history.append(row)
        _LOGGER.info("%s", json.dumps(row))
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "epoch": epoch, "history": history}, tmp)
        tmp.replace(ckpt)
    final = out_dir / "fusion.pt"
    meta = {"width": width, "epochs": epochs, "teachers": [str(p) for p in teachers or []] + ([str(soft_targets)] if soft_targets else []),
            "teacher_weight": teacher_weight if teacher is not None else 0.0}
    torch.save({"model": model.state_dict(), "history": history, **meta}, final)
    return final


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_FER / "fer2013_train.npz")
    parser.add_argument("--cache", type=Path, default=Path("cache"))
    parser.add_argument("--out", type=Path, default=Path("cache/run"))
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--width", type=int, default=16, help="image-branch channels of the first stage (×2, ×4, ×8 after)")
    parser.add_argument("--teachers", type=Path, nargs="*", default=[], help="fusion.pt checkpoints of earlier runs on the same data to distil from")
    parser.add_argument("--soft-targets", type=Path, default=None,
                        help="soft_targets.npz of GPU teachers (python -m export.teachers targets) to distil from")
    parser.add_argument("--folds", type=int, default=0, help="cross-validation: split the training faces into this many stratified folds")
    parser.add_argument("--fold", type=int, default=0, help="with --folds: the fold held out for validation (0 .. folds-1)")
    parser.add_argument("--teacher-weight", type=float, default=0.5, help="share of the teachers' probabilities in the targets")
    args = parser.parse_args()
    for path in args.teachers:
        if not path.is_file():
            parser.error(f"teacher checkpoint {path} not found: train it first (make train)")
    if args.soft_targets is not None and not args.soft_targets.is_file():
        parser.error(f"soft targets {args.soft_targets} not found")
    if not 0.0 <= args.teacher_weight <= 1.0:
        parser.error("--teacher-weight must be between 0 and 1")
    if args.folds and not (args.folds >= 2 and 0 <= args.fold < args.folds):
        parser.error(f"--fold {args.fold} of --folds {args.folds}: use at least 2 folds and a fold from 0 to {args.folds - 1}")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    data = fold_split(prepare(args.data, args.cache, seed=args.seed), args.folds, args.fold, args.seed)
    _LOGGER.info("training on %d faces, validating on %d", int((~data.val).sum()), int(data.val.sum()))
    train(data, args.out, args.epochs, args.batch, args.lr, args.seed, args.resume, args.width, args.teachers, args.teacher_weight, args.soft_targets)


if __name__ == "__main__":
    main()
