"""Large image teachers for the glasses' width-16 student, trained on a GPU when one is lent.

Two steps, on two machines:

1. `python -m export.teachers pack` (here, on the CPU): the prepared training views (export/dataset.py:
   the aligned 48×48 upper face, clean / masked / dark, exactly as the glasses cut it) are written as
   lossless WebP mosaics in chunks small enough to carry to the GPU machine, with labels, soft targets,
   our validation split, the cross-fitting folds, each face's mask kind and dark light level.
2. `python -m export.teachers train --pack DIR --out DIR` (on the GPU machine; needs only numpy, OpenCV
   and PyTorch): for every architecture and every fold, one teacher trained from scratch on the other
   folds' faces (all three views, mirrored, augmented on the GPU, bf16), all of them at once on the one GPU
   until a shared deadline. Each writes its softmax on all six views of every face (mirror pairs averaged,
   so [3, N, 7]). Folds give *out-of-fold* soft targets: a training face's target comes from teachers that
   never saw it, so it carries what the teachers learned rather than the label they memorised.
   Validation faces (export/dataset.py's split) are never trained on by any teacher.

`python -m export.teachers targets` (here again) turns the per-teacher probabilities into the [3, N, 7]
targets `export.train --soft-targets` distils from, and reports each teacher's and the ensemble's
validation accuracy per view, mask kind and light level (export/soft_targets/README.md keeps the figures).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

_LOGGER = logging.getLogger("export.teachers")

VIEWS = ("clean", "masked", "dark")
"""The un-mirrored views of export/dataset.py (faces[0], faces[2], faces[4]); mirrors are np.fliplr of them."""
TILE = 48
MOSAIC_COLUMNS = 170
"""Tiles per mosaic row: 28,709 faces make an 8,160 × 8,112 image, inside WebP's 16,383-pixel limit."""
FOLDS = 4
ARCHS = ("wrn", "vgg", "convnext")


# ---------------------------------------------------------------------------------------------
# Packing (CPU, here)
# ---------------------------------------------------------------------------------------------


def mosaic(faces: np.ndarray, columns: int = MOSAIC_COLUMNS) -> np.ndarray:
    """uint8 [N, 48, 48] → one [rows·48, columns·48] image, row-major, the last row padded with zeros."""
    n = len(faces)
    rows = -(-n // columns)
    padded = np.zeros((rows * columns, TILE, TILE), np.uint8)
    padded[:n] = faces
    return padded.reshape(rows, columns, TILE, TILE).transpose(0, 2, 1, 3).reshape(rows * TILE, columns * TILE)


def unmosaic(image: np.ndarray, n: int, columns: int = MOSAIC_COLUMNS) -> np.ndarray:
    rows = image.shape[0] // TILE
    tiles = image.reshape(rows, TILE, columns, TILE).transpose(0, 2, 1, 3).reshape(rows * columns, TILE, TILE)
    return np.ascontiguousarray(tiles[:n])


def folds(y: np.ndarray, val: np.ndarray, k: int, seed: int) -> np.ndarray:
    """int8 [N]: a stratified fold 0..k-1 for every training face, -1 for validation faces."""
    rng = np.random.default_rng(seed + 7)
    out = np.full(len(y), -1, np.int8)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero((y == c) & ~val))
        out[idx] = np.arange(len(idx)) % k
    return out


