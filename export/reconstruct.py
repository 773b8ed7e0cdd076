"""`python -m export reconstruct`: lower-face reconstruction, then classify (issue #20, item 1; after Shaikh et al.).

The published method fills in the masked lower half with a generative model and then reads the whole
face. Here:

1. **Train** a compact U-Net inpainter (InpaintNet, ~0.3 M parameters) on FER2013 Training faces, masked on
   the fly by our generator (export/masks.py: surgical, cloth, N95, occlusion, drawn as for the masked test
   set) → the unmasked face. Pairs are in the **device's aligned 48×48 frame**: each Training face is aligned
   on the face mesh found on its clean image (edge.vision.upperface, the one alignment; faces without a usable
   mesh are read whole, as sample_or_whole does), and its masked copy is warped by the same matrix, so input and
   target are pixel-aligned. (On the glasses the masked face is aligned on the mesh found on the masked image;
   for training pairs the clean mesh is used so input and target line up.) A share of every batch is left
   unmasked (the inpainter should leave a bare face alone). Loss: L1, weighted up on the mask's pixels, plus L1
   on the Sobel gradients (an edge term). The net predicts a face and a gate, and outputs
   gate·prediction + (1 − gate)·input, so it learns where to paint. Our validation split (10 % of Training,
   export.dataset.stratified_split) is held out for the training log; PublicTest is never trained on.
   Checkpointed; --minutes is the training budget (a rerun with --resume continues up to it).
2. **Export** it to ONNX (float32, input/output uint8-valued float [N, 1, 48, 48]).
3. **Evaluate** through the device pipeline (Pipeline.analyze: mesh, the one alignment, night rule, features) on
   PublicTest unmasked and masked (cache/publictest_masked.npz, `python -m export mask` seed 2013; the mask
   kind of each face is re-drawn from that seed, as mask_batch drew it): for every sample the shipped int8
   model reads, just before the model, it reads (a) the sample as given (the baseline: reading the upper face
   directly) and (b) the sample with its face inpainted and the landmark branch's HOG recomputed from the
   inpainted face (`Reconstructing`). Same faces, same mesh, one pass.
4. **Cost** per face, onnxruntime, 1 thread, batch 1: the inpainter, the HOG recomputation, and the reader
   (ExpressionModel.logits of one sample: the face and its mirror, as on the glasses).
5. **Verdict**: the inpainter ships (models/inpainter.fp32.onnx) only if its accuracy per millisecond on masked
   faces beats the baseline's; the figures go to models/results/reconstruction.json and, through
   `python -m export.card`, the model card.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edge.errors import EdgeError
from edge.vision.upperface import SIZE, UpperFaceSample, align_matrix, landmark_features, warp, whole_matrix
from export.masks import SHIPPED_KINDS, MaskStyle, random_style

_LOGGER = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
RESULTS = MODELS / "results" / "reconstruction.json"
WORK = ROOT / "build" / "reconstruct"
SHIPPED = MODELS / "inpainter.fp32.onnx"
KINDS = tuple(k.value for k in SHIPPED_KINDS)
"""The mask kinds of the masked test set (drawn by the shipped generator, random_style)."""
TEST_SEED = 2013
"""The seed `python -m export mask` draws the masked test set's styles from (export/cli_mask.py)."""
TEST_SETS = {
    "unmasked": "../shared/data/fer2013/fer2013_publictest.npz",
    "masked": "cache/publictest_masked.npz",
}
"""name → npz, relative to the repository root (the model card's sets)."""
COMMAND = "python -m export reconstruct"

Inpaint = Callable[[np.ndarray], np.ndarray]
"""uint8 aligned faces [K, 48, 48] → uint8 inpainted faces [K, 48, 48]."""


# ------------------------------------------------------------------------------------------------
# Torch-free: the test set's mask kinds, training pairs, the device-side wrapper, tallies, verdict.


def drawn_styles(n: int, seed: int = TEST_SEED) -> list[MaskStyle]:
    """The style mask_batch(…, seed, fraction=1.0) drew for each of n faces (image i's rng is default_rng([seed, i]))."""
    return [random_style(np.random.default_rng([seed, i])) for i in range(n)]


def mask_kinds(n: int, seed: int = TEST_SEED) -> np.ndarray:
    """str [n]: the mask family of each face of a set masked by `python -m export mask --seed seed` (fraction 1)."""
    return np.array([s.kind.value for s in drawn_styles(n, seed)])


