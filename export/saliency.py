"""`python -m export saliency --out models/saliency_sheet.png`: where the shipped model looks (issue #20, item 2).

The torch checkpoint is not shipped, only the exported files, so instead of Grad-CAM this measures
occlusion sensitivity (Zeiler & Fergus 2014), which needs nothing but the model the glasses run: a
PATCH×PATCH square of the face's own mean grey slides over the aligned 48×48 face in steps of
STRIDE (starting and ending partly outside it, so every pixel is covered by the same number of
squares), each occluded face is read again, and each pixel gets the mean drop of the read class's
probability over the squares that covered it. All of a face's occluded copies go through the model
in one batch.

What is occluded. The model has two inputs and both come from the aligned face on the glasses: the
image itself and, around the 47 upper-face landmarks, HOG values computed from that same face
(edge.vision.upperface). A grey square on the face changes both, so each occluded face's HOG
features are recomputed from the occluded pixels by `landmark_features`, the function the device
uses. Occluding only the image input would hide what the landmark branch reads from the eyes and
brows and so push the map towards the rest of the face. The landmark *positions* stay those the
face mesh found on the whole frame: re-running the mesh on occluded copies would measure the mesh,
not the expression model. Test-time mirror averaging and the temperature are applied as on the
device (ExpressionModel.logits / probabilities), on the shipped int8 ONNX file by default.

Faces. PublicTest and its masked twin (`python -m export mask`, same order), each read like
`export evaluate` reads a crop (face mesh, then the one alignment, daylight branch), largest face.
Per class, the faces are visited in a seeded random order and kept when the mesh found a face in
both versions and the model reads both right; the first --show of them are drawn, the first
--per-class of them are measured. The heat map is that of the true (= read) class.

Regions, in each face's own aligned frame: "mask" is where the masked twin differs from the plain
image (the generated mask, closed by one pixel), mapped through that face's alignment, so for an
unmasked face it is where its mask would be; "eyes_brows" is the box around the 36 eye and brow
landmarks, widened by EYE_MARGIN px, less the mask; "other" is the rest. A region's share of the
positive occlusion mass is compared with its share of the area: a model that ignores the mask puts
less mass there than its area.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from edge.errors import EdgeError
from edge.results import LABELS
from edge.vision.upperface import SIZE, UpperFaceSample, align_matrix, landmark_features, warp

_LOGGER = logging.getLogger(__name__)

MODELS = Path(__file__).resolve().parents[1] / "models"
DEFAULT_OUT = MODELS / "saliency_sheet.png"
DEFAULT_RESULTS = MODELS / "results" / "saliency.json"
PATCH = 8
"""Side of the grey square, in aligned-face pixels (a sixth of the face: an eye, a brow, a mouth corner)."""
STRIDE = 4
"""Step of the square, px: each pixel is covered by (PATCH/STRIDE)² squares. 4 costs about 0.2 s a face here (2 shared
cores, int8 ONNX, 13×13 occluded copies + their mirrors in one batch), 2 costs 0.9 s (27×27) for a smoother map."""
EYE_MARGIN = 2
EYES_AND_BROWS = slice(0, 36)
"""Rows of UPPER_LANDMARKS that are eye and brow points (the rest: forehead and nose bridge)."""
REGIONS = ("mask", "eyes_brows", "other")
CONDITIONS = ("unmasked", "masked")

Scorer = Callable[[np.ndarray], np.ndarray]
"""uint8 faces [K, 48, 48] → the probability of one class for each [K]."""


def check_square(patch: int, stride: int) -> None:
    if not 1 <= stride <= patch <= SIZE or patch % stride:
        raise EdgeError(f"--patch {patch} --stride {stride}: need 1 ≤ stride ≤ patch ≤ {SIZE} px with the stride dividing the patch (e.g. 8 and 4)")


def occlusion_map(face: np.ndarray, score: Scorer, patch: int = PATCH, stride: int = STRIDE) -> tuple[np.ndarray, float]:
    """(per-pixel mean drop of `score` when a square of the face's mean grey covers that pixel, score of the whole face)."""
    check_square(patch, stride)
    h, w = face.shape
    starts = [(y, x) for y in range(stride - patch, h, stride) for x in range(stride - patch, w, stride)]
    fill = np.uint8(round(float(face.mean())))
    batch = np.repeat(face[None], len(starts) + 1, axis=0)
    for k, (y, x) in enumerate(starts, start=1):
        batch[k, max(y, 0) : y + patch, max(x, 0) : x + patch] = fill
    scores = np.asarray(score(batch), dtype=np.float64)
    heat = np.zeros((h + 2 * patch, w + 2 * patch))
    for (y, x), drop in zip(starts, scores[0] - scores[1:]):
        heat[y + patch : y + 2 * patch, x + patch : x + 2 * patch] += drop
    return (heat[patch:-patch, patch:-patch] / (patch // stride) ** 2).astype(np.float32), float(scores[0])


def model_scorer(model: Any, sample: UpperFaceSample, label: int) -> Scorer:
    """The device's probability of `label` for occluded copies of `sample`'s face, both inputs made from the copy."""

    def score(faces: np.ndarray) -> np.ndarray:
        copies = [UpperFaceSample(face=f, features=landmark_features(f, sample.landmarks), landmarks=sample.landmarks) for f in faces]
        return model.probabilities(model.logits(copies))[:, label]

    return score


def mask_region(plain: np.ndarray, masked: np.ndarray) -> np.ndarray:
    """uint8 0/255: the pixels the mask generator changed (one-pixel gaps where it happened to keep a grey closed)."""
    changed = (np.abs(plain.astype(np.int16) - masked.astype(np.int16)) > 0).astype(np.uint8) * 255
    changed = changed if changed.ndim == 2 else changed.max(axis=2)
    return cv2.morphologyEx(changed, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))


def regions(landmarks: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean [48, 48] maps of REGIONS for an aligned face: its upper-face landmarks and its aligned mask region."""
    on_mask = mask > 127
    lo = np.floor(landmarks[EYES_AND_BROWS].min(axis=0) - EYE_MARGIN).astype(int).clip(0, SIZE)
    hi = np.ceil(landmarks[EYES_AND_BROWS].max(axis=0) + EYE_MARGIN + 1).astype(int).clip(0, SIZE)
    eyes = np.zeros((SIZE, SIZE), bool)
    eyes[lo[1] : hi[1], lo[0] : hi[0]] = True
    eyes &= ~on_mask
    return {"mask": on_mask, "eyes_brows": eyes, "other": ~(on_mask | eyes)}


def mass_shares(heat: np.ndarray, parts: dict[str, np.ndarray]) -> dict[str, float]:
    """Each region's share of the positive occlusion mass (the pixels whose cover lowers the score); zeros if none."""
    positive = np.clip(heat, 0, None)
    total = float(positive.sum())
    return {name: float(positive[part].sum()) / total if total > 0 else 0.0 for name, part in parts.items()}


def read_face(mesh: Any, model: Any, image: np.ndarray) -> tuple[UpperFaceSample, np.ndarray, int] | None:
    """(sample, alignment matrix, read label) of the image's largest face as `export evaluate` reads it; None without a mesh."""
    from edge.pipeline import face_samples, find_faces

    faces = find_faces(mesh, image)
    if not faces:
        return None
    face = max(faces, key=lambda f: f.box[2] * f.box[3])
    (sample,) = face_samples(image, [face])
    label = int(model.probabilities(model.logits([sample]))[0].argmax())
    return sample, align_matrix(face.landmarks), label


def choose(mesh: Any, model: Any, x: np.ndarray, masked: np.ndarray, y: np.ndarray, per_class: int, seed: int) -> dict[int, list[tuple[int, list]]]:
    """Per class, up to `per_class` (index, [(sample, matrix) unmasked, masked]) of faces found and read right in both, seeded order."""
    chosen: dict[int, list[tuple[int, list]]] = {}
    for label in range(len(LABELS)):
        kept: list[tuple[int, list]] = []
        visited = 0
        for i in np.random.default_rng([seed, label]).permutation(np.flatnonzero(y == label)):
            if len(kept) == per_class:
                break
            visited += 1
            reads = [read_face(mesh, model, image) for image in (x[i], masked[i])]
            if all(r is not None and r[2] == label for r in reads):
                kept.append((int(i), [r[:2] for r in reads]))
        _LOGGER.info("%s: %d faces found and read right both ways out of %d visited", LABELS[label], len(kept), visited)
        chosen[label] = kept
    return chosen


def measure(model: Any, chosen: dict[int, list[tuple[int, list]]], x: np.ndarray, masked: np.ndarray, patch: int, stride: int) -> dict[int, list[dict]]:
    """Per chosen face and condition: the occlusion map, its mask region, the read probability and the region shares."""
    out: dict[int, list[dict]] = {}
    for label, faces in chosen.items():
        out[label] = []
        for i, pair in faces:
            mask = mask_region(x[i], masked[i])
            face_out: dict[str, Any] = {"index": i}
            for condition, (sample, matrix) in zip(CONDITIONS, pair):
                heat, p = occlusion_map(sample.face, model_scorer(model, sample, label), patch, stride)
                parts = regions(sample.landmarks, warp(mask, matrix))
                face_out[condition] = {"face": sample.face, "heat": heat, "mask": parts["mask"], "p": p,
                                       "shares": mass_shares(heat, parts), "areas": {k: float(v.mean()) for k, v in parts.items()}}
            out[label].append(face_out)
    return out


def summary(rows: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Per condition: the mean mass share and the mean area share of each region over measured faces."""
    return {
        condition: {
            key: {r: round(float(np.mean([f[condition][key][r] for f in rows])), 4) if rows else 0.0 for r in REGIONS}
            for key in ("shares", "areas")
        }
        for condition in CONDITIONS
    }


def class_mean(faces: list[dict]) -> dict[str, dict]:
    """One entry per condition for a class: the mean of its aligned faces, of their heat maps (each scaled
    to its own largest drop first), of the read probability and of the region shares; the mask where at
    least half of the faces have it. No single person's face is left in it."""
    out = {}
    for condition in CONDITIONS:
        rows = [f[condition] for f in faces]
        heats = [np.clip(r["heat"], 0, None) / max(float(np.clip(r["heat"], 0, None).max()), 1e-9) for r in rows]
        out[condition] = {"face": np.mean([r["face"] for r in rows], axis=0), "heat": np.mean(heats, axis=0),
                          "mask": np.mean([r["mask"] for r in rows], axis=0) >= 0.5, "p": float(np.mean([r["p"] for r in rows])),
                          "shares": {k: float(np.mean([r["shares"][k] for r in rows])) for k in REGIONS}}
    return out


def plot_sheet(measured: dict[int, list[dict]], show: int, path: Path, title: str) -> None:
    """Rows = classes; per face, the unmasked and the masked aligned face with the heat map over it, the mask outlined.
    show = 0: one column pair per class, the class mean (`class_mean`) - the sheet that is committed, since
    it shows no dataset face.

    Each map is scaled to its own largest drop and drawn more opaque where it is higher; the PNG is
    quantised to 128 colours to stay small."""
    from edge.plotting import matplotlib_or_refuse

    matplotlib_or_refuse("the saliency sheet")
    import matplotlib.pyplot as plt
    from PIL import Image

    from edge.files import write_atomic

    colours = plt.get_cmap("jet")
    if show == 0:  # the class means: a row per condition, a column per class
        fig, grid = plt.subplots(len(CONDITIONS), len(LABELS), figsize=(1.15 * len(LABELS) + 0.3, 1.45 * len(CONDITIONS) + 0.7),
                                 dpi=80, squeeze=False)
        cells = {(label, 0, c): grid[c][label] for label in measured for c in range(len(CONDITIONS))}
        measured = {label: [class_mean(faces)] for label, faces in measured.items() if faces}
        show = 1
        for label in range(len(LABELS)):
            grid[0][label].set_title(LABELS[label], fontsize=8, pad=12)
    else:
        fig, grid = plt.subplots(len(LABELS), 2 * show, figsize=(2.3 * show + 0.3, 1.3 * len(LABELS) + 0.6), dpi=80, squeeze=False)
        cells = {(label, j, c): grid[label][2 * j + c] for label in measured for j in range(show) for c in range(len(CONDITIONS))}
        for label in measured:
            grid[label][0].set_ylabel(LABELS[label], fontsize=8)
    for label, faces in measured.items():
        for j in range(show):
            for c, condition in enumerate(CONDITIONS):
                ax = cells[(label, j, c)]
                ax.set_xticks([])
                ax.set_yticks([])
                if j >= len(faces):
                    ax.axis("off")
                    continue
                m = faces[j][condition]
                heat = np.clip(m["heat"], 0, None)
                heat = heat / max(float(heat.max()), 1e-9)
                overlay = colours(heat)
                overlay[..., 3] = 0.7 * heat
                ax.imshow(m["face"], cmap="gray", vmin=0, vmax=255)
                ax.imshow(overlay, interpolation="bilinear")
                ax.contour(m["mask"].astype(float), levels=[0.5], colors="white", linewidths=0.6)
                ax.text(0.5, 1.02, f"{condition} {m['p']:.2f}, mask {100 * m['shares']['mask']:.0f}%", fontsize=6,
                        ha="center", va="bottom", transform=ax.transAxes)
    fig.suptitle(title, fontsize=7)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 0.97))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    small = io.BytesIO()
    Image.open(buffer).convert("RGB").quantize(colors=128).save(small, format="PNG", optimize=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, small.getvalue())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from export.distance import DEFAULT_DATA, DEFAULT_MASKED

    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="FER2013 PublicTest npz (default %(default)s)")
    parser.add_argument("--masked-data", type=Path, default=DEFAULT_MASKED,
                        help="its masked twin, same order (default %(default)s; `make masked-testset` builds it)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the sheet, PNG (default models/saliency_sheet.png)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="the figures, JSON (default models/results/saliency.json)")
    parser.add_argument("--show", type=int, default=0,
                        help="faces per class on the sheet; 0 (default): the mean of the measured faces, so the sheet shows no "
                             "dataset face and can be committed (FER2013 stays in ../shared)")
    parser.add_argument("--per-class", type=int, default=20, help="faces per class measured for the mass shares (default %(default)s)")
    parser.add_argument("--seed", type=int, default=20, help="order in which each class's faces are visited (default %(default)s)")
    parser.add_argument("--patch", type=int, default=PATCH, help="occluding square, px of the 48×48 face (default %(default)s)")
    parser.add_argument("--stride", type=int, default=STRIDE, help="its step, px; must divide --patch (default %(default)s)")
    parser.add_argument("--model", type=Path, default=None, help="sidecar JSON (default models/expression.json)")
    parser.add_argument("--precision", choices=("int8", "fp32"), default="int8", help="which ONNX file (default %(default)s, as the glasses)")
    parser.add_argument("--threads", type=int, default=None)


def main(args: argparse.Namespace) -> int:
    from edge.files import write_atomic
    from edge.runtime import default_threads
    from edge.vision.expression import DEFAULT_SIDECAR, ExpressionModel
    from edge.vision.faces import FaceMesh
    from edge.plotting import matplotlib_or_refuse
    from export.evaluate import load_npz

    matplotlib_or_refuse("export saliency (its sheet)")  # before the faces are measured, not after
    if args.show < 0 or args.per_class < max(args.show, 1):
        raise EdgeError(f"--show {args.show}, --per-class {args.per_class}: need 0 ≤ show ≤ per-class and per-class ≥ 1 "
                        f"(the sheet's faces are measured faces)")
    check_square(args.patch, args.stride)
    x, y = load_npz(args.data)
    if not args.masked_data.is_file():
        raise EdgeError(f"{args.masked_data}: no masked twin of {args.data.name}; make it with `make masked-testset` "
                        f"(or `python -m export mask --data {args.data} --out {args.masked_data}`)")
    masked, masked_y = load_npz(args.masked_data)
    if masked.shape != x.shape or not np.array_equal(masked_y, y):
        raise EdgeError(f"{args.masked_data} is not the masked twin of {args.data} (shapes {masked.shape} vs {x.shape} or labels differ): "
                        f"rebuild it with `python -m export mask --data {args.data} --out {args.masked_data}`")
    threads = args.threads or default_threads()
    with FaceMesh(threads=threads, max_faces=2) as mesh:
        model = ExpressionModel(args.model or DEFAULT_SIDECAR, backend="onnx", threads=threads, precision=args.precision)
        try:
            chosen = choose(mesh, model, x, masked, y, args.per_class, args.seed)
            found = time.perf_counter()
            measured = measure(model, chosen, x, masked, args.patch, args.stride)
            model_file = model.path.name
        finally:
            model.close()
    n = sum(len(f) for f in measured.values())
    per_face_s = (time.perf_counter() - found) / max(2 * n, 1)
    shares = summary([f for faces in measured.values() for f in faces])
    command = f"python -m export saliency --out {args.out} --per-class {args.per_class} --show {args.show} --seed {args.seed}"
    what = f"the mean of {args.per_class} faces per class" if args.show == 0 else f"{args.show} faces per class"
    plot_sheet(measured, args.show, args.out, f"Where {model_file} looks, {what}: the drop of the read class's probability under a\n"
                                               f"{args.patch}-px grey square (numbers: that probability, and the share of the drop on the mask);\n"
                                               "white line: the mask (on unmasked faces, where it would be)")
    result = {
        "command": command,
        "model": model_file,
        "method": {"name": "occlusion sensitivity (Zeiler & Fergus 2014)", "patch_px": args.patch, "stride_px": args.stride,
                   "fill": "the face's mean grey", "recomputed": "image and the HOG of the landmark branch, from the occluded face",
                   "landmarks": "kept where the mesh found them", "test_time_flip": model.flip},
        "data": {"unmasked": str(args.data.name), "masked": str(args.masked_data.name), "seed": args.seed,
                 "per_class": args.per_class, "show": args.show,
                 "rule": "per class, seeded order; kept when the mesh found the face and the model reads it right, unmasked and masked"},
        "n": n,
        "mass": {condition: shares[condition]["shares"] for condition in CONDITIONS},
        "area": {condition: shares[condition]["areas"] for condition in CONDITIONS},
        "mass_by_class": {LABELS[label]: {c: v["shares"] for c, v in summary(faces).items()} for label, faces in measured.items()},
        "faces": {
            LABELS[label]: [
                {"index": f["index"], "sheet": k < args.show,
                 **{c: {"p": round(f[c]["p"], 4), "mass": {r: round(v, 4) for r, v in f[c]["shares"].items()}} for c in CONDITIONS}}
                for k, f in enumerate(faces)
            ]
            for label, faces in measured.items()
        },
        "seconds_per_face": round(per_face_s, 3),
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.results, (json.dumps(result, indent=2) + "\n").encode("utf-8"))
    for condition in CONDITIONS:
        m, a = result["mass"][condition], result["area"][condition]
        _LOGGER.info("%s, %d faces: mass on the mask %.1f %% (area %.1f %%), eyes/brows %.1f %% (area %.1f %%)", condition, n,
                     100 * m["mask"], 100 * a["mask"], 100 * m["eyes_brows"], 100 * a["eyes_brows"])
    _LOGGER.info("%s, %s; %.2f s per face map", args.out, args.results, per_face_s)
    return 0
