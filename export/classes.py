"""`python -m export classes`: the 5-class set's "not sure" threshold, and its figures beside the 7 classes.

No retraining: with vision.classes = 5 the shipped model's seven probabilities are summed into five
(edge.results.CLASS_SETS). A merged confidence is higher than a 7-class one, so it gets its own threshold,
fitted by the 7-class rule (export/build.py: the lowest confidence at which spoken answers on masked
validation faces are right ≥ 75 %) on our validation split of FER2013 Training, never on PublicTest: the
shipped int8 file through the device runtime, on the prepared masked views and their mirrors (export/dataset.py).
It goes into the sidecar (`class_sets`, with its provenance) and the manifest. Then each test set is read
through the device pipeline in both class sets, as `python -m export evaluate --json [--set
vision.classes=5]` reads it, into models/results/five_classes.json; `python -m export.card` puts that in
the model card.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.files import write_atomic
from edge.hw.light import LOWLIGHT
from edge.results import class_index, labels_for
from export.build import calibrate_class_set, update_manifest

_LOGGER = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "models" / "results" / "five_classes.json"
COMMAND = "python -m export classes"
TEST_SETS = {
    "unmasked": ("../shared/data/fer2013/fer2013_publictest.npz", "auto"),
    "masked": ("cache/publictest_masked.npz", "auto"),
    "masked, dark (6 % light)": ("cache/publictest_masked_dark6.npz", "auto"),
}
"""name → (npz, --lowlight): the sets the model card reports, relative to the repository root."""


def validation_probs(model: Any, faces: np.ndarray, mirrored: np.ndarray, features: np.ndarray, mirrored_features: np.ndarray) -> np.ndarray:
    """[N, 7] probabilities of prepared views, mirror-averaged logits as the device does (test-time flip)."""
    return model.probabilities((model.run(faces, features) + model.run(mirrored, mirrored_features)) / 2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edge.runtime import DEFAULT_BACKEND
    from export.dataset import SHARED_FER

    parser.add_argument("--train", type=Path, default=SHARED_FER / "fer2013_train.npz", help="FER2013 Training npz (its prepared views in --cache)")
    parser.add_argument("--cache", type=Path, default=ROOT / "cache", help="folder of the prepared views (export/dataset.py)")
    parser.add_argument("--model", type=Path, default=None, help="sidecar JSON to calibrate and measure (default: models/expression.json)")
    parser.add_argument("--backend", choices=("tflite", "onnx"), default=DEFAULT_BACKEND, help="runtime of the int8 file (default %(default)s)")
    parser.add_argument("--skip-sets", action="store_true", help="calibrate only: do not read the test sets")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results file (default %(default)s)")


def main(args: argparse.Namespace) -> int:
    from edge.pipeline import Pipeline
    from edge.vision.expression import DEFAULT_SIDECAR, ExpressionModel
    from export.dataset import prepare
    from export.evaluate import load_npz, predict
    from export.metrics import report

    sidecar = Path(args.model or DEFAULT_SIDECAR)
    data = prepare(args.train, args.cache)
    val = np.flatnonzero(data.val)
    model = ExpressionModel(sidecar, backend=args.backend, precision="int8", threads=2)
    try:
        probs = validation_probs(model, data.faces[2, val], data.faces[3, val], data.features[2, val], data.features[3, val])
        variant = model.variant
    finally:
        model.close()
    y_val = data.y[val]
    del data  # 1.6 GB of prepared views, not needed for the test sets
    source = (f"masked views (and mirrors) of our validation split of FER2013 Training ({len(val):,} faces, never PublicTest), "
              f"{variant} file through the device runtime, `{COMMAND}`")
    calibration = {str(c): calibrate_class_set(probs, y_val, c, source) for c in (7, 5)}
    spec = json.loads(sidecar.read_text())
    _LOGGER.info("7 classes: threshold %.2f by this rule (sidecar: %.2f); 5 classes: %.2f, answering %.1f %% at %.1f %% right",
                 calibration["7"]["unsure_threshold"], spec["unsure_threshold"], calibration["5"]["unsure_threshold"],
                 100 * calibration["5"]["answered_share"], 100 * calibration["5"]["answered_precision"])
    spec["class_sets"] = {"5": calibration["5"]}
    write_atomic(sidecar, (json.dumps(spec, indent=2) + "\n").encode("utf-8"))
    update_manifest(sidecar.parent, [sidecar.name])
    if args.skip_sets:
        return 0

    runs: dict[str, Any] = {}
    for name, (path, lowlight) in TEST_SETS.items():
        x, y7 = load_npz(ROOT / path)
        runs[name] = {"data": path, "lowlight": lowlight}
        for classes in (7, 5):
            start = time.perf_counter()
            y = np.asarray(class_index(classes))[y7]
            with Pipeline(model=sidecar, backend=args.backend, precision="int8", max_faces=2, classes=classes) as pipeline:
                preds, extra = predict(pipeline, x, LOWLIGHT[lowlight], y, labels_for(classes))
            runs[name][str(classes)] = {**report(y, preds, labels_for(classes)), **extra}
            runs[name][str(classes)]["command"] = (f"python -m export evaluate --data {path} --json --lowlight {lowlight}"
                                                   + (f" --set vision.classes={classes}" if classes != 7 else ""))
            _LOGGER.info("%s, %d classes: accuracy %.4f, answered %.4f, right when answered %s (%.0f s)", name, classes,
                         runs[name][str(classes)]["accuracy"], extra["answered"], extra["accuracy_answered"], time.perf_counter() - start)
    results = {"command": COMMAND, "model": f"{sidecar.name}, {variant}", "calibration": calibration, "runs": runs}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.results, (json.dumps(results, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    _LOGGER.info("wrote %s; `python -m export.card` puts it in the model card", args.results)
    return 0