def alignments(images: np.ndarray, meshes: Sequence[np.ndarray | None]) -> np.ndarray:
    """float64 [N, 2, 3]: the matrix sample_or_whole warps each image by (its mesh's, or the whole image without one)."""
    return np.stack([align_matrix(m) if m is not None else whole_matrix(img.shape) for img, m in zip(images, meshes)])


def aligned(images: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """uint8 [N, 48, 48]: each image warped by its matrix (edge.vision.upperface.warp, the device's)."""
    return np.stack([warp(img, m) for img, m in zip(images, matrices)])


def training_pairs(images: np.ndarray, mesh_points: np.ndarray, matrices: np.ndarray, targets: np.ndarray, seed: int,
                   fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs uint8 [B,48,48], targets [B,48,48], mask region bool [B,48,48]) for one batch: `fraction` of the faces masked
    by our generator on their own mesh (NaN rows: canonical geometry), all warped into the aligned frame by their matrix."""
    from export.masks import mask_batch

    masked, _ = mask_batch(images, mesh_points, seed=seed, fraction=fraction)
    inputs = aligned(masked, matrices)
    return inputs, targets, inputs != targets


def inpainted_sample(sample: UpperFaceSample, face: np.ndarray) -> UpperFaceSample:
    """`sample` with its face replaced and the landmark branch's HOG recomputed from it (the landmarks stay)."""
    return UpperFaceSample(face=face, features=landmark_features(face, sample.landmarks), landmarks=sample.landmarks)


class Reconstructing:
    """Stands in for ExpressionModel.logits inside the device pipeline: reads every sample as given (returned, so the
    pipeline answers as the glasses do) and again with its face inpainted (kept in `last`)."""

    def __init__(self, logits: Callable[[Sequence[UpperFaceSample]], np.ndarray], inpaint: Inpaint) -> None:
        self._logits, self._inpaint = logits, inpaint
        self.last: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, samples: Sequence[UpperFaceSample]) -> np.ndarray:
        base = self._logits(samples)
        faces = self._inpaint(np.stack([s.face for s in samples]))
        self.last = (base, self._logits([inpainted_sample(s, f) for s, f in zip(samples, faces)]))
        return base


def read_both(pipeline: Any, x: np.ndarray, inpaint: Inpaint, lowlight: bool | None = None) -> dict[str, np.ndarray]:
    """Per image, as `export evaluate` reads it (largest face; a crop with no face found is read whole): the label of the
    sample as given ("baseline") and of it inpainted ("reconstructed"), and whether the face was aligned."""
    wrapper = Reconstructing(pipeline.expression.logits, inpaint)
    pipeline.expression.logits = wrapper  # the instance attribute shadows the method that predict() calls
    try:
        out = {"baseline": np.empty(len(x), np.int64), "reconstructed": np.empty(len(x), np.int64), "aligned": np.zeros(len(x), bool)}
        for i, image in enumerate(x):
            wrapper.last = None
            result = pipeline.analyze(image, lowlight=lowlight, assume_face=True)
            k = max(range(len(result.faces)), key=lambda j: result.faces[j].box[2] * result.faces[j].box[3])
            base, rec = wrapper.last
            out["baseline"][i], out["reconstructed"][i] = int(base[k].argmax()), int(rec[k].argmax())
            out["aligned"][i] = result.faces[k].aligned
    finally:
        del pipeline.expression.logits
    return out


def accuracies(y: np.ndarray, reads: dict[str, np.ndarray], kinds: np.ndarray | None = None) -> dict[str, dict[str, Any]]:
    """{"all": …, kind: …}: n and the accuracy of the baseline and of the reconstructed reading (per mask kind when given)."""
    groups = {"all": np.ones(len(y), bool)}
    if kinds is not None:
        groups.update({k: kinds == k for k in KINDS})
    return {name: {"n": int(part.sum()), **{how: round(float((reads[how][part] == y[part]).mean()), 4) if part.any() else None
                                            for how in ("baseline", "reconstructed")}}
            for name, part in groups.items()}


def verdict(accuracy: dict[str, float], ms: dict[str, float]) -> dict[str, Any]:
    """Accuracy per millisecond of each way of reading (accuracy on masked faces / ms per face); ship only a win."""
    per_ms = {how: round(accuracy[how] / ms[how], 4) for how in ("baseline", "reconstructed")}
    return {"accuracy_per_ms": per_ms, "ship": per_ms["reconstructed"] > per_ms["baseline"]}


