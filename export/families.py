"""`python -m export families`: the shipped model on every mask family (export.masks.FAMILIES), and on the real masked photos.

Each family masks every PublicTest face (seeded, on the face's own cached mesh, as `export mask` does); the
masked faces go through the device pipeline with the shipped int8 model exactly as `export evaluate` runs
them (export.evaluate.predict: re-detection on the masked image, alignment, the night rule, "not sure"),
and the report gives accuracy, macro-F1, the share of faces detected and answered and the accuracy of the
answers spoken. Reference rows: the faces unmasked, and masked by the shipped model's own generator
(random_style). The real masked photos (../shared/data/faces/*mask*) have no labels: the report says whether
a face was found and what the glasses would say. Writes models/results/families.json after every family;
`python -m export.card` puts it in the model card. No torch: runs in the device environment.
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

RESULTS = MODELS / "results" / "families.json"
SHARED_FACES = SHARED_FER.parent / "faces"
REFERENCES = ("unmasked", "shipped generator")
"""Rows beside the families: no mask, and our own generator (what the shipped model was trained with)."""
BARS = {"worst": 0.55, "mean": 0.58, "unmasked": 0.66}
"""Issue #17's done-when bars (7 classes, PublicTest, int8, device pipeline)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from export.masks import FAMILIES

    p.add_argument("--data", type=Path, default=SHARED_FER / "fer2013_publictest.npz", help="labelled npz (FER2013 order)")
    p.add_argument("--cache", type=Path, default=Path("cache"), help="landmark cache folder (the faces' own meshes)")
    p.add_argument("--family", action="append", choices=list(FAMILIES), default=None, help="only these families (repeatable; default all)")
    p.add_argument("--no-references", action="store_true", help="skip the unmasked and shipped-generator rows")
    p.add_argument("--seed", type=int, default=2013, help="mask styles are drawn from this seed (the masked test set's)")
    p.add_argument("--photos", type=Path, nargs="*", default=None,
                   help="unlabelled photos to report what is said on (default: ../shared/data/faces/*mask*)")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--limit", type=int, default=None, help="only the first N faces")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--model", type=Path, default=None, help="sidecar JSON (default: models/expression.json)")
    p.add_argument("--precision", choices=("int8", "fp32"), default="int8")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def measure(pipeline, x: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    """One test set through the pipeline as `export evaluate` runs it: the figures the report keeps."""
    from edge.results import LABELS
    from export.evaluate import predict
    from export.metrics import report

    start = time.perf_counter()
    preds, extra = predict(pipeline, x, None, y, LABELS)
    out = report(y, preds, LABELS)
    return {"n": out["n"], "accuracy": out["accuracy"], "macro_f1": out["macro_f1"], "detected": extra["detected"],
            "aligned": extra["aligned"], "answered": extra["answered"], "accuracy_answered": extra["accuracy_answered"],
            "seconds": round(time.perf_counter() - start, 1)}


def summarise(families: dict[str, dict], overlap: dict[str, str]) -> dict[str, object]:
    """Worst and mean accuracy over all the families, and over those the shipped generator does not draw."""
    out: dict[str, object] = {}
    for name, keep in (("all", lambda f: True), ("not_in_training", lambda f: overlap[f] != "yes")):
        chosen = {f: r["accuracy"] for f, r in families.items() if keep(f)}
        if not chosen:
            continue
        worst = min(chosen, key=chosen.get)
        out[name] = {"families": list(chosen), "worst_family": worst, "worst": chosen[worst],
                     "mean": round(float(np.mean(list(chosen.values()))), 4)}
    return out


def photo_report(pipeline, paths: list[Path]) -> list[dict[str, object]]:
    """What the glasses find and say on each photo (read as `edge analyze` reads it, day/night rule on)."""
    from edge import images
    from edge.cli_analyze import MIN_SIDE
    from edge.speech.phrases import describe

    rows = []
    for path in paths:
        frame, size = images.read_scaled(path, MIN_SIDE)
        result = pipeline.analyze(frame, lowlight=None)
        rows.append({
            "file": path.name,
            "faces_found": sum(not f.fallback for f in result.faces),
            "faces": [{"label": f.label, "confidence": round(f.confidence, 3), "unsure": f.unsure, "aligned": f.aligned,
                       "box": list(f.box)} for f in result.in_image((frame.shape[1], frame.shape[0]), size).faces],
            "said": describe(result),
        })
    return rows


def default_photos() -> list[Path]:
    return sorted(SHARED_FACES.glob("*mask*")) if SHARED_FACES.is_dir() else []


def command(args: argparse.Namespace) -> str:
    parts = ["python -m export families"]
    parts += [f"--family {f}" for f in args.family or []]
    parts += [f"--seed {args.seed}"] if args.seed != 2013 else []
    parts += [f"--limit {args.limit}"] if args.limit else []
    parts += ["--no-references"] if args.no_references else []
    return " ".join(parts)


def main(args: argparse.Namespace) -> int:
    from edge.pipeline import Pipeline
    from edge.vision.expression import DEFAULT_SIDECAR
    from export.dataset import mesh_array, usable_landmarks
    from export.evaluate import load_npz
    from export.landmarks import cached_landmarks
    from export.masks import FAMILIES, mask_batch

    names = args.family or list(FAMILIES)
    photos = default_photos() if args.photos is None else list(args.photos)
    missing = [p for p in photos if not p.is_file()]
    if missing:
        raise EdgeError(f"--photos: {', '.join(map(str, missing))} not found")
    x, y = load_npz(args.data)
    landmarks = mesh_array(usable_landmarks(cached_landmarks(args.data, args.cache)))
    if args.limit:
        x, y, landmarks = x[: args.limit], y[: args.limit], landmarks[: args.limit]
    overlap = {f: FAMILIES[f].shipped_overlap.split(":")[0] for f in names}
    results: dict[str, object] = {
        "command": command(args), "data": args.data.name, "n": int(len(y)), "seed": args.seed, "precision": args.precision,
        "lowlight": "auto", "bars": BARS, "complete": False,
        "families": {}, "references": {}, "summary": {}, "photos": [],
    }

    def save() -> None:
        results["summary"] = summarise(results["families"], overlap)
        args.results.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.results, (json.dumps(results, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))

    start = time.perf_counter()
    with Pipeline(model=args.model or DEFAULT_SIDECAR, precision=args.precision, threads=args.threads, max_faces=2) as pipeline:
        results["model"] = pipeline.expression.path.name
        if not args.no_references:
            results["references"]["unmasked"] = measure(pipeline, x, y)
            masked, _ = mask_batch(x, landmarks, seed=args.seed, fraction=1.0)
            results["references"]["shipped generator"] = measure(pipeline, masked, y)
            _LOGGER.info("references: %s", json.dumps(results["references"]))
            save()
        for name in names:
            masked, _ = mask_batch(x, landmarks, seed=args.seed, fraction=1.0, families=[name])
            row = measure(pipeline, masked, y)
            family = FAMILIES[name]
            results["families"][name] = {"description": family.description, "in_shipped_training": overlap[name],
                                         "shipped_overlap": family.shipped_overlap, **row}
            _LOGGER.info("%s: %s", name, json.dumps(row))
            save()  # after every family: a run stopped by the clock leaves what it measured
        results["photos"] = photo_report(pipeline, photos)
    results["complete"] = True
    results["seconds"] = round(time.perf_counter() - start, 1)
    save()
    if args.json:
        print(json.dumps(results))
    else:
        for name, r in results["families"].items():
            print(f"{name:12s} accuracy {r['accuracy']:.1%}  macro-F1 {r['macro_f1']:.3f}  detected {r['detected']:.0%}  "
                  f"answered {r['answered']:.0%} at {r['accuracy_answered'] or 0:.1%} right  (in shipped training: {r['in_shipped_training']})")
        for p in results["photos"]:
            print(f"{p['file']}: {p['faces_found']} face(s) found, says \"{p['said']}\"")
        print(f"→ {args.results}")
    return 0
