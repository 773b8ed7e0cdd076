"""`python -m export enhancer`: train our low-light enhancer on paired dark renderings, export it, write models/.

The network (GainMapNet, ≈ 20 k parameters) sees only a 64×64 thumbnail of the frame and predicts a
32×32 grid of per-channel gains and a smoothing weight; edge/vision/enhance.apply_maps applies them at
full resolution. Training runs the same operations in torch (thumbnail by cv2 INTER_AREA in the data
loader, bilinear upsampling, the same 5×5 Gaussian), supervised by the bright originals of dark
renderings (export/darken.render_dark_random: 2–20 % light, shot + read noise, 8-bit, casts, blur)
of FER2013 Training faces and of the training split of ../shared/data/faces (the benchmark split of
those photos, `photo_split`, is never trained on).

Export reuses export/convert: to_onnx, to_tflite (whose int8 file is kept in the work folder only
— the fp32 network costs well under a millisecond, see the card), then parity of ONNX and TFLite
against PyTorch on the maps and on enhanced frames, a sidecar, and the enhancer's manifest entries.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from edge.vision.enhance import ENHANCER_VERSION, SMOOTHING
from export.darken import render_dark_random

_LOGGER = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
SHARED_FACES = ROOT.parent / "shared" / "data" / "faces"
THUMB = 64
GRID = 32
MAX_LOG_GAIN = 2.5
"""Gains are exp(±2.5): 0.08× … 12×, enough for 2 % light (×5.9 in gamma space) under a strong cast."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class GainMapNet(nn.Module):
    """Thumbnail (BGR 0..255, N×3×64×64) → maps N×4×32×32: three channel gains and one smoothing weight.

    A small encoder to 8×8 with a global-context vector (how dark the whole frame is) added back,
    then a decoder to 32×32 with skips. Plain convolutions, ReLU, nearest upsampling and a global mean
    — ops that every runtime (onnxruntime, TFLite XNNPACK) runs fast.
    """

    def __init__(self, width: int = 16, levels: int = 1) -> None:
        super().__init__()
        w = width
        self.levels = levels
        self.e1 = nn.Conv2d(3, w, 3, stride=2, padding=1)  # 32
        self.e2 = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1)  # 16
        self.e3 = nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1)  # 8
        self.context = nn.Conv2d(2 * w, 2 * w, 1)
        self.d3 = nn.Conv2d(2 * w, 2 * w, 3, padding=1)
        self.d2 = nn.Conv2d(2 * w, w, 3, padding=1)
        self.d1 = nn.Conv2d(w, w, 3, padding=1)
        self.head = nn.Conv2d(w, 3 + levels, 1)
        mask = torch.tensor([1.0, 1.0, 1.0] + [0.0] * levels).view(1, 3 + levels, 1, 1)
        self.register_buffer("is_gain", mask, persistent=False)
        with torch.no_grad():  # start near the average answer: gain ×3, some smoothing
            self.head.weight.mul_(0.1)
            self.head.bias.copy_(torch.tensor([0.45, 0.45, 0.45] + [0.0] * levels))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image * (1.0 / 255.0)
        f1 = F.relu(self.e1(x))
        f2 = F.relu(self.e2(f1))
        f3 = F.relu(self.e3(f2))
        g = F.relu(self.context(f3.mean(dim=(2, 3), keepdim=True)))
        f3 = F.relu(self.d3(f3 + g))
        f2 = F.relu(self.d2(F.interpolate(f3, scale_factor=2.0, mode="nearest") + f2))
        f1 = F.relu(self.d1(F.interpolate(f2, scale_factor=2.0, mode="nearest") + f1))
        z = self.head(f1)
        # Channels 0-2 are gains, then the smoothing weights. Selected with a constant mask rather than
        # slices + concat: onnx2tf mis-converts a channel concat after slicing (wrong output shape).
        return self.is_gain * torch.exp(MAX_LOG_GAIN * torch.tanh(z)) + (1.0 - self.is_gain) * torch.sigmoid(z)


def _gaussian_kernels() -> list[tuple[int, torch.Tensor]]:
    out = []
    for ksize, sigma in SMOOTHING:
        k = cv2.getGaussianKernel(ksize, sigma).astype(np.float32)
        out.append((ksize, torch.from_numpy(k @ k.T)[None, None].repeat(3, 1, 1, 1)))
    return out


_KERNELS = _gaussian_kernels()


