"""The expression model: seven scores, a label, a calibrated confidence and an honest "unsure".

The device reads only the sidecar JSON: which file to run for each backend, its sha256, the
preprocessing version it was trained with, the input names, the temperature fitted on validation
data and the confidence threshold below which we say "not sure" (one per class set: with
vision.classes = 5 the seven probabilities are summed into five, edge.results.CLASS_SETS, and the
merged confidence has its own threshold, `class_sets` in the sidecar). A model whose file or
preprocessing does not match its sidecar is refused, because a silently wrong answer spoken to
someone who cannot check it is worse than no answer.
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edge.errors import ModelError
from edge.files import sha256_file
from edge.results import CLASS_SETS, LABELS, class_index, labels_for
from edge.runtime import DEFAULT_BACKEND, Backend, open_model
from edge.vision.upperface import PREPROCESSING_VERSION, UpperFaceSample, flip_sample

_LOGGER = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
DEFAULT_SIDECAR = MODELS_DIR / "expression.json"


@dataclass(frozen=True)
class Expression:
    scores: dict[str, float]
    label: str
    confidence: float
    unsure: bool


def merge_classes(probs: np.ndarray, classes: int) -> np.ndarray:
    """[N, 7] FER2013 probabilities → [N, classes]: summed within each label of the class set (7: as they are)."""
    return probs if classes == len(LABELS) else probs @ _merge_matrix(classes).astype(probs.dtype, copy=False)


@functools.cache
def _merge_matrix(classes: int) -> np.ndarray:
    return np.eye(len(CLASS_SETS[classes]), dtype=np.float32)[list(class_index(classes))]


SIDECAR_KEYS = ("labels", "preprocessing", "inputs", "files", "temperature", "unsure_threshold")
"""What an expression-model sidecar must hold; other models (the low-light enhancer) pass their own."""


def load_sidecar(path: Path, required: Sequence[str] = SIDECAR_KEYS) -> dict[str, Any]:
    try:
        spec = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"model sidecar {path} is missing: restore models/ from git or point vision.model at a sidecar JSON") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"model sidecar {path} is unreadable ({exc}): restore it from git") from exc
    for key in required:
        if key not in spec:
            raise ModelError(f"model sidecar {path} has no {key!r}: re-export the model with `python -m export`")
    return spec


def verified_file(sidecar: Path, spec: dict[str, Any], variant: str) -> Path:
    """The model file for a variant (e.g. "tflite-int8"), after checking its sha256 against the sidecar."""
    entry = spec["files"].get(variant)
    if entry is None:
        raise ModelError(f"{sidecar} lists no {variant!r} file (has: {', '.join(spec['files'])})")
    path = sidecar.parent / entry["file"]
    if not path.is_file():
        raise ModelError(f"model file {path} is missing: restore models/ from git (`git checkout -- models`)")
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise ModelError(
            f"model file {path} does not match its sidecar (sha256 {actual[:12]}… ≠ {entry['sha256'][:12]}…): "
            "the file is corrupt or from another export; restore models/ from git or re-export"
        )
    if path.suffix == ".tflite":
        check_tflite_loads(path, actual)
    return path


_LOADS_CLEANLY: set[str] = set()
"""sha256 of the TFLite files this process has seen load and run in a child process."""

_PROBE = """
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from edge.runtime import open_model
try:
    model = open_model(sys.argv[2], "tflite", threads=1)
    model.run([np.zeros(shape, np.float32) for shape in model.input_shapes])
except Exception as exc:
    print(exc)
    sys.exit(3)