def pack(prepared_npz: Path, out: Path, seed: int = 0, chunk_mb: float = 44.0) -> list[Path]:
    """Write the carry folders out/p1, out/p2, … (each under chunk_mb) and return them."""
    import cv2

    from export.dataset import DARK_LIGHT, dark_light_levels
    from export.masks import random_style

    d = np.load(prepared_npz)
    faces, y, targets, val = d["faces"], d["y"], d["targets"], d["val"]
    n = len(y)
    kinds = [random_style(np.random.default_rng([seed, i])).kind.value for i in range(n)]
    kind_names = sorted(set(kinds))
    meta = {
        "y": y.astype(np.int8),
        "targets": targets.astype(np.float32),
        "val": val,
        "fold": folds(y, val, FOLDS, seed),
        "mask_kind": np.array([kind_names.index(k) for k in kinds], np.int8),
        "mask_kind_names": np.array(kind_names),
        "dark_light": dark_light_levels(n, seed).astype(np.float32),
        "dark_masked": (np.arange(n) % 2 == 0),
        "dark_light_range": np.array(DARK_LIGHT, np.float32),
        "source": np.array(prepared_npz.name),
    }
    blobs: list[tuple[str, bytes]] = []
    for v, name in enumerate(VIEWS):
        ok, buf = cv2.imencode(".webp", mosaic(faces[2 * v]), [cv2.IMWRITE_WEBP_QUALITY, 101])  # >100: lossless
        if not ok:
            raise RuntimeError(f"WebP encoding of the {name} view failed")
        blobs.append((f"{name}.webp", buf.tobytes()))
        _LOGGER.info("%s view: %.1f MB lossless", name, len(buf) / 1e6)
    out.mkdir(parents=True, exist_ok=True)
    chunks: list[list[tuple[str, bytes]]] = [[]]
    for name, blob in blobs:
        if chunks[-1] and sum(len(b) for _, b in chunks[-1]) + len(blob) > chunk_mb * 1e6:
            chunks.append([])
        chunks[-1].append((name, blob))
    dirs = []
    for c, chunk in enumerate(chunks, 1):
        folder = out / f"p{c}"
        folder.mkdir(exist_ok=True)
        for name, blob in chunk:
            (folder / name).write_bytes(blob)
        dirs.append(folder)
    np.savez_compressed(out / "p1" / "meta.npz", n=n, **meta)
    return dirs


