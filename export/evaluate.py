"""`python -m export evaluate --data FILE.npz --json`: the SHIPPED model, through the device pipeline.

No torch here: this runs in the plain runtime environment from `make setup`, on exactly the file
the glasses load (int8 by default), through `Pipeline.analyze` — detection, landmarks, alignment,
features, classification — with every dataset image taken as a face photo.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from edge.cli_config import add_config_arguments, config_from_args
from edge.errors import EdgeError
from edge.hw.light import LOWLIGHT
from edge.runtime import DEFAULT_BACKEND

_LOGGER = logging.getLogger(__name__)

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="npz with x uint8 [N,H,W] or [N,H,W,3] and y int [N] (FER2013 order)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--lowlight", choices=tuple(LOWLIGHT), default="auto",
                        help="night branch: auto = the glasses' day/night rule on each image's brightness ([light] of --config), on, off")
    add_config_arguments(parser)
    parser.add_argument("--enhancer", default=None, help="night branch: enhancer sidecar JSON (default models/enhancer.json) or 'classical' (gamma/CLAHE)")
    parser.add_argument("--plot", type=Path, default=None, help="write the confusion matrix as a PNG")
    parser.add_argument("--model", type=Path, default=None, help="sidecar JSON (default: models/expression.json)")
    parser.add_argument("--backend", choices=("tflite", "onnx"), default=DEFAULT_BACKEND, help="expression-model runtime (default %(default)s)")
    parser.add_argument("--precision", choices=("int8", "fp32"), default="int8")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--min-presence", type=float, default=None, metavar="P",
                        help="landmark model's face-presence level below which an image is read whole and unaligned "
                             "(default: the device's, edge.vision.faces.MIN_PRESENCE); 0 aligns every image — a diagnosis, not a setting")


def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        data = np.load(path)
        x, y = data["x"], np.asarray(data["y"], dtype=np.int64)
    except FileNotFoundError as exc:
        raise EdgeError(f"{path}: no such file") from exc
    except KeyError as exc:
        raise EdgeError(f"{path}: needs arrays 'x' (uint8 images) and 'y' (labels 0..6)") from exc
    except (OSError, ValueError) as exc:
        raise EdgeError(f"{path}: not a readable .npz ({exc})") from exc
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or len(x) != len(y):
        raise EdgeError(f"{path}: x must be uint8 [N,H,W] or [N,H,W,3] with one label per image (got {x.dtype} {x.shape}, {len(y)} labels)")
    if len(y) and (y.min() < 0 or y.max() > 6):
        raise EdgeError(f"{path}: labels must be 0..6 in FER2013 order")
    return x, y


def predict(pipeline, x: np.ndarray, lowlight: bool | None, y: np.ndarray | None = None,
            labels: tuple[str, ...] | None = None) -> tuple[np.ndarray, dict[str, float | None]]:
    """Top-1 label per image (largest face when several are found), the share of images where the
    detector found the face and the share that went down the night branch; given the labels `y`, also
    split_accuracy (aligned vs read whole, and the answers the glasses would speak vs those they would
    call "not sure"). Labels are indices into `labels`, the pipeline's class set (default: the 7 of FER2013)."""
    preds = np.empty(len(x), dtype=np.int64)
    aligned = np.zeros(len(x), dtype=bool)
    answered = np.zeros(len(x), dtype=bool)
    detected = night = 0
    from edge.results import LABELS

    labels = labels or LABELS
    for i, image in enumerate(x):
        result = pipeline.analyze(image, lowlight=lowlight, assume_face=True)
        face = max(result.faces, key=lambda f: f.box[2] * f.box[3])
        preds[i] = labels.index(face.label)
        detected += not face.fallback
        night += result.lowlight
        aligned[i] = face.aligned
        answered[i] = not face.unsure
    extra: dict[str, float | None] = {"detected": round(detected / max(len(x), 1), 4), "night": round(night / max(len(x), 1), 4)}
    if y is not None:
        extra.update(split_accuracy(y, preds, aligned, answered))
    return preds, extra


def _share_and_accuracy(right: np.ndarray, part: np.ndarray, share: str, inside: str, outside: str | None) -> dict[str, float | None]:
    out: dict[str, float | None] = {
        share: round(float(part.mean()), 4) if len(part) else 0.0,
        inside: round(float(right[part].mean()), 4) if part.any() else None,
    }
    if outside is not None:
        out[outside] = round(float(right[~part].mean()), 4) if (~part).any() else None
    return out


def split_accuracy(y: np.ndarray, preds: np.ndarray, aligned: np.ndarray, answered: np.ndarray | None = None) -> dict[str, float | None]:
    """Share aligned, and the accuracy of the aligned and of the whole-image reads; given `answered`
    (the label was spoken, not "not sure"), also that share and how often the spoken label is right
    (None when a part is empty)."""
    right = preds == y
    out = _share_and_accuracy(right, aligned, "aligned", "accuracy_aligned", "accuracy_unaligned")
    if answered is not None:
        out.update(_share_and_accuracy(right, answered, "answered", "accuracy_answered", None))
    return out


def main(args: argparse.Namespace) -> int:
    from edge.pipeline import Pipeline
    from edge.vision.expression import DEFAULT_SIDECAR
    from export.metrics import plot_confusion, report

    from edge.results import class_index, labels_for

    config = config_from_args(args)
    light, classes = config.light, config.vision.classes
    if args.plot:
        from edge.plotting import matplotlib_or_refuse

        matplotlib_or_refuse("--plot")  # before the run, not after it
    x, y = load_npz(args.data)
    y = np.asarray(class_index(classes))[y]  # FER2013 labels → the class set's (--set vision.classes=5 merges)
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    start = time.perf_counter()
    from edge.vision.enhance import DEFAULT_ENHANCER, ClassicalEnhancer

    enhancer = ClassicalEnhancer() if args.enhancer == "classical" else Path(args.enhancer or DEFAULT_ENHANCER)
    with Pipeline(
        model=args.model or DEFAULT_SIDECAR, backend=args.backend, precision=args.precision, threads=args.threads, max_faces=2, enhancer=enhancer,
        light=light, classes=classes,
    ) as pipeline:
        if args.min_presence is not None:
            if not 0.0 <= args.min_presence <= 1.0:
                raise EdgeError(f"--min-presence {args.min_presence}: must be within 0..1 (a probability)")
            pipeline.mesh.min_presence = args.min_presence
        preds, extra = predict(pipeline, x, LOWLIGHT[args.lowlight], y, labels_for(classes))
        extra["min_presence"] = pipeline.mesh.min_presence
        model_file = pipeline.expression.path.name
        enhancer_name = pipeline.enhancer.name
    out = report(y, preds, labels_for(classes))
    out.update({"classes": classes, "model": model_file, "lowlight": args.lowlight, "enhancer": enhancer_name, **extra, "seconds": round(time.perf_counter() - start, 1)})
    if args.plot:
        plot_confusion(out["confusion"], args.plot, f"{args.data.name}: {model_file}, accuracy {out['accuracy']:.1%}", labels_for(classes))
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{args.data}: n={out['n']} accuracy={out['accuracy']:.2%} macro-F1={out['macro_f1']:.3f} ({model_file})")
        for name, m in out["per_class"].items():
            print(f"  {name:9s} precision {m['precision']:.2f}  recall {m['recall']:.2f}  specificity {m['specificity']:.2f}  F1 {m['f1']:.2f}")
    return 0