def apply_maps_torch(frame: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Differentiable twin of edge.vision.enhance.apply_maps: frame N×3×H×W in [0, 1]."""
    h, w = frame.shape[2:]
    grid = F.interpolate(maps, size=(h, w), mode="bilinear", align_corners=False)
    out = frame
    for level, (ksize, kernel) in enumerate(_KERNELS[: maps.shape[1] - 3]):
        pad = ksize // 2
        smooth = F.conv2d(F.pad(frame, (pad, pad, pad, pad), mode="reflect"), kernel, groups=3)
        out = out + grid[:, 3 + level : 4 + level] * (smooth - out)
    return (grid[:, :3] * out).clamp(0.0, 1.0)


def thumbnails(frames: np.ndarray) -> np.ndarray:
    """uint8 N×H×W×3 → float32 N×3×64×64, exactly as the device makes them."""
    return np.stack([cv2.resize(f, (THUMB, THUMB), interpolation=cv2.INTER_AREA) for f in frames]).transpose(0, 3, 1, 2).astype(np.float32)


# ---------------------------------------------------------------- data


def photo_paths(root: Path = SHARED_FACES) -> list[Path]:
    """The well-lit photos (the DICM pictures are real dim scenes with no bright original)."""
    return sorted(p for p in Path(root).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("dicm_"))


def photo_split(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """(train, benchmark): every third photo, in name order, is held out for the comparison."""
    return [p for i, p in enumerate(paths) if i % 3], [p for i, p in enumerate(paths) if i % 3 == 0]


def frame_640x480(path: Path) -> np.ndarray:
    """A photo as the camera would give it: centre crop to 4:3, resized to 640×480 (BGR uint8)."""
    from edge import images

    image = images.read(path)
    image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image
    h, w = image.shape[:2]
    if w * 3 > h * 4:
        nw = h * 4 // 3
        image = image[:, (w - nw) // 2 : (w - nw) // 2 + nw]
    else:
        nh = w * 3 // 4
        image = image[(h - nh) // 2 : (h - nh) // 2 + nh]
    return cv2.resize(image, (640, 480), interpolation=cv2.INTER_AREA)


class Pairs:
    """Random (dark, bright) training batches: FER2013 faces (gray as BGR) and crops of the training photos."""

    PHOTO_SIZES = ((120, 160, 12), (240, 320, 4), (480, 640, 1))
    """(height, width, batch): small crops for variety, a whole frame now and then for the device's scale."""

    def __init__(self, fer: np.ndarray, photos: list[np.ndarray], seed: int) -> None:
        self.fer, self.photos = fer, photos
        self.rng = np.random.default_rng(seed)

    def fer_batch(self, n: int = 48) -> tuple[np.ndarray, np.ndarray]:
        bright = self.fer[self.rng.integers(0, len(self.fer), n)]
        bright = np.repeat(bright[..., None], 3, axis=3)
        flip = self.rng.random(n) < 0.5
        bright[flip] = bright[flip, :, ::-1]
        dark = np.stack([render_dark_random(b[..., 0], self.rng) for b in bright])
        return np.repeat(dark[..., None], 3, axis=3), bright

    def photo_batch(self) -> tuple[np.ndarray, np.ndarray]:
        h, w, n = self.PHOTO_SIZES[self.rng.choice(3, p=[0.6, 0.3, 0.1])]
        bright = []
        for _ in range(n):
            frame = self.photos[self.rng.integers(len(self.photos))]
            scale = self.rng.uniform(max(h / 480, w / 640), 1.0)
            frame = cv2.resize(frame, (max(w, int(640 * scale)), max(h, int(480 * scale))), interpolation=cv2.INTER_AREA)
            y, x = self.rng.integers(0, frame.shape[0] - h + 1), self.rng.integers(0, frame.shape[1] - w + 1)
            crop = frame[y : y + h, x : x + w]
            bright.append(crop[:, ::-1] if self.rng.random() < 0.5 else crop)
        bright = np.stack(bright)
        return np.stack([render_dark_random(b, self.rng) for b in bright]), bright


def to_tensors(dark: np.ndarray, bright: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    thumb = torch.from_numpy(thumbnails(dark))
    d = torch.from_numpy(np.ascontiguousarray(dark.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0)
    b = torch.from_numpy(np.ascontiguousarray(bright.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0)
    return thumb, d, b


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


# ---------------------------------------------------------------- train


def train(args: argparse.Namespace) -> Path:
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    fer = np.load(args.fer)["x"]
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(fer))
    fer_train, fer_val = fer[order[: args.fer_faces]], fer[order[-500:]]
    train_photos, bench_photos = photo_split(photo_paths(args.photos))
    _LOGGER.info("training on %d FER2013 faces + %d photos (held out for the benchmark: %s)",
                 len(fer_train), len(train_photos), ", ".join(p.name for p in bench_photos))
    pairs = Pairs(fer_train, [frame_640x480(p) for p in train_photos], args.seed)
    val = Pairs(fer_val, [], args.seed + 1)
    val_batches = [val.fer_batch(100) for _ in range(2)]

    model = GainMapNet(args.width, args.levels)
    if args.init:  # start from an earlier run: every layer that fits, the head's gain/first-weight channels
        init = torch.load(args.init, weights_only=False)["model"]
        own = model.state_dict()
        for key, value in init.items():
            if own[key].shape == value.shape:
                own[key] = value
            else:
                n = min(own[key].shape[0], value.shape[0])
                own[key][:n] = value[:n]
                if key == "head.bias":
                    own[key][n:] = -3.0  # new smoothing levels start almost off: the run starts where the old one ended
        model.load_state_dict(own)
        _LOGGER.info("initialised from %s", args.init)
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    args.work.mkdir(parents=True, exist_ok=True)
    ckpt = args.work / "enhancer.pt"
    step, history = 0, []
    if args.resume and ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        step, history = state["step"], state["history"]
        _LOGGER.info("resumed at step %d", step)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    for _ in range(step):
        scheduler.step()
    started, cpu_started = time.perf_counter(), time.process_time()
    running = 0.0
    while step < args.steps:
        model.train()
        dark, bright = pairs.photo_batch() if step % 2 else pairs.fer_batch()
        thumb, d, b = to_tensors(dark, bright)
        out = apply_maps_torch(d, model(thumb))
        loss = F.l1_loss(out, b) + F.mse_loss(out, b)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        scheduler.step()
        step += 1
        value = loss.item()
        running = 0.98 * running + 0.02 * value if step > 1 else value
        if step % args.log_every == 0 or step == args.steps:
            model.eval()
            with torch.no_grad():
                scores = []
                for vd, vb in val_batches:
                    t, dd, _ = to_tensors(vd, vb)
                    enhanced = (apply_maps_torch(dd, model(t)).numpy() * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
                    scores += [psnr(e, v) for e, v in zip(enhanced, vb)]
            history.append({"step": step, "loss": round(running, 5), "val_psnr_fer": round(float(np.mean(scores)), 2),
                            "s": round(time.perf_counter() - started, 1)})
            _LOGGER.info("step %d: loss %.4f, val PSNR (FER faces, 2–20 %% light) %.2f dB, %.0f s",
                         step, running, history[-1]["val_psnr_fer"], time.perf_counter() - started)
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(), "step": step,
                        "history": history, "width": args.width, "levels": args.levels, "seed": args.seed,
                        "fer_faces": args.fer_faces, "cpu_s": round(time.process_time() - cpu_started, 1)}, tmp)
            tmp.replace(ckpt)
    return ckpt


# ---------------------------------------------------------------- export


def _maps_parity(reference: np.ndarray, candidate: np.ndarray, label: str, limit: float) -> dict[str, float]:
    from export.convert import ParityError

    diff = float(np.abs(reference - candidate).max())
    if reference.shape != candidate.shape or diff > limit:
        raise ParityError(f"{label}: maps differ from the reference by {diff:.3g} (limit {limit:g}), shapes {candidate.shape} vs {reference.shape}")
    _LOGGER.info("parity ok: %s max |maps diff| %.2g (limit %g)", label, diff, limit)
    return {"max_abs_diff": diff, "limit": limit}


PARITY_LIMIT = 1e-3
"""Largest allowed difference of any gain or weight between formats (gains are ≈ 1–10: < 0.1 % of a grey level)."""


def build(args: argparse.Namespace) -> dict[str, Any]:
    from edge.vision.enhance import LearnedEnhancer
    from export import convert

    torch.set_num_threads(1)
    state = torch.load(args.work / "enhancer.pt", weights_only=False)
    levels = state.get("levels", 1)
    model = GainMapNet(state["width"], levels)
    model.load_state_dict(state["model"])
    model.eval()

    rng = np.random.default_rng(11)
    fer = np.load(args.fer)["x"]
    pick = fer[rng.choice(len(fer), 200, replace=False)]
    darks = [np.repeat(render_dark_random(f, rng)[..., None], 3, axis=2) for f in pick]
    train_photos, _ = photo_split(photo_paths(args.photos))
    darks += [render_dark_random(frame_640x480(p), rng) for p in train_photos]
    thumbs = thumbnails(np.stack([cv2.resize(d, (THUMB, THUMB), interpolation=cv2.INTER_AREA) for d in darks]))
    samples = [{"image": t[None]} for t in thumbs]

    work = args.work
    fp32_onnx = convert.to_onnx(model, torch.from_numpy(thumbs[:1]), work / "enhancer.fp32.onnx", ["image"], ["maps"])
    tfl = convert.to_tflite(fp32_onnx, work / "enhancer.fp32.tflite", work / "enhancer.int8.tflite", samples[:100])
    out_shape = tfl["fp32"]["outputs"][0]["shape"]
    layout = "NHWC" if out_shape[-1] == 3 + levels and out_shape[1] != 3 + levels else "NCHW"

    with torch.no_grad():
        reference = np.concatenate([model(torch.from_numpy(s["image"])).numpy() for s in samples])
    onnx_run = convert.onnx_scores_fn(fp32_onnx)
    parity = {"onnx-fp32": _maps_parity(reference, np.concatenate([onnx_run(s) for s in samples]), "onnx fp32 vs torch", PARITY_LIMIT)}
    for key in ("fp32", "int8"):
        run = convert.tflite_scores_fn(tfl[key])
        maps = np.concatenate([run(s) for s in samples])
        maps = maps.transpose(0, 3, 1, 2) if layout == "NHWC" else maps
        if key == "fp32":
            parity["tflite-fp32"] = _maps_parity(reference, maps, "tflite fp32 vs torch", PARITY_LIMIT)
        else:  # reported, not shipped
            parity["tflite-int8"] = {"max_abs_diff": float(np.abs(reference - maps).max()), "limit": None}

    files = {
        "onnx-fp32": {"file": "enhancer.fp32.onnx", "path": fp32_onnx},
        "tflite-fp32": {"file": "enhancer.fp32.tflite", "path": Path(tfl["fp32"]["path"]),
                        "tensors": {"image": tfl["fp32"]["inputs"][0]["tensor_name"]}, "output_layout": layout},
    }
    sidecar = {
        "name": "enhancer",
        "kind": "lowlight-enhancer",
        "description": f"GainMapNet: 64×64 thumbnail → 32×32 per-channel gains + {levels} smoothing weight(s), applied at full resolution",
        "preprocessing": ENHANCER_VERSION,
        "inputs": [{"name": "image", "shape": [1, 3, THUMB, THUMB], "layout": "NCHW", "dtype": "float32",
                    "normalisation": "none: BGR 0..255 thumbnail (cv2.INTER_AREA of the whole frame), scaled inside the graph"}],
        "outputs": [{"name": "maps", "shape": [1, 3 + levels, GRID, GRID],
                     "channels": ["gain_b", "gain_g", "gain_r"] + [f"smooth_weight_{k}x{k}_sigma{s:g}" for k, s in SMOOTHING[:levels]]}],
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "training_data": (f"dark renderings (export/darken.render_dark_random: 2–20 % light, shot + read noise, 8-bit, colour casts, "
                          f"blur 1 in 4) of {state['fer_faces']} FER2013 Training faces and {len(train_photos)} photos of "
                          "../shared/data/faces (every third photo held out for the benchmark), bright originals as targets"),
        "training": {"steps": state["step"], "cpu_s": state.get("cpu_s"), "history": state["history"][-1:]},
        "parity": parity,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    shipped = {}
    for variant, entry in files.items():
        target = args.out / entry["file"]
        target.write_bytes(Path(entry["path"]).read_bytes())
        shipped[variant] = {k: v for k, v in entry.items() if k != "path"} | {"sha256": convert.sha256_file(target), "bytes": target.stat().st_size}
    sidecar["files"] = shipped
    side_path = args.out / "enhancer.json"
    side_path.write_text(json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n")
    from export.build import update_manifest

    update_manifest(args.out, ["enhancer.json", *(e["file"] for e in files.values())])

    # The shipped files through the device code, on frames: both runtimes must give the same picture.
    frames = [darks[i] for i in range(0, len(darks), 20)]
    outs = {}
    for backend in ("onnx", "tflite"):
        enhancer = LearnedEnhancer(side_path, backend=backend)
        outs[backend] = [enhancer.enhance(f) for f in frames]
        enhancer.close()
    worst = min(psnr(a, b) for a, b in zip(outs["onnx"], outs["tflite"]))
    if worst < 45.0:
        raise convert.ParityError(f"enhanced frames differ between onnx and tflite: worst PSNR {worst:.1f} dB (need ≥ 45)")
    _LOGGER.info("device path: onnx and tflite enhanced frames agree to ≥ %.1f dB; wrote %s", worst, side_path)
    return sidecar


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from export.dataset import SHARED_FER

    parser.add_argument("step", choices=("train", "build", "all"), help="train the network, export it to models/, or both")
    parser.add_argument("--fer", type=Path, default=SHARED_FER / "fer2013_train.npz")
    parser.add_argument("--photos", type=Path, default=SHARED_FACES)
    parser.add_argument("--work", type=Path, default=Path("cache/enhancer"))
    parser.add_argument("--out", type=Path, default=ROOT / "models")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--levels", type=int, default=len(SMOOTHING), choices=range(1, len(SMOOTHING) + 1), help="smoothing levels the network weighs")
    parser.add_argument("--init", type=Path, default=None, help="start from this checkpoint's weights (e.g. a run with fewer levels)")
    parser.add_argument("--fer-faces", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--log-every", type=int, default=250)
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --work")


def main(args: argparse.Namespace) -> int:
    if args.step in ("train", "all"):
        train(args)
    if args.step in ("build", "all"):
        build(args)
    return 0