def load_pack(pack_dir: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(uint8 [3, N, 48, 48] faces, meta) from a pack folder holding p1, p2, … (as carried)."""
    import cv2

    meta_path = next(pack_dir.glob("p*/meta.npz"))
    meta = dict(np.load(meta_path))
    n = int(meta["n"])
    faces = np.zeros((len(VIEWS), n, TILE, TILE), np.uint8)
    for v, name in enumerate(VIEWS):
        found = list(pack_dir.glob(f"p*/{name}.webp"))
        if not found:
            raise FileNotFoundError(f"{pack_dir}: no {name}.webp in any p*/ folder: carry every chunk `pack` wrote")
        image = cv2.imdecode(np.frombuffer(found[0].read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
        if image.ndim == 3:
            image = image[..., 0]
        faces[v] = unmosaic(image, n)
    return faces, meta


# ---------------------------------------------------------------------------------------------
# Networks (plain PyTorch, so the same file trains on the CPU here and on the GPU there)
# ---------------------------------------------------------------------------------------------


def build_net(arch: str):  # noqa: ANN201 - torch is imported lazily
    import torch
    from torch import nn

    class PreActBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, drop: float) -> None:
            super().__init__()
            self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.drop = nn.Dropout(drop)
            self.short = None if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            o = torch.relu(self.bn1(x))
            short = x if self.short is None else self.short(o)
            o = self.conv1(o)
            o = self.conv2(self.drop(torch.relu(self.bn2(o))))
            return o + short

    class WideResNet(nn.Module):
        """Pre-activation ResNet on the native 48×48 face (no stem stride): 48 → 24 → 12 → 6, 64 to 512 wide."""

        def __init__(self, widths=(64, 128, 256, 512), depth=(2, 2, 2, 2), drop: float = 0.1) -> None:
            super().__init__()
            layers = [nn.Conv2d(1, widths[0], 3, 1, 1, bias=False)]
            cin = widths[0]
            for i, (w, d) in enumerate(zip(widths, depth)):
                for j in range(d):
                    layers.append(PreActBlock(cin, w, 2 if (j == 0 and i > 0) else 1, drop))
                    cin = w
            layers += [nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3)]
            self.body = nn.Sequential(*layers)
            self.head = nn.Linear(cin, 7)
            self.input_size = 48

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x))

    class LayerNorm2d(nn.LayerNorm):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    class ConvNeXtBlock(nn.Module):
        def __init__(self, dim: int, drop_path: float) -> None:
            super().__init__()
            self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
            self.norm = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
            self.gamma = nn.Parameter(torch.full((dim,), 1e-6))
            self.drop_path = drop_path

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            o = self.mlp(self.norm(self.dw(x).permute(0, 2, 3, 1))) * self.gamma
            o = o.permute(0, 3, 1, 2)
            if self.training and self.drop_path > 0:
                keep = (torch.rand(x.shape[0], 1, 1, 1, device=x.device) > self.drop_path).to(o.dtype)
                o = o * keep / (1 - self.drop_path)
            return x + o

    class ConvNeXt(nn.Module):
        """ConvNeXt-style on the face upsampled to 96×96: stem /2 → 48, then 24, 12, 6; depths 2-2-6-2."""

        def __init__(self, dims=(80, 160, 320, 640), depths=(2, 2, 6, 2), drop_path: float = 0.15) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, dims[0], 2, 2), LayerNorm2d(dims[0]))
            total, k = sum(depths), 0
            stages = []
            for i, (dim, d) in enumerate(zip(dims, depths)):
                blocks = [] if i == 0 else [LayerNorm2d(dims[i - 1]), nn.Conv2d(dims[i - 1], dim, 2, 2)]
                for _ in range(d):
                    blocks.append(ConvNeXtBlock(dim, drop_path * k / max(total - 1, 1)))
                    k += 1
                stages.append(nn.Sequential(*blocks))
            self.stages = nn.Sequential(*stages)
            self.norm = nn.LayerNorm(dims[-1])
            self.head = nn.Linear(dims[-1], 7)
            self.input_size = 96

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.norm(self.stages(self.stem(x)).mean(dim=(2, 3))))

    class VGG(nn.Module):
        """VGG-style (as the strongest published FER2013 single networks): three 3×3 convolutions per stage,
        BatchNorm, max-pool; 48 → 24 → 12 → 6 → 3, 64 to 512 wide; global pool and dropout."""

        def __init__(self, widths=(64, 128, 256, 512), per_stage: int = 3) -> None:
            super().__init__()
            layers, cin = [], 1
            for w in widths:
                for _ in range(per_stage):
                    layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                    cin = w
                layers.append(nn.MaxPool2d(2))
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.4)]
            self.body = nn.Sequential(*layers)
            self.head = nn.Linear(cin, 7)
            self.input_size = 48

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x))

    nets = {"wrn": WideResNet, "convnext": ConvNeXt, "vgg": VGG}
    if arch not in nets:
        raise ValueError(f"unknown teacher architecture {arch!r}: one of {', '.join(nets)}")
    return nets[arch]()


# ---------------------------------------------------------------------------------------------
# Training one teacher (GPU there; a few steps on the CPU here to test the script)
# ---------------------------------------------------------------------------------------------


def augment(faces, size: int, gen, train: bool):  # noqa: ANN001, ANN201
    """uint8 [B, 48, 48] on the device → float [B, 1, size, size]: random similarity warp, photometric jitter
    and erasing when training; a plain resize otherwise. Normalised to about zero mean, unit spread."""
    import torch
    from torch import nn

    x = faces[:, None].float() / 255.0
    b, dev = x.shape[0], x.device
    if train:
        a = (torch.rand(b, device=dev, generator=gen) * 2 - 1) * math.radians(12)
        s = 1 + (torch.rand(b, device=dev, generator=gen) * 2 - 1) * 0.12
        t = (torch.rand(b, 2, device=dev, generator=gen) * 2 - 1) * 0.12
        theta = torch.stack([torch.stack([torch.cos(a) / s, -torch.sin(a) / s, t[:, 0]], 1),
                             torch.stack([torch.sin(a) / s, torch.cos(a) / s, t[:, 1]], 1)], 1)
        grid = nn.functional.affine_grid(theta, [b, 1, size, size], align_corners=False)
        x = nn.functional.grid_sample(x, grid, padding_mode="border", align_corners=False)
        contrast = 1 + (torch.rand(b, 1, 1, 1, device=dev, generator=gen) * 2 - 1) * 0.3
        bright = (torch.rand(b, 1, 1, 1, device=dev, generator=gen) * 2 - 1) * 0.12
        mean = x.mean(dim=(2, 3), keepdim=True)
        x = ((x - mean) * contrast + mean + bright).clamp(0, 1)
        # random erasing: one rectangle per face, half the faces
        h = (torch.rand(b, device=dev, generator=gen) * 0.3 + 0.1) * size
        w = (torch.rand(b, device=dev, generator=gen) * 0.3 + 0.1) * size
        cy = torch.rand(b, device=dev, generator=gen) * size
        cx = torch.rand(b, device=dev, generator=gen) * size
        yy = torch.arange(size, device=dev).view(1, size, 1)
        xx = torch.arange(size, device=dev).view(1, 1, size)
        box = ((yy - cy.view(b, 1, 1)).abs() < h.view(b, 1, 1) / 2) & ((xx - cx.view(b, 1, 1)).abs() < w.view(b, 1, 1) / 2)
        box &= (torch.rand(b, 1, 1, device=dev, generator=gen) < 0.5)
        x = torch.where(box[:, None], torch.rand(b, 1, 1, 1, device=dev, generator=gen), x)
    elif size != x.shape[-1]:
        x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x - 0.5) / 0.25


def predict(model, faces, size: int, batch: int = 2048):  # noqa: ANN001, ANN201
    """float32 [3, N, 7] softmax of each view, averaged with its mirror image."""
    import torch

    model.eval()
    out = torch.zeros(faces.shape[0], faces.shape[1], 7, device=faces.device)
    with torch.no_grad(), torch.autocast(faces.device.type, dtype=torch.bfloat16, enabled=faces.device.type == "cuda"):
        for v in range(faces.shape[0]):
            for s in range(0, faces.shape[1], batch):
                chunk = faces[v, s : s + batch]
                for mirrored in (chunk, chunk.flip(-1)):
                    out[v, s : s + batch] += torch.softmax(model(augment(mirrored, size, None, False)).float(), dim=1) / 2
    return out.cpu().numpy()


def train_one(arch: str, fold: int, pack_dir: Path, out: Path, deadline: float, seed: int,
              max_steps: int | None = None, batch: int = 256) -> dict:
    """Train one teacher on every training face outside `fold` until `deadline` (time.time()); write
    out/{arch}_{fold}.npz with its probabilities and return its report."""
    import torch

    start = time.time()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed * 100 + fold)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    faces_np, meta = load_pack(pack_dir)
    faces = torch.from_numpy(faces_np).to(dev)
    targets = torch.from_numpy(meta["targets"]).float().to(dev)
    train_idx = torch.from_numpy(np.flatnonzero((meta["fold"] >= 0) & (meta["fold"] != fold))).to(dev)
    model = build_net(arch).to(dev).to(memory_format=torch.channels_last)
    ema = build_net(arch).to(dev).to(memory_format=torch.channels_last)
    ema.load_state_dict(model.state_dict())
    for p in ema.parameters():
        p.requires_grad_(False)
    # weights and BatchNorm statistics averaged together (the counters are copied at the end)
    live = [t for t in model.state_dict().values() if t.is_floating_point()]
    averaged = [t for t in ema.state_dict().values() if t.is_floating_point()]
    mix = np.random.default_rng(seed * 100 + fold)
    decay_params = [p for n, p in model.named_parameters() if p.ndim > 1]
    other_params = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay_params, "weight_decay": 0.05}, {"params": other_params, "weight_decay": 0.0}],
                            lr=2e-3, betas=(0.9, 0.999))
    gen = torch.Generator(device=dev).manual_seed(seed * 100 + fold)
    size = model.input_size
    steps_per_epoch = math.ceil(len(train_idx) / batch)
    warmup = 2 * steps_per_epoch
    planned_epochs, epoch, step, history = None, 0, 0, []
    peak_lr = 2e-3

    def lr_at(step: int, total: int) -> float:
        if step < warmup:
            return peak_lr * (step + 1) / warmup
        return peak_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(total - warmup, 1))))

    while True:
        t0 = time.time()
        model.train()
        order = train_idx[torch.randperm(len(train_idx), device=dev, generator=gen)]
        total_loss = torch.zeros((), device=dev)
        for b in range(0, len(order), batch):
            idx = order[b : b + batch]
            view = torch.randint(0, len(VIEWS), (len(idx),), device=dev, generator=gen)
            x = faces[view, idx]
            flip = torch.rand(len(idx), device=dev, generator=gen) < 0.5
            x = torch.where(flip[:, None, None], x.flip(-1), x)
            x = augment(x, size, gen, True).contiguous(memory_format=torch.channels_last)
            t = targets[idx]
            if mix.random() < 0.5:  # mixup on half the batches
                lam = float(mix.beta(0.4, 0.4))
                perm = torch.randperm(len(idx), device=dev, generator=gen)
                x, t = lam * x + (1 - lam) * x[perm], lam * t + (1 - lam) * t[perm]
            total = (planned_epochs or 10_000) * steps_per_epoch
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                logits = model(x)
            loss = -(t * torch.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                torch._foreach_lerp_(averaged, live, 1.0 - min(0.999, (1 + step) / (10 + step)))
                total_loss += loss.detach()
            step += 1
            if max_steps is not None and step >= max_steps:
                break
        epoch += 1
        seconds = time.time() - t0
        remaining = deadline - time.time()
        fits = epoch + int(min(remaining / max(seconds, 1e-3), 1e6))
        planned_epochs = fits if planned_epochs is None else min(planned_epochs, fits)
        batches = math.ceil(len(order) / batch) if max_steps is None else max(1, min(step, math.ceil(len(order) / batch)))
        history.append({"epoch": epoch, "loss": round(float(total_loss) / batches, 4), "seconds": round(seconds, 2), "planned": planned_epochs})
        if max_steps is not None and step >= max_steps or epoch >= planned_epochs or remaining < seconds:
            break
    train_seconds = time.time() - start
    for name, t in ema.state_dict().items():
        if not t.is_floating_point():
            t.copy_(model.state_dict()[name])
    probs = predict(ema, faces, size)
    y, val = meta["y"].astype(np.int64), meta["val"]
    held = meta["fold"] == fold
    report = {
        "arch": arch, "fold": fold, "seed": seed, "input": size, "epochs": epoch, "steps": step, "batch": batch,
        "params": int(sum(p.numel() for p in model.parameters())), "train_seconds": round(train_seconds, 1),
        "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
        "val": {v: round(float((probs[i, val].argmax(1) == y[val]).mean()), 4) for i, v in enumerate(VIEWS)},
        "held_out_fold": {v: round(float((probs[i, held].argmax(1) == y[held]).mean()), 4) for i, v in enumerate(VIEWS)},
        "history": history,
    }
    np.savez(out / f"{arch}_{fold}.npz", probs=probs.astype(np.float16))
    (out / f"{arch}_{fold}.json").write_text(json.dumps(report))
    return report


def bench(archs: tuple[str, ...], batch: int, steps: int, n_train: int) -> dict[str, dict]:
    """Training throughput of each architecture alone on this machine (random faces): ms per step and
    seconds per epoch of n_train faces, to size a run before spending the deadline on it."""
    import torch

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    faces = torch.randint(0, 256, (batch, TILE, TILE), dtype=torch.uint8, device=dev)
    target = torch.softmax(torch.randn(batch, 7, device=dev), 1)
    gen = torch.Generator(device=dev).manual_seed(0)
    out = {}
    for arch in archs:
        model = build_net(arch).to(dev).to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for i in range(steps + 3):
            if i == 3:
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            x = augment(faces, model.input_size, gen, True).contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                logits = model(x)
            loss = -(target * torch.log_softmax(logits.float(), 1)).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        ms = (time.perf_counter() - t0) / steps * 1000
        out[arch] = {"ms_per_step": round(ms, 2), "s_per_epoch": round(ms / 1000 * n_train / batch, 2), "batch": batch,
                     "params": int(sum(p.numel() for p in model.parameters()))}
        _LOGGER.info("%s: %s", arch, out[arch])
    return out


def choose_archs(archs: tuple[str, ...], speeds: dict[str, dict], n_folds: int, seconds: float,
                 min_epochs: int) -> tuple[tuple[str, ...], dict]:
    """The longest prefix of `archs` (in order of preference) whose teachers, all folds sharing the GPU,
    each get at least min_epochs in `seconds` (from their measured seconds per epoch); the first alone if none."""
    chosen = archs[:1]
    for k in range(len(archs), 0, -1):
        per_round = n_folds * sum(speeds[a]["s_per_epoch"] for a in archs[:k])
        if seconds / per_round >= min_epochs:
            chosen = archs[:k]
            break
    per_round = n_folds * sum(speeds[a]["s_per_epoch"] for a in chosen)
    return chosen, {"speeds": speeds, "seconds": round(seconds, 1), "min_epochs": min_epochs, "chosen": list(chosen),
                    "expected_epochs": round(seconds / per_round, 1)}


def train_all(pack_dir: Path, out: Path, minutes: float, archs: tuple[str, ...], only_folds: list[int] | None, seed: int,
              max_steps: int | None = None, batch: int = 256, min_epochs: int = 0) -> dict:
    """All (arch, fold) teachers at once, one process each, sharing one deadline; then one npz + one json.
    The folds are the pack's (every one unless only_folds names some, for a smoke test)."""
    out.mkdir(parents=True, exist_ok=True)
    meta = np.load(next(pack_dir.glob("p*/meta.npz")))
    n_folds = int(meta["fold"].max()) + 1
    chosen = list(range(n_folds)) if not only_folds else only_folds
    start = time.time()
    sizing = None
    if min_epochs:
        n_train = int(((meta["fold"] >= 0) & (meta["fold"] != 0)).sum())
        speeds = bench(archs, batch, 15, n_train)
        archs, sizing = choose_archs(archs, speeds, len(chosen), 60 * minutes - (time.time() - start), min_epochs)
        _LOGGER.info("sizing: %s", sizing)
    work = out / "parts"
    work.mkdir(exist_ok=True)
    deadline = start + 60 * minutes
    procs = []
    for arch in archs:
        for fold in chosen:
            cmd = [sys.executable, "-m", "export.teachers", "one", "--arch", arch, "--fold", str(fold), "--pack", str(pack_dir),
                   "--out", str(work), "--deadline", str(deadline), "--seed", str(seed), "--batch", str(batch)]
            if max_steps is not None:
                cmd += ["--max-steps", str(max_steps)]
            log = open(work / f"{arch}_{fold}.log", "w")  # noqa: SIM115 - closed below
            procs.append((arch, fold, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "2"}), log))
    reports, failed = [], []
    for arch, fold, proc, log in procs:
        rc = proc.wait()
        log.close()
        if rc != 0:
            failed.append(f"{arch}/{fold} exited {rc}: {(work / f'{arch}_{fold}.log').read_text()[-2000:]}")
            continue
        reports.append(json.loads((work / f"{arch}_{fold}.json").read_text()))
    names = [f"{r['arch']}_{r['fold']}" for r in reports]
    probs = np.stack([np.load(work / f"{n}.npz")["probs"] for n in names]) if names else np.zeros((0,))
    np.savez_compressed(out / "teacher_probs.npz", probs=probs, names=np.array(names))
    summary = {"teachers": reports, "failed": failed, "minutes": minutes, "seed": seed, "folds": n_folds, "sizing": sizing}
    (out / "teachers.json").write_text(json.dumps(summary, indent=1))
    logs = "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in sorted(work.glob("*.log")))
    (out / "logs.txt").write_text(logs)
    for r in reports:
        _LOGGER.info("%s fold %d: %d epochs in %.0f s, val %s", r["arch"], r["fold"], r["epochs"], r["train_seconds"], r["val"])
    for f in failed:
        _LOGGER.error("%s", f)
    return summary


