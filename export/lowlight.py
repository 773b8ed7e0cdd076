"""`python -m export lowlight`: our enhancer against the anchors, measured here; writes models/results/enhancer_card.json and the card.

Methods: no enhancement, the classical gamma/CLAHE branch, TBEFN and SCI (rebuilt in export/anchors.py,
weights read from ../shared/weights only when present) and ours (the shipped models/enhancer.json run
by the device code). For each: PSNR (BGR) and SSIM (luma) against the bright originals on dark
renderings of the benchmark photos of ../shared/data/faces (never trained on), CPU ms per 640×480
frame, face detection on dark photos, and expression accuracy on dark masked PublicTest through the
one pipeline (`export.evaluate.predict`) with each method as the night branch. Every figure in the
card comes from the JSON this command writes (cache/enhancer/compare.json, merged into models/results/enhancer_card.json).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

_LOGGER = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
LIGHTS = (0.03, 0.06, 0.12)
HEADLINE_LIGHT = 0.06


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004: 11×11 Gaussian window, σ 1.5, K1 0.01, K2 0.03) of the luma of two uint8 images."""
    def luma(x: np.ndarray) -> np.ndarray:
        return (cv2.cvtColor(x, cv2.COLOR_BGR2GRAY) if x.ndim == 3 else x).astype(np.float64)

    x, y = luma(a), luma(b)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(t: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(t, (11, 11), 1.5)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(m[5:-5, 5:-5].mean())


class Identity:
    name = "none"

    def enhance(self, frame: np.ndarray) -> np.ndarray:
        return frame

    def close(self) -> None:
        pass


def methods(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """name → Enhancer, and name → why it is missing (anchor weights absent)."""
    from edge.errors import ModelError
    from edge.vision.enhance import ClassicalEnhancer, LearnedEnhancer

    out: dict[str, Any] = {"none": Identity(), "gamma/CLAHE": ClassicalEnhancer()}
    missing: dict[str, str] = {}
    try:
        from export.anchors import load_sci, load_tbefn

        out["TBEFN"] = load_tbefn(args.weights)
        out["SCI (difficult)"] = load_sci("difficult", args.weights)
        out["SCI (medium)"] = load_sci("medium", args.weights)
    except (ModelError, ImportError) as exc:
        missing["anchors"] = str(exc)
        _LOGGER.warning("anchors left out: %s", exc)
    out["ours"] = LearnedEnhancer(args.enhancer, backend="onnx", threads=1)
    return out, missing


def _time_ms(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    """p50 and best of `repeats` timed calls after one warm-up. The best is what the work costs when it has
    the CPU; the p50 includes waiting for it (this machine is shared with training jobs)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - start) / 1e6)
    return {"p50": round(statistics.median(times), 2), "best": round(min(times), 2)}


def quality(enhancers: dict[str, Any], frames: list[np.ndarray], seed: int) -> dict[str, Any]:
    from export.darken import render_dark

    out: dict[str, Any] = {}
    for light in LIGHTS:
        rng = np.random.default_rng(seed)
        darks = [render_dark(f, light, rng) for f in frames]
        row = {}
        for name, enhancer in enhancers.items():
            from export.enhancer import psnr

            outs = [enhancer.enhance(d) for d in darks]
            row[name] = {"psnr": round(float(np.mean([psnr(o, f) for o, f in zip(outs, frames)])), 2),
                         "ssim": round(float(np.mean([ssim(o, f) for o, f in zip(outs, frames)])), 3)}
        out[f"{light:g}"] = row
        _LOGGER.info("quality at %g light: %s", light, row)
    return out


def timings(enhancers: dict[str, Any], frame: np.ndarray, seed: int) -> dict[str, Any]:
    from export.darken import render_dark

    dark = render_dark(frame, HEADLINE_LIGHT, np.random.default_rng(seed))
    out: dict[str, Any] = {}
    for name, enhancer in enhancers.items():
        if name == "none":
            continue
        slow = name == "TBEFN"
        out[name] = {"frame_640x480_ms": _time_ms(lambda: enhancer.enhance(dark), 8 if slow else 40)}
        if name == "ours":
            crop = dark[100:228, 260:388]
            out[name]["face_crop_128_ms"] = _time_ms(lambda: enhancer.enhance(crop), 100)
            out[name]["face_48_gray_ms"] = _time_ms(lambda: enhancer.enhance(cv2.cvtColor(dark[:48, :48], cv2.COLOR_BGR2GRAY)), 100)
            thumb = cv2.resize(dark, (64, 64), interpolation=cv2.INTER_AREA)
            out[name]["network_only_ms"] = _time_ms(lambda: enhancer.maps(thumb), 100)
        _LOGGER.info("%s: %s", name, out[name])
    return out


def detection(enhancers: dict[str, Any], frames: list[np.ndarray], seed: int) -> dict[str, Any]:
    """Faces found on dark renderings (6 % light) that match a face found on the bright original (IoU ≥ 0.3)."""
    from edge.vision.faces import FaceMesh, _iou
    from export.darken import render_dark

    rng = np.random.default_rng(seed)
    darks = [render_dark(f, HEADLINE_LIGHT, rng) for f in frames]
    out: dict[str, Any] = {}
    with FaceMesh(threads=1, max_faces=12) as mesh:
        refs = []
        for f in frames:
            mesh.reset()
            refs.append([face.box for face in mesh.process(cv2.cvtColor(f, cv2.COLOR_BGR2RGB), allow_fallback=False)])
        total = sum(len(r) for r in refs)
        for name, enhancer in enhancers.items():
            found = 0
            for dark, ref in zip(darks, refs):
                mesh.reset()
                boxes = [face.box for face in mesh.process(cv2.cvtColor(enhancer.enhance(dark), cv2.COLOR_BGR2RGB), allow_fallback=False)]
                found += sum(any(_iou(r, b) >= 0.3 for b in boxes) for r in ref)
            out[name] = {"found": found, "reference": total, "rate": round(found / max(total, 1), 3)}
            _LOGGER.info("detection on dark photos, %s: %d / %d", name, found, total)
    return out


ANCHORS = ("TBEFN", "SCI (difficult)", "SCI (medium)")
"""Slow on the CPU: measured on the first --anchor-limit faces only; the others on all of PublicTest."""


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def accuracy(enhancer: Any, name: str, dark_data: Path, day_data: Path, limit: int | None, anchor_limit: int) -> dict[str, Any]:
    """Dark (and, for none/ours, daylight) masked PublicTest through the pipeline with `enhancer` as the night branch."""
    from edge.pipeline import Pipeline
    from export.evaluate import load_npz, predict
    from export.metrics import report

    out: dict[str, Any] = {}
    sets = [("dark", dark_data)] + ([("daylight", day_data)] if name in ("none", "ours") else [])
    for label, data in sets:
        x, y = load_npz(data)
        n = anchor_limit if name in ANCHORS else limit
        if n:
            x, y = x[:n], y[:n]
        start = time.perf_counter()
        mode = False if name == "none" else None
        with Pipeline(enhancer=enhancer, max_faces=2) as pipeline:
            preds, extra = predict(pipeline, x, mode)
            model = pipeline.expression.path.name
            from edge.vision.expression import sha256_file

            model_sha = sha256_file(pipeline.expression.path)[:12]
        r = report(y, preds)
        sub = report(y[:anchor_limit], preds[:anchor_limit])
        out[label] = {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"], **extra, "n": r["n"], "model": model, "model_sha256": model_sha,
                      "lowlight": "off" if mode is False else "auto", "seconds": round(time.perf_counter() - start, 1),
                      "first": {"n": sub["n"], "accuracy": sub["accuracy"], "macro_f1": sub["macro_f1"]}}
        _LOGGER.info("%s on %s: %s", name, data.name, out[label])
    return out


def picture_sheet(
    enhancers: dict[str, Any], frames: list[np.ndarray], real_dark: list[np.ndarray], path: Path, seed: int,
    lights: tuple[float, ...] = (HEADLINE_LIGHT,),
) -> None:
    """Rows: each photo at each light level, then real dim scenes; columns: dark, each method, original."""
    from export.darken import render_dark

    tile_w, tile_h = 160, 120
    cols = ["dark"] + [n for n in enhancers if n != "none"] + ["original"]
    rng = np.random.default_rng(seed)
    rows = []

    def tile(img: np.ndarray | None, label: str) -> np.ndarray:
        t = np.full((tile_h, tile_w, 3), 255, np.uint8) if img is None else cv2.resize(img, (tile_w, tile_h), interpolation=cv2.INTER_AREA)
        cv2.putText(t, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(t, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
        return t

    rendered = [(f, render_dark(f, light, rng), f"dark {light:.0%}") for f in frames for light in lights]
    for original, dark, label in rendered + [(None, d, "real dim scene") for d in real_dark]:
        cells = [tile(dark, label)]
        cells += [tile(enhancers[n].enhance(dark), n) for n in cols[1:-1]]
        cells.append(tile(original, "original" if original is not None else "(no original)"))
        rows.append(np.hstack(cells))
    sheet = np.vstack(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    _LOGGER.info("picture sheet %s (%d KB)", path, path.stat().st_size // 1024)


def committed_sheet(enhancers: dict[str, Any], path: Path, seed: int) -> None:
    """The sheet for models/: the public-domain demo portrait at 3, 6 and 12 % light, every method."""
    from edge.images import DEMO_PORTRAIT
    from export.enhancer import frame_640x480

    portrait = frame_640x480(DEMO_PORTRAIT)
    picture_sheet(enhancers, [portrait], [], path, seed, lights=(0.03, HEADLINE_LIGHT, 0.12))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from export.anchors import SHARED_WEIGHTS
    from export.enhancer import SHARED_FACES

    parser.add_argument("--enhancer", type=Path, default=ROOT / "models" / "enhancer.json")
    parser.add_argument("--weights", type=Path, default=SHARED_WEIGHTS)
    parser.add_argument("--photos", type=Path, default=SHARED_FACES)
    parser.add_argument("--dark-masked-test", type=Path, default=Path("cache/publictest_masked_dark6.npz"))
    parser.add_argument("--masked-test", type=Path, default=Path("cache/publictest_masked.npz"))
    parser.add_argument("--limit", type=int, default=None, help="only the first N PublicTest faces")
    parser.add_argument("--anchor-limit", type=int, default=600, help="PublicTest faces for the slow anchors (TBEFN, SCI)")
    parser.add_argument("--methods", nargs="*", default=None, help="accuracy for these methods only (default: all)")
    parser.add_argument("--skip", nargs="*", default=[], choices=("quality", "timing", "detection", "accuracy", "sheet"))
    parser.add_argument("--json-out", type=Path, default=Path("cache/enhancer/compare.json"))
    parser.add_argument("--card", type=Path, default=ROOT / "models" / "ENHANCER_CARD.md")
    parser.add_argument("--card-only", action="store_true", help="rewrite the card from --json-out without measuring")
    parser.add_argument("--seed", type=int, default=6)


def main(args: argparse.Namespace) -> int:
    import torch

    from export.enhancer import frame_640x480, photo_paths, photo_split

    torch.set_num_threads(1)
    results: dict[str, Any] = json.loads(args.json_out.read_text()) if args.json_out.is_file() else {}
    measured = [s for s in ("quality", "timing", "detection") if s not in args.skip]
    if not args.card_only:
        enhancers, missing = methods(args)
        chosen = {n: e for n, e in enhancers.items() if not args.methods or n in args.methods}
        all_photos = photo_paths(args.photos)
        _, bench = photo_split(all_photos)
        frames = [frame_640x480(p) for p in bench]
        results["benchmark_photos"] = [p.name for p in bench]
        results["missing"] = missing
        results["machine"] = {"cpus": __import__("os").cpu_count(), "threads": 1, "torch": torch.__version__,
                              "note": "measured while the expression model trained on the other core(s)"}
        # --methods re-measures only those methods and keeps the others' earlier figures.
        if "quality" not in args.skip:
            for light, row in quality(chosen, frames, args.seed).items():
                results.setdefault("quality", {}).setdefault(light, {}).update(row)
        if "timing" not in args.skip:
            results.setdefault("timing", {}).update(timings(chosen, frames[0], args.seed))
        if "detection" not in args.skip:
            results.setdefault("detection", {}).update(detection(chosen, [frame_640x480(p) for p in all_photos], args.seed))
        if "accuracy" not in args.skip:
            accuracy_dir = args.json_out.parent / "accuracy"
            accuracy_dir.mkdir(parents=True, exist_ok=True)
            for name in chosen:
                result = accuracy(enhancers[name], name, args.dark_masked_test, args.masked_test, args.limit, args.anchor_limit)
                (accuracy_dir / f"{slug(name)}.json").write_text(json.dumps({"name": name, **result}, indent=2))
        if "sheet" not in args.skip:
            # The committed sheet shows only a public-domain photo (the demo portrait, edge/data/); the
            # benchmark photos and DICM scenes are third-party pictures, so their sheet stays in the cache.
            committed_sheet(enhancers, args.card.parent / "enhancer_sheet.png", args.seed)
            real = [frame_640x480(p) for p in sorted(args.photos.glob("dicm_*.jpg"))]
            picture_sheet(enhancers, frames[:3], real, args.json_out.parent / "enhancer_sheet_local.png", args.seed)
        if measured:
            args.json_out.parent.mkdir(parents=True, exist_ok=True)
            args.json_out.write_text(json.dumps(results, indent=2))
    from export.enhancer_card import save_results, write_card

    accuracy_files = sorted((args.json_out.parent / "accuracy").glob("*.json"))
    results["accuracy"] = {d["name"]: d for d in (json.loads(f.read_text()) for f in accuracy_files)}
    save_results(args.card.parent, results)  # the committed results file the card is generated from
    write_card(args.card.parent, args.enhancer, args.card)
    return 0