def median_ms(fn: Callable[[Any], Any], items: Sequence[Any], warmup: int = 5) -> float:
    """Median wall time of fn(item) over items, in ms (after `warmup` untimed calls)."""
    for item in items[:warmup]:
        fn(item)
    times = []
    for item in items:
        start = time.perf_counter()
        fn(item)
        times.append((time.perf_counter() - start) * 1e3)
    return round(float(np.median(times)), 3)


def onnx_inpainter(path: Path, threads: int = 1) -> tuple[Inpaint, Any]:
    """(inpaint function, its onnxruntime session) for an exported inpainter file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def inpaint(faces: np.ndarray) -> np.ndarray:
        out = session.run(None, {name: faces.astype(np.float32)[:, None]})[0][:, 0]
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    return inpaint, session


# ------------------------------------------------------------------------------------------------
# Torch: the inpainter, its training and its export.


def _torch_net(width: int):
    import torch
    from torch import nn

    def block(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                             nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class InpaintNet(nn.Module):
        """A compact U-Net on the aligned 48×48 face (48 → 24 → 12 → 6 and back, skips at each scale); its input and
        output are grey levels 0..255. Head: a face and a gate; out = gate · face + (1 − gate) · input."""

        def __init__(self, w: int) -> None:
            super().__init__()
            self.e1, self.e2, self.e3, self.mid = block(1, w), block(w, 2 * w), block(2 * w, 4 * w), block(4 * w, 4 * w)
            self.d3, self.d2, self.d1 = block(8 * w, 4 * w), block(6 * w, 2 * w), block(3 * w, w)
            self.pool, self.up = nn.MaxPool2d(2), nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            self.head = nn.Conv2d(w, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = x / 127.5 - 1.0
            e1 = self.e1(z)
            e2 = self.e2(self.pool(e1))
            e3 = self.e3(self.pool(e2))
            m = self.mid(self.pool(e3))
            d3 = self.d3(torch.cat([self.up(m), e3], 1))
            d2 = self.d2(torch.cat([self.up(d3), e2], 1))
            d1 = self.d1(torch.cat([self.up(d2), e1], 1))
            h = self.head(d1)
            face, gate = torch.sigmoid(h[:, :1]) * 255.0, torch.sigmoid(h[:, 1:])
            return gate * face + (1 - gate) * x

    return InpaintNet(width)


def _loss(out, target, region, mask_weight: float = 4.0, edge_weight: float = 0.5):
    """L1 weighted up on the mask's pixels + L1 on horizontal and vertical differences (an edge term); grey levels / 255."""
    o, t = out / 255.0, target / 255.0
    weight = 1.0 + mask_weight * region
    l1 = (weight * (o - t).abs()).mean()
    edge = ((o[..., 1:, :] - o[..., :-1, :]) - (t[..., 1:, :] - t[..., :-1, :])).abs().mean() + \
           ((o[..., 1:] - o[..., :-1]) - (t[..., 1:] - t[..., :-1])).abs().mean()
    return l1 + edge_weight * edge