def labels_key(y: np.ndarray) -> str:
    """What ties soft targets to the prepared data they were made for: the sha256 of its labels in order."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(y, dtype=np.int64).tobytes()).hexdigest()


def accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    return round(float((probs.argmax(-1) == y).mean()), 4) if len(y) else float("nan")


def combine(run_dir: Path, meta_npz: Path, out_dir: Path, light_bins: int = 3) -> dict:
    """Out-of-fold soft targets [3, N, 7] from a `train` run's teacher_probs.npz, and the figures.

    A training face in fold f gets the mean of the teachers trained without fold f (one per
    architecture); a validation face gets the mean of all teachers (it is only reported, never trained on)."""
    run = np.load(run_dir / "teacher_probs.npz")
    probs, names = run["probs"].astype(np.float32), [str(n) for n in run["names"]]
    meta = dict(np.load(meta_npz))
    y, val, fold = meta["y"].astype(np.int64), meta["val"].astype(bool), meta["fold"]
    model_fold = np.array([int(n.rsplit("_", 1)[1]) for n in names])
    model_arch = np.array([n.rsplit("_", 1)[0] for n in names])
    targets = np.zeros(probs.shape[1:], np.float32)
    for f in np.unique(fold[fold >= 0]):
        sel = model_fold == f
        if not sel.any():
            raise ValueError(f"{run_dir}: no teacher was trained without fold {f}, so its faces would get no out-of-fold target")
        targets[:, fold == f] = probs[sel][:, :, fold == f].mean(axis=0)
    targets[:, val] = probs[:, :, val].mean(axis=0)

    def per_view(p: np.ndarray, rows: np.ndarray) -> dict[str, float]:
        return {v: accuracy(p[i, rows], y[rows]) for i, v in enumerate(VIEWS)}

    kinds = [str(k) for k in meta["mask_kind_names"]]
    light = meta["dark_light"]
    edges = np.exp(np.linspace(*np.log(meta["dark_light_range"]), light_bins + 1))
    ensemble = targets  # on validation faces: all teachers
    figures = {
        "validation_faces": int(val.sum()),
        "teachers": {n: per_view(probs[i], val) for i, n in enumerate(names)},
        "architectures": {a: per_view(probs[model_arch == a].mean(axis=0), val) for a in sorted(set(model_arch))},
        "ensemble": per_view(ensemble, val),
        "ensemble_masked_by_kind": {k: accuracy(ensemble[1, val & (meta["mask_kind"] == i)], y[val & (meta["mask_kind"] == i)])
                                    for i, k in enumerate(kinds)},
        "ensemble_dark_by_light": {f"{lo:.3f}-{hi:.3f}": accuracy(ensemble[2, val & (light >= lo) & (light < hi)], y[val & (light >= lo) & (light < hi)])
                                   for lo, hi in zip(edges[:-1], edges[1:])},
        "ensemble_dark_masked": accuracy(ensemble[2, val & meta["dark_masked"]], y[val & meta["dark_masked"]]),
        "ensemble_dark_unmasked": accuracy(ensemble[2, val & ~meta["dark_masked"]], y[val & ~meta["dark_masked"]]),
        "out_of_fold_targets_on_training_faces": per_view(targets, ~val),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "soft_targets.tmp.npz"
    np.savez_compressed(tmp, probs=targets.astype(np.float16), labels_sha256=np.array(labels_key(y)),
                        source=meta["source"], teachers=np.array(names))
    tmp.replace(out_dir / "soft_targets.npz")
    return figures


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(prog="python -m export.teachers", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="write the prepared training views as carry-sized lossless chunks")
    p.add_argument("--prepared", type=Path, required=True, help="cache/prepared.*.npz from export.dataset.prepare")
    p.add_argument("--out", type=Path, default=Path("cache/gpu-pack"))
    p.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("train", help="train every (architecture, fold) teacher at once until a deadline (GPU)")
    t.add_argument("--pack", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--minutes", type=float, default=6.0, help="wall-clock budget for training, predictions come after")
    t.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    t.add_argument("--only-folds", type=int, nargs="*", default=None, help="train only the teachers that hold out these folds")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--max-steps", type=int, default=None, help="stop each teacher after this many steps (a CPU smoke test)")
    t.add_argument("--batch", type=int, default=256)
    t.add_argument("--min-epochs", type=int, default=0,
                   help="time each architecture first and keep the longest prefix of --archs whose teachers all get this many epochs")
    c = sub.add_parser("targets", help="out-of-fold soft targets and validation figures from a train run (CPU)")
    c.add_argument("--run", type=Path, required=True, help="the folder `train` wrote (teacher_probs.npz)")
    c.add_argument("--meta", type=Path, default=Path("cache/gpu-pack/p1/meta.npz"))
    c.add_argument("--out", type=Path, required=True)
    b = sub.add_parser("bench", help="training throughput of each architecture alone (GPU)")
    b.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    b.add_argument("--batch", type=int, default=256)
    b.add_argument("--steps", type=int, default=20)
    b.add_argument("--train-faces", type=int, default=19_380, help="faces per epoch (three folds of four)")
    o = sub.add_parser("one", help="(internal) one teacher")
    o.add_argument("--arch", required=True, choices=ARCHS)
    o.add_argument("--fold", type=int, required=True)
    o.add_argument("--pack", type=Path, required=True)
    o.add_argument("--out", type=Path, required=True)
    o.add_argument("--deadline", type=float, required=True)
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--max-steps", type=int, default=None)
    o.add_argument("--batch", type=int, default=256)
    args = parser.parse_args(argv)
    if args.command == "pack":
        for folder in pack(args.prepared, args.out, args.seed):
            size = sum(f.stat().st_size for f in folder.iterdir())
            print(f"{folder}: {size / 2**20:.1f} MiB")
    elif args.command == "targets":
        figures = combine(args.run, args.meta, args.out)
        (args.out / "figures.json").write_text(json.dumps(figures, indent=1) + "\n")
        print(json.dumps(figures, indent=1))
    elif args.command == "bench":
        print(json.dumps(bench(tuple(args.archs), args.batch, args.steps, args.train_faces)))
    elif args.command == "train":
        summary = train_all(args.pack, args.out, args.minutes, tuple(args.archs), args.only_folds, args.seed, args.max_steps, args.batch,
                            args.min_epochs)
        return 1 if summary["failed"] else 0
    else:
        train_one(args.arch, args.fold, args.pack, args.out, args.deadline, args.seed, args.max_steps, args.batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
