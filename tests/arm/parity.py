"""Scores of every shipped model on a fixed set of inputs, on whichever machine runs this.

tests/arm/check.py runs this file twice, with the x86_64 venv and with the emulated aarch64 venv,
on the same inputs file, and compares the two outputs. The faces go through the device's own
stages (`find_faces` → `face_samples` → the model), the same calls `Pipeline.analyze` makes for a
dataset image, so the comparison covers detection, landmarks, alignment and HOG features as well as
the expression model itself. With --samples-from, each model is also run on the other machine's
upper-face samples: the difference then comes from the model runtimes alone.

Usage: python tests/arm/parity.py --inputs INPUTS.npz --out SCORES.npz [--samples-from OTHER.npz]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edge.errors import ModelError  # noqa: E402
from edge.runtime import BACKENDS, open_model  # noqa: E402
from edge.vision.expression import ExpressionModel, sha256_file, verified_file  # noqa: E402
from edge.pipeline import face_samples, find_faces  # noqa: E402
from edge.vision.faces import FaceMesh  # noqa: E402
from edge.vision.upperface import UpperFaceSample  # noqa: E402

MODELS = ROOT / "models"
EXPRESSION_INPUTS = {"face", "landmarks"}


def shipped_variants(models: Path = MODELS) -> list[tuple[Path, str]]:
    """(sidecar, variant) for every model file in the manifest; a file no sidecar describes is an error."""
    manifest = json.loads((models / "manifest.json").read_text())["models"]
    described: dict[str, tuple[Path, str]] = {}
    for name in sorted(manifest):
        if not name.endswith(".json"):
            continue
        spec = json.loads((models / name).read_text())
        for variant, entry in spec.get("files", {}).items():
            described[entry["file"]] = (models / name, variant)
    missing = [n for n in sorted(manifest) if not n.endswith(".json") and n not in described]
    if missing:
        raise ModelError(f"models/manifest.json lists {', '.join(missing)} but no sidecar JSON describes it: add it to a sidecar's \"files\"")
    return sorted(set(described.values()))


def detect_samples(images: np.ndarray) -> tuple[list[UpperFaceSample], np.ndarray]:
    """One upper-face sample per image, made by the calls `Pipeline.analyze(image, assume_face=True)` makes,
    for the face `export evaluate` reads (the largest; max_faces=2 as there)."""
    samples, detected = [], np.zeros(len(images), dtype=bool)
    with FaceMesh(threads=1, max_faces=2) as mesh:
        for i, image in enumerate(images):
            faces = find_faces(mesh, image)
            best = [max(faces, key=lambda f: f.box[2] * f.box[3])] if faces else []
            detected[i] = bool(best) and not best[0].fallback
            samples.append(face_samples(image, best, assume_face=True)[0])
    return samples, detected


def samples_from(data: Any) -> list[UpperFaceSample]:
    return [UpperFaceSample(face=f, features=x, landmarks=lm) for f, x, lm in zip(data["face"], data["features"], data["landmarks"])]


def _split(variant: str) -> tuple[str, str]:
    backend, _, precision = variant.partition("-")
    if backend not in BACKENDS:
        raise ModelError(f"sidecar variant {variant!r}: no runtime named {backend!r} (edge.runtime has {', '.join(BACKENDS)})")
    return backend, precision


def expression_scores(sidecar: Path, variant: str, samples: list[UpperFaceSample]) -> np.ndarray:
    """Probabilities [N, labels] exactly as the device computes them (temperature, test-time flip)."""
    backend, precision = _split(variant)
    model = ExpressionModel(sidecar, backend=backend, precision=precision, threads=1)
    try:
        return np.concatenate([model.probabilities(model.logits(samples[i : i + 64])) for i in range(0, len(samples), 64)])
    finally:
        model.close()


def _image_input(images: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """The fixed images shaped for a model's image input (NCHW or NHWC, 1 or 3 channels, its dtype)."""
    shape = spec["shape"]
    nchw = spec.get("layout", "NHWC").upper() == "NCHW"
    channels, height, width = (shape[1], shape[2], shape[3]) if nchw else (shape[3], shape[1], shape[2])
    out = []
    for image in images:
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        if channels == 3 and image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        elif channels == 1 and image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        image = image.reshape(height, width, channels)
        out.append(image.transpose(2, 0, 1) if nchw else image)
    array = np.stack(out)
    if np.dtype(spec.get("dtype", "float32")).kind == "f":
        # "none: … 0..255 …" (scaled inside the graph) gets raw pixel values, anything else 0..1
        raw = str(spec.get("normalisation", "")).startswith("none")
        array = array.astype(np.float32) / (1.0 if raw else 255.0)
    return array


def generic_outputs(sidecar: Path, spec: dict[str, Any], variant: str, images: np.ndarray) -> np.ndarray:
    """Raw first output [N, …] of a model that is not the expression classifier (e.g. an enhancer)."""
    backend, _ = _split(variant)
    path = verified_file(sidecar, spec, variant)
    inputs = spec["inputs"]
    if len(inputs) != 1 or len(inputs[0].get("shape", [])) != 4:
        raise ModelError(f"{sidecar}: parity knows how to feed one 4-D image input, this sidecar has {inputs}")
    tensors = spec["files"][variant].get("tensors", {})
    model = open_model(path, backend, threads=1, tensor_names=[tensors.get(inputs[0]["name"], inputs[0]["name"])])
    try:
        feed = _image_input(images, inputs[0])
        return np.concatenate([np.asarray(model.run([feed[i : i + 1]])[0], dtype=np.float32) for i in range(len(feed))])
    finally:
        model.close()


def model_outputs(images: np.ndarray, samples: list[UpperFaceSample], prefix: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for sidecar, variant in shipped_variants():
        spec = json.loads(sidecar.read_text())
        start = time.perf_counter()
        # which bytes were run: models/ may be replaced by a retrained model while the check runs
        out[f"sha256:{sidecar.stem}/{variant}"] = np.array(sha256_file(sidecar.parent / spec["files"][variant]["file"]))
        if "labels" in spec and {i["name"] for i in spec["inputs"]} <= EXPRESSION_INPUTS:
            out[f"{prefix}{sidecar.stem}/{variant}"] = expression_scores(sidecar, variant, samples)
        elif images is not None:
            out[f"{prefix}{sidecar.stem}/{variant}"] = generic_outputs(sidecar, spec, variant, images)
        else:
            continue
        print(f"{platform.machine()}: {prefix}{sidecar.stem}/{variant} in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=Path, required=True, help="npz with x: uint8 images [N,H,W] or [N,H,W,3]")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--samples-from", type=Path, default=None, help="another machine's output: also score its samples")
    args = parser.parse_args(argv)

    images = np.load(args.inputs)["x"]
    start = time.perf_counter()
    samples, detected = detect_samples(images)
    print(f"{platform.machine()}: {len(images)} upper-face samples in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    result: dict[str, np.ndarray] = {
        "face": np.stack([s.face for s in samples]),
        "features": np.stack([s.features for s in samples]),
        "landmarks": np.stack([s.landmarks for s in samples]),
        "detected": detected,
        "machine": np.array(platform.machine()),
    }
    result.update(model_outputs(images, samples, ""))
    if args.samples_from is not None:
        result.update(model_outputs(None, samples_from(np.load(args.samples_from)), "given:"))
    tmp = args.out.with_name(args.out.name + ".tmp.npz")
    np.savez_compressed(tmp, **result)
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