def train(images: np.ndarray, mesh_points: np.ndarray, matrices: np.ndarray, targets: np.ndarray, val: np.ndarray, *, minutes: float,
          width: int, batch: int, fraction: float, checkpoint: Path, resume: bool, seed: int = 0, threads: int = 2,
          max_steps: int | None = None, log_every_s: float = 60.0) -> tuple[Any, dict[str, Any]]:
    """Train InpaintNet on the non-`val` faces until `minutes` of training time (or max_steps); checkpoint each log."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    net = _torch_net(width)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    state = {"step": 0, "seconds": 0.0, "log": []}
    if resume and checkpoint.is_file():
        saved = torch.load(checkpoint, weights_only=False)
        net.load_state_dict(saved["net"])
        opt.load_state_dict(saved["opt"])
        state = saved["state"]
        _LOGGER.info("resumed %s at step %d (%.1f min trained)", checkpoint, state["step"], state["seconds"] / 60)
    train_idx, val_idx = np.flatnonzero(~val), np.flatnonzero(val)[:512]
    vx, vy, vr = training_pairs(images[val_idx], mesh_points[val_idx], matrices[val_idx], targets[val_idx], seed=999, fraction=1.0)
    vx, vy, vr = (torch.from_numpy(a.astype(np.float32))[:, None] for a in (vx, vy, vr))
    rng = np.random.default_rng([seed, state["step"]])

    def evaluate() -> dict[str, float]:
        net.eval()
        with torch.no_grad():
            out = net(vx)
        net.train()
        err = (out - vy).abs()
        return {"step": state["step"], "minutes": round(state["seconds"] / 60, 2), "val_l1_mask": round(float(err[vr > 0].mean()), 2),
                "val_l1_input_mask": round(float((vx - vy).abs()[vr > 0].mean()), 2), "val_l1_face": round(float(err.mean()), 2)}

    def save() -> None:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "state": state, "width": width}, checkpoint.with_suffix(".tmp"))
        checkpoint.with_suffix(".tmp").replace(checkpoint)

    budget = minutes * 60
    last_log = time.perf_counter()
    net.train()
    while state["seconds"] < budget and (max_steps is None or state["step"] < max_steps):
        start = time.perf_counter()
        for group in opt.param_groups:  # the last fifth of the budget at a third of the rate
            group["lr"] = 1e-3 if state["seconds"] < 0.8 * budget else 3e-4
        idx = rng.choice(train_idx, batch, replace=False)
        x, y, r = training_pairs(images[idx], mesh_points[idx], matrices[idx], targets[idx], seed=seed * 1_000_003 + state["step"],
                                 fraction=fraction)
        if rng.random() < 0.5:  # mirror the whole batch (input, target and mask region alike)
            x, y, r = x[:, :, ::-1], y[:, :, ::-1], r[:, :, ::-1]
        x, y, r = (torch.from_numpy(np.ascontiguousarray(a).astype(np.float32))[:, None] for a in (x, y, r))
        loss = _loss(net(x), y, r)
        opt.zero_grad()
        loss.backward()
        opt.step()
        state["step"] += 1
        state["seconds"] += time.perf_counter() - start
        if time.perf_counter() - last_log >= log_every_s:
            last_log = time.perf_counter()
            state["log"].append({**evaluate(), "loss": round(float(loss.detach()), 4)})
            _LOGGER.info("%s", state["log"][-1])
            save()
    state["log"].append(evaluate())
    _LOGGER.info("done: %s", state["log"][-1])
    save()
    net.eval()
    return net, state


def export_onnx(net: Any, path: Path) -> Path:
    """The trained net as ONNX: input "face" float32 [N, 1, 48, 48] of grey levels 0..255, output "inpainted" the same."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    net.eval()
    torch.onnx.export(net, torch.zeros(1, 1, SIZE, SIZE), str(path), input_names=["face"], output_names=["inpainted"],
                      dynamic_axes={"face": {0: "n"}, "inpainted": {0: "n"}}, opset_version=17, dynamo=False)
    return path


def load_checkpoint(checkpoint: Path) -> tuple[Any, dict[str, Any]]:
    import torch

    saved = torch.load(checkpoint, weights_only=False)
    net = _torch_net(saved["width"])
    net.load_state_dict(saved["net"])
    net.eval()
    return net, saved["state"]


def parameter_count(net: Any) -> int:
    return int(sum(p.numel() for p in net.parameters()))


# ------------------------------------------------------------------------------------------------
# The command.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from export.dataset import SHARED_FER

    parser.add_argument("--train", type=Path, default=SHARED_FER / "fer2013_train.npz", help="FER2013 Training npz")
    parser.add_argument("--cache", type=Path, default=ROOT / "cache", help="landmark caches (export/landmarks.py)")
    parser.add_argument("--work", type=Path, default=WORK, help="checkpoint and exported ONNX (default build/reconstruct)")
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget in minutes of CPU training (default %(default)s)")
    parser.add_argument("--width", type=int, default=16, help="channels at the first scale (default %(default)s: ~0.3 M parameters)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--masked-share", type=float, default=0.8, help="share of each batch masked (default %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint up to --minutes")
    parser.add_argument("--skip-train", action="store_true", help="evaluate the checkpoint as it is")
    parser.add_argument("--limit", type=int, default=None, help="only the first N faces of each test set")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training (default %(default)s)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results file (default %(default)s)")


