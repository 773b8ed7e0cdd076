"""`python -m export build`: trained checkpoint → ONNX/TFLite fp32 + int8, parity, calibration, models/.

For each candidate — (a) landmark+HOG, (b) image, (c) fusion — this exports all four formats,
checks them against PyTorch on 500 PublicTest faces (fails loudly), fits the temperature and the
"unsure" threshold on our validation split, then evaluates the int8 file through the device
pipeline on PublicTest, masked and unmasked. The best by masked accuracy is copied to models/ with
its sidecar, the manifest, the results files the model card is generated from (models/results/) and the card.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from export.candidates import INPUTS, TITLES

_LOGGER = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
FLOAT_OPS = {"onnx": ("Softplus", "Tanh", "Exp", "Min"), "tflite": ("EXP", "ADD", "LOG", "TANH", "SUB", "MUL", "DIV", "MINIMUM")}
"""Elementwise ops kept in float in the int8 files; convolutions and matrix products stay int8.
In ONNX these are seeds: the elementwise nodes they feed stay float too (convert.float_chain).

Mish's exp/log chain (export/nets.Mish) and, in TFLite, the in-graph standardisation of the HOG
features (SUB/DIV, per-feature scales that one int8 scale cannot hold) lost the landmark model its
parity when quantised: 71 % top-1 agreement with PyTorch with them in int8, ≥ 95 % without."""
ANSWERED_PRECISION = 0.75
"""The unsure threshold is the lowest confidence at which spoken answers are right this often on masked validation faces."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from export.dataset import SHARED_FER

    parser.add_argument("--checkpoint", type=Path, default=Path("cache/run/fusion.pt"))
    parser.add_argument("--train", type=Path, default=SHARED_FER / "fer2013_train.npz")
    parser.add_argument("--test", type=Path, default=SHARED_FER / "fer2013_publictest.npz")
    parser.add_argument("--masked-test", type=Path, default=Path("cache/publictest_masked.npz"))
    parser.add_argument("--dark-masked-test", type=Path, default=Path("cache/publictest_masked_dark6.npz"),
                        help="masked PublicTest at 6 %% light (python -m export darken); skipped when absent")
    parser.add_argument("--cache", type=Path, default=Path("cache"))
    parser.add_argument("--work", type=Path, default=Path("cache/build"))
    parser.add_argument("--out", type=Path, default=ROOT / "models")
    parser.add_argument("--candidates", nargs="+", default=list(INPUTS), choices=list(INPUTS))