"""
PROBE_TIMEOUT_S = 120.0


def check_tflite_loads(path: Path, sha256: str) -> None:
    """Load and run a TFLite file once in a short-lived child process, before this process touches it.

    The TFLite runtime trusts a file's structure: a truncated or damaged file, even one its sidecar's
    sha256 was made to match, can kill the process with a segfault (the wearer loop gone, no log line)
    instead of raising. In a child that crash becomes a ModelError here. Once per file content (sha256)
    per process; the default ONNX backend needs none (onnxruntime validates its files)."""
    if sha256 in _LOADS_CLEANLY:
        return
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, str(MODELS_DIR.parent), str(path)], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ModelError(f"{path}: a test load did not finish within {PROBE_TIMEOUT_S:.0f} s; re-export it or restore it from git") from None
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        raise ModelError(
            f"model file {path} crashed the TFLite runtime ({name}) in a test load: it is damaged although its sha256 "
            "matches the sidecar; restore models/ from git or re-export it"
        )
    if done.returncode != 0:
        reason = " ".join(done.stdout.split()) or (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise ModelError(reason if reason.startswith(str(path)) else f"{path}: {reason}")
    _LOADS_CLEANLY.add(sha256)


class ExpressionModel:
    """One loaded expression model, run through the configured backend."""

    def __init__(
        self,
        sidecar: Path | str = DEFAULT_SIDECAR,
        backend: str = DEFAULT_BACKEND,
        threads: int = 2,
        precision: str = "int8",
        providers: Sequence[str] | None = None,
        classes: int = 7,
    ) -> None:
        self.sidecar = Path(sidecar)
        self.spec = load_sidecar(self.sidecar)
        if self.spec["preprocessing"] != PREPROCESSING_VERSION:
            raise ModelError(
                f"{self.sidecar} was trained with preprocessing {self.spec['preprocessing']!r} but this code makes "
                f"{PREPROCESSING_VERSION!r}: install the model that ships with this version, or re-export"
            )
        if tuple(self.spec["labels"]) != LABELS:
            raise ModelError(f"{self.sidecar}: labels {self.spec['labels']} are not the FER2013 order {list(LABELS)}")
        self.classes = classes
        """The class set `predict` answers in unless told otherwise (vision.classes)."""
        self.unsure_threshold = self.threshold(classes)  # before the model file is opened: a missing one is refused first
        self.variant = f"{backend}-{precision}"
        self.path = verified_file(self.sidecar, self.spec, self.variant)
        self._inputs = [i["name"] for i in self.spec["inputs"]]
        tensors = self.spec["files"][self.variant].get("tensors", {})
        self._model: Backend = open_model(
            self.path, backend, threads, tensor_names=[tensors.get(n, n) for n in self._inputs], providers=providers
        )
        self.providers: tuple[str, ...] = tuple(getattr(self._model, "providers", ()))
        """onnxruntime execution providers in use (empty for tflite)."""
        self.temperature = float(self.spec["temperature"])
        self.flip = bool(self.spec.get("test_time_flip", False))

    def logits(self, samples: Sequence[UpperFaceSample]) -> np.ndarray:
        """Raw logits [N, 7]; with test-time flip, the mean over the face and its mirror image."""
        batch = list(samples)
        if self.flip:
            batch += [flip_sample(s) for s in samples]
        out = self.run([s.face for s in batch], [s.features for s in batch])
        if self.flip:
            out = (out[: len(samples)] + out[len(samples) :]) / 2
        return out

    def run(self, faces: Sequence[np.ndarray], features: Sequence[np.ndarray]) -> np.ndarray:
        """Raw logits [N, 7] of aligned faces (uint8 48×48) and their landmark features ([L, 74]) as given, no
        mirror: `logits` for samples; the calibration (export/classes.py) for prepared views."""
        arrays = []
        for name in self._inputs:
            if name == "face":
                arrays.append(np.stack(faces).astype(np.float32)[:, None])
            elif name == "landmarks":
                arrays.append(np.stack(features).astype(np.float32))
            else:
                raise ModelError(f"{self.sidecar}: unknown model input {name!r}")
        n = len(arrays[0])
        out = np.concatenate([self._run_one(arrays, i) for i in range(n)]) if self._static else self._model.run(arrays)[0]
        return out.reshape(n, len(LABELS))

    @property
    def _static(self) -> bool:
        return self._model.name == "tflite"

    def _run_one(self, arrays: list[np.ndarray], i: int) -> np.ndarray:
        return self._model.run([a[i : i + 1] for a in arrays])[0]

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        z = logits / self.temperature
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def threshold(self, classes: int) -> float:
        """The "not sure" threshold of a class set: `unsure_threshold` for 7, `class_sets` for the others."""
        if classes not in CLASS_SETS:
            raise ModelError(f"{classes} classes: the class sets are {', '.join(map(str, CLASS_SETS))}")
        if classes == len(LABELS):
            return float(self.spec["unsure_threshold"])
        entry = self.spec.get("class_sets", {}).get(str(classes))
        if entry is None:
            raise ModelError(f"{self.sidecar} has no \"not sure\" threshold for {classes} classes: "
                             f"calibrate one with `python -m export classes`, or set vision.classes = 7")
        return float(entry["unsure_threshold"])

    def predict(self, samples: Sequence[UpperFaceSample], classes: int | None = None) -> list[Expression]:
        """One reading per sample in `classes` (default: the model's own class set)."""
        classes = classes or self.classes
        threshold, labels = self.threshold(classes), labels_for(classes)
        if not samples:
            return []
        probs = merge_classes(self.probabilities(self.logits(samples)), classes)
        out = []
        for p in probs:
            best = int(p.argmax())
            out.append(
                Expression(
                    scores={label: float(v) for label, v in zip(labels, p)},
                    label=labels[best],
                    confidence=float(p[best]),
                    unsure=bool(p[best] < threshold),
                )
            )
        return out

    def close(self) -> None:
        self._model.close()