def _train_data(train_npz: Path, cache: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from export.dataset import mesh_array, stratified_split, usable_landmarks
    from export.landmarks import cached_landmarks

    data = np.load(train_npz)
    x, y = data["x"], data["y"].astype(np.int64)
    meshes = usable_landmarks(cached_landmarks(train_npz, cache))
    matrices = alignments(x, meshes)
    return x, mesh_array(meshes), matrices, aligned(x, matrices), stratified_split(y, 0.1, 0)


def main(args: argparse.Namespace) -> int:
    from edge.files import write_atomic
    from edge.pipeline import Pipeline, face_samples, find_faces
    from edge.vision.expression import DEFAULT_SIDECAR, ExpressionModel
    from export.evaluate import load_npz

    checkpoint = args.work / "inpainter.pt"
    if args.skip_train:
        if not checkpoint.is_file():
            raise EdgeError(f"--skip-train: no checkpoint at {checkpoint}; train first (drop --skip-train)")
        net, state = load_checkpoint(checkpoint)
    else:
        x, points, matrices, targets, val = _train_data(args.train.resolve(), args.cache)
        _LOGGER.info("%d Training faces aligned (%d with a mesh); training for %.0f min", len(x), int((~np.isnan(points[:, 0, 0])).sum()),
                     args.minutes)
        net, state = train(x, points, matrices, targets, val, minutes=args.minutes, width=args.width, batch=args.batch,
                           fraction=args.masked_share, checkpoint=checkpoint, resume=args.resume, threads=args.threads)
        del x, points, matrices, targets
    onnx_path = export_onnx(net, args.work / "inpainter.fp32.onnx")
    inpaint, _session = onnx_inpainter(onnx_path, threads=1)

    sets: dict[str, Any] = {}
    samples: list[UpperFaceSample] = []
    for name, rel in TEST_SETS.items():
        x, y = load_npz(ROOT / rel)
        kinds = mask_kinds(len(x)) if name == "masked" else None
        if args.limit:
            x, y = x[: args.limit], y[: args.limit]
            kinds = None if kinds is None else kinds[: args.limit]
        start = time.perf_counter()
        with Pipeline(model=DEFAULT_SIDECAR, backend="onnx", precision="int8", max_faces=2, threads=2) as pipeline:
            reads = read_both(pipeline, x, inpaint, lowlight=None)
            if name == "masked":  # faces for the timings: masked samples as the model gets them
                for image in x[:300]:
                    faces = find_faces(pipeline.mesh, image)
                    samples += face_samples(image, faces[:1], assume_face=True)
        sets[name] = {"data": rel, "aligned": round(float(reads["aligned"].mean()), 4), **accuracies(y, reads, kinds),
                      "agreement": round(float((reads["baseline"] == reads["reconstructed"]).mean()), 4)}
        _LOGGER.info("%s: %s (%.0f s)", name, sets[name], time.perf_counter() - start)

    reader = ExpressionModel(DEFAULT_SIDECAR, backend="onnx", precision="int8", threads=1)
    try:
        faces = [s.face[None] for s in samples]
        ms = {"inpainter": median_ms(inpaint, faces),
              "features": median_ms(lambda s: landmark_features(s.face, s.landmarks), samples),
              "reader": median_ms(lambda s: reader.logits([s]), samples)}
        reader_file = reader.path.name
    finally:
        reader.close()
    ms_total = {"baseline": ms["reader"], "reconstructed": round(ms["inpainter"] + ms["features"] + ms["reader"], 3)}
    masked_all = sets["masked"]["all"]
    decision = verdict({h: masked_all[h] for h in ms_total}, ms_total)
    if decision["ship"] and not args.limit:
        shutil.copy(onnx_path, SHIPPED)
    command = f"{COMMAND} --minutes {args.minutes:g} --width {args.width}" + (f" --limit {args.limit}" if args.limit else "")
    results = {
        "command": command,
        "reader": f"{reader_file} (the shipped model, unchanged), onnxruntime",
        "inpainter": {"net": "compact U-Net (InpaintNet, export/reconstruct.py), gated output", "width": args.width,
                      "parameters": parameter_count(net), "onnx_bytes": onnx_path.stat().st_size,
                      "trained_minutes": round(state["seconds"] / 60, 1), "steps": state["step"], "batch": args.batch,
                      "masked_share": args.masked_share, "loss": "L1 (×5 on the mask's pixels) + 0.5 × L1 of the image gradients",
                      "frame": "the device's aligned 48×48 face (the clean face's mesh; the masked copy warped by the same matrix)",
                      "data": "FER2013 Training less our validation split, masked on the fly by export.masks (all four kinds)",
                      "validation": state["log"][-1], "log": state["log"]},
        "sets": sets,
        "ms_per_face": {**ms, **{f"total_{k}": v for k, v in ms_total.items()}},
        "timing": f"median over {len(samples)} masked PublicTest samples, onnxruntime, 1 thread, batch 1, this workstation (x86_64)",
        **decision,
        "shipped": bool(decision["ship"] and not args.limit),
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.results, (json.dumps(results, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    _LOGGER.info("wrote %s; ship: %s; `python -m export.card` puts it in the model card", args.results, decision["ship"])
    return 0