def update_manifest(models: Path, names: list[str]) -> None:
    """Add or refresh the manifest entries for `names` only; everyone else's entries stay as they are
    (the enhancer's build, a recalibrated sidecar: export/classes.py). Torch-free, unlike export/enhancer.py."""
    from edge.files import sha256_file, write_atomic

    path = models / "manifest.json"
    manifest = json.loads(path.read_text()) if path.is_file() else {"models": {}}
    for name in names:
        f = models / name
        manifest.setdefault("models", {})[name] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
    manifest["models"] = dict(sorted(manifest["models"].items()))
    write_atomic(path, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature minimising validation NLL (a 1-D search is enough for one parameter)."""
    best, best_nll = 1.0, np.inf
    for t in np.arange(0.5, 4.01, 0.02):
        z = logits / t
        z = z - z.max(axis=1, keepdims=True)
        nll = float(-(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(axis=1))).mean())
        if nll < best_nll:
            best, best_nll = float(t), nll
    return round(best, 3)


def unsure_threshold(probs: np.ndarray, y: np.ndarray, precision: float) -> tuple[float, float, float]:
    """(threshold, precision of answered, share answered): lowest confidence cut meeting the precision."""
    conf, right = probs.max(axis=1), probs.argmax(axis=1) == y
    for t in np.arange(0.0, 1.0, 0.01):
        keep = conf >= t
        if keep.sum() >= 20 and right[keep].mean() >= precision:
            return round(float(t), 2), float(right[keep].mean()), float(keep.mean())
    return 0.99, float(right[conf >= 0.99].mean()) if (conf >= 0.99).any() else 0.0, float((conf >= 0.99).mean())


def calibrate_class_set(probs: np.ndarray, y: np.ndarray, classes: int, calibrated_on: str) -> dict[str, Any]:
    """The "not sure" threshold of a class set (edge.results.CLASS_SETS) from [N, 7] FER2013 probabilities and
    FER2013 labels, by the 7-class rule (unsure_threshold at ANSWERED_PRECISION), with what it gives and its provenance."""
    from edge.results import class_index
    from edge.vision.expression import merge_classes

    threshold, precision, share = unsure_threshold(merge_classes(probs, classes), np.asarray(class_index(classes))[y], ANSWERED_PRECISION)
    return {
        "unsure_threshold": threshold,
        "answered_precision": round(precision, 4),
        "answered_share": round(share, 4),
        "rule": f"lowest confidence at which answers are right >= {ANSWERED_PRECISION:.0%}",
        "calibrated_on": calibrated_on,
    }


def ece(probs: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    conf, right = probs.max(axis=1), probs.argmax(axis=1) == y
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.mean() * abs(conf[m].mean() - right[m].mean())
    return round(float(total), 4)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def main(args: argparse.Namespace) -> int:
    import torch
    from torch import nn

    from edge.vision.upperface import PREPROCESSING_VERSION, sample_or_whole
    from export import convert
    from export.dataset import prepare, usable_landmarks
    from export.evaluate import load_npz, predict
    from export.landmarks import cached_landmarks
    from export.metrics import report
    from export.train import load_checkpoint
    from edge.pipeline import Pipeline
    from edge.results import LABELS
    from edge.runtime import DEFAULT_BACKEND

    torch.set_num_threads(2)
    data = prepare(args.train, args.cache)
    fusion, state = load_checkpoint(data, args.checkpoint)
    training = {"history": state.get("history", []), "epochs": state.get("epochs"), "width": state.get("width", 16),
                "teachers": state.get("teachers", []), "teacher_weight": state.get("teacher_weight", 0.0)}

    class Only(nn.Module):
        def __init__(self, which: str) -> None:
            super().__init__()
            self.fusion, self.which = fusion, which

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            if self.which == "face":
                return self.fusion.face_net(inputs[0])
            if self.which == "landmarks":
                return self.fusion.landmark_net(inputs[0])
            return self.fusion(inputs[0], inputs[1])

    rng = np.random.default_rng(7)
    train_idx = np.flatnonzero(~data.val)
    calib_pick = rng.choice(train_idx, 300, replace=False)
    calib_view = rng.integers(0, data.faces.shape[0], 300)  # every view, dark ones included
    calibration_all = [
        {"face": data.faces[v, i][None, None].astype(np.float32), "landmarks": data.features[v, i][None].astype(np.float32)}
        for i, v in zip(calib_pick, calib_view)
    ]

    # 500 PublicTest faces through the device path (mesh → align → features), half of them masked (aligned on
    # the clean face's mesh, where the mask was placed).
    test_x, test_y = load_npz(args.test)
    masked_x, _ = load_npz(args.masked_test)
    test_landmarks = usable_landmarks(cached_landmarks(args.test, args.cache))
    parity_samples = []
    for i in range(500):
        s = sample_or_whole(masked_x[i] if i % 2 else test_x[i], test_landmarks[i])
        parity_samples.append({"face": s.face[None, None].astype(np.float32), "landmarks": s.features[None].astype(np.float32)})

    val_idx = np.flatnonzero(data.val)
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    failed: dict[str, str] = {}
    for name in args.candidates:
        start = time.perf_counter()
        model = Only(name).eval()
        names = INPUTS[name]
        pick = lambda s: {k: s[k] for k in names}  # noqa: E731
        calib = [pick(s) for s in calibration_all]
        tests = [pick(s) for s in parity_samples]
        sample = tuple(torch.from_numpy(calibration_all[0][k]) for k in names)
        fp32_onnx = convert.to_onnx(model, sample, args.work / f"{name}.fp32.onnx", names, ["logits"])
        int8_onnx = convert.quantize_onnx_int8(fp32_onnx, args.work / f"{name}.int8.onnx", calib, float_op_types=FLOAT_OPS["onnx"])
        tfl = convert.to_tflite(
            fp32_onnx, args.work / f"{name}.fp32.tflite", args.work / f"{name}.int8.tflite", calib, float_ops=FLOAT_OPS["tflite"]
        )
        reference = convert.torch_scores_fn(model, names)
        try:
            parity = {
                "onnx-fp32": convert.check_parity(reference, convert.onnx_scores_fn(fp32_onnx), tests, label=f"{name} onnx fp32", **convert.PARITY_FP32),
                "tflite-fp32": convert.check_parity(reference, convert.tflite_scores_fn(tfl["fp32"]), tests, label=f"{name} tflite fp32", **convert.PARITY_FP32),
                "onnx-int8": convert.check_parity(reference, convert.onnx_scores_fn(int8_onnx), tests, label=f"{name} onnx int8", **convert.PARITY_INT8),
                "tflite-int8": convert.check_parity(reference, convert.tflite_scores_fn(tfl["int8"]), tests, label=f"{name} tflite int8", **convert.PARITY_INT8),
            }
        except convert.ParityError as exc:
            # A candidate whose exported files do not behave like the trained network can never ship;
            # it stays in the comparison with the reason, and the build fails if no candidate passes.
            _LOGGER.error("%s excluded: %s", name, exc)
            failed[name] = str(exc)
            continue

        # Calibrate on our validation split (never on PublicTest): clean and masked, mirror-averaged as on the device.
        with torch.no_grad():
            logits = []
            for base in (0, 2):
                views = []
                for flip in (0, 1):
                    faces = torch.from_numpy(data.faces[base + flip, val_idx].astype(np.float32))[:, None]
                    feats = torch.from_numpy(data.features[base + flip, val_idx].astype(np.float32))
                    views.append(model(*[{"face": faces, "landmarks": feats}[k] for k in names]).numpy())
                logits.append((views[0] + views[1]) / 2)
        val_logits, val_y = np.concatenate(logits), np.concatenate([data.y[val_idx]] * 2)
        temperature = fit_temperature(val_logits, val_y)
        val_probs = softmax(val_logits / temperature)
        masked_probs = val_probs[len(val_idx) :]
        threshold, answered_precision, answered_share = unsure_threshold(masked_probs, data.y[val_idx], ANSWERED_PRECISION)
        five = calibrate_class_set(masked_probs, data.y[val_idx], 5, f"masked views (and mirrors) of our validation split of FER2013 "
                                   f"Training ({len(val_idx):,} faces, never PublicTest), PyTorch, `python -m export build`")

        files = {}
        for variant, path, info in (
            ("onnx-fp32", fp32_onnx, None),
            ("onnx-int8", int8_onnx, None),
            ("tflite-fp32", Path(tfl["fp32"]["path"]), tfl["fp32"]),
            ("tflite-int8", Path(tfl["int8"]["path"]), tfl["int8"]),
        ):
            entry: dict[str, Any] = {"file": path.name, "sha256": convert.sha256_file(path), "bytes": path.stat().st_size}
            if info is not None:
                entry["tensors"] = {i["name"]: i["tensor_name"] for i in info["inputs"]}
                if info.get("float_ops"):
                    entry["float_ops"] = info["float_ops"]
            files[variant] = entry
        sidecar = {
            "name": f"expression-{name}",
            "description": TITLES[name],
            "labels": list(LABELS),
            "preprocessing": PREPROCESSING_VERSION,
            "inputs": [
                {"name": "face", "shape": [1, 1, 48, 48], "layout": "NCHW", "dtype": "float32", "normalisation": "none: raw 0..255 grey, scaled inside the graph"},
                {"name": "landmarks", "shape": [1, int(data.features.shape[2]), int(data.features.shape[3])], "dtype": "float32", "normalisation": "none: standardised inside the graph"},
            ],
            "outputs": [{"name": "logits", "shape": [1, 7]}],
            "files": files,
            "temperature": temperature,
            "unsure_threshold": threshold,
            "class_sets": {"5": five},
            "test_time_flip": True,
            "training_data": "FER2013 Training (28,709 faces, 10 % held out for validation), FER+ votes blended into the targets, 50/50 synthetic masks (export/masks.py)",
        }
        sidecar["inputs"] = [i for i in sidecar["inputs"] if i["name"] in names]
        side_path = args.work / f"{name}.json"
        side_path.write_text(json.dumps(sidecar, indent=2) + "\n")

        evals = {}
        for label, x in (("unmasked", test_x), ("masked", masked_x)):
            with Pipeline(model=side_path, backend=DEFAULT_BACKEND, precision="int8") as pipeline:
                preds, extra = predict(pipeline, x, lowlight=None)
            evals[label] = {**report(test_y, preds), **extra}
            _LOGGER.info("%s int8 %s PublicTest accuracy %.4f", name, label, evals[label]["accuracy"])
        results[name] = {
            "sidecar": side_path,
            "parity": {k: v.as_dict() for k, v in parity.items()},
            "temperature": temperature,
            "unsure": {"threshold": threshold, "answered_precision": round(answered_precision, 4), "answered_share": round(answered_share, 4)},
            "ece_val": {"before": ece(softmax(val_logits), val_y), "after": ece(val_probs, val_y)},
            "int8": evals,
            "seconds": round(time.perf_counter() - start, 1),
        }

    if not results:
        raise convert.ParityError(f"no candidate passed the export parity check: {failed}")
    best = max(results, key=lambda k: results[k]["int8"]["masked"]["accuracy"])
    _LOGGER.info("shipping %s (masked int8 accuracy %.4f)", best, results[best]["int8"]["masked"]["accuracy"])
    ship(best, results, failed, args, training, test_x, masked_x, test_y)
    return 0


def ship(best: str, results: dict[str, Any], failed: dict[str, str], args: argparse.Namespace, training: dict[str, Any], test_x, masked_x, test_y) -> None:
    """Copy the chosen candidate into models/ as expression.*, evaluate fp32 too, write manifest, results files + card."""
    from export import convert
    from export.card import save_results, write_card
    from export.evaluate import predict
    from export.metrics import plot_confusion, report
    from edge.pipeline import Pipeline
    from edge.runtime import DEFAULT_BACKEND

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    spec = json.loads(Path(results[best]["sidecar"]).read_text())
    renamed = {}
    for variant, entry in spec["files"].items():
        backend, precision = variant.split("-")
        target = out / f"expression.{precision}.{ 'onnx' if backend == 'onnx' else 'tflite'}"
        shutil.copyfile(args.work / entry["file"], target)
        renamed[variant] = {**entry, "file": target.name}
    spec["files"] = renamed
    spec["name"] = "expression"
    spec["accuracy_publictest"] = {
        k: {"accuracy": v["accuracy"], "macro_f1": v["macro_f1"]} for k, v in results[best]["int8"].items()
    }
    sidecar = out / "expression.json"
    sidecar.write_text(json.dumps(spec, indent=2) + "\n")

    fp32 = {}
    for label, x in (("unmasked", test_x), ("masked", masked_x)):
        with Pipeline(model=sidecar, backend=DEFAULT_BACKEND, precision="fp32") as pipeline:
            preds, _ = predict(pipeline, x, lowlight=None)
        fp32[label] = report(test_y, preds)
    dark: dict[str, Any] = {}
    if args.dark_masked_test.is_file():
        from export.evaluate import load_npz

        dark_x, dark_y = load_npz(args.dark_masked_test)
        for mode, flag in (("auto", None), ("off", False)):
            with Pipeline(model=sidecar, backend=DEFAULT_BACKEND, precision="int8") as pipeline:
                preds, _ = predict(pipeline, dark_x, flag)
            dark[mode] = report(dark_y, preds)
            _LOGGER.info("dark masked PublicTest, lowlight %s: accuracy %.4f", mode, dark[mode]["accuracy"])
    for label in ("unmasked", "masked"):
        plot_confusion(
            results[best]["int8"][label]["confusion"], out / f"confusion_{label}.png",
            f"FER2013 PublicTest {label}: shipped int8 ({DEFAULT_BACKEND}), accuracy {results[best]['int8'][label]['accuracy']:.1%}",
        )
    manifest = {
        "models": {
            path.name: {"sha256": convert.sha256_file(path), "bytes": path.stat().st_size}
            for path in sorted(out.iterdir())
            if path.suffix in (".onnx", ".tflite", ".json") and path.name != "manifest.json"
        }
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    # The results files the card is generated from (python -m export.card reads the same ones).
    summary = {k: {kk: vv for kk, vv in v.items() if kk != "sidecar"} for k, v in results.items()}
    save_results(out, best, summary, failed, fp32, dark, training)
    write_card(out)
