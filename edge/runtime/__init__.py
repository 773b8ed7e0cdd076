"""Inference backends behind one small interface.

A backend is registered by name and imported lazily, so a device with only ai-edge-litert never
imports onnxruntime. When the configured backend cannot be imported we fail loudly rather than
silently running something else.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from edge.errors import ModelError

_LOGGER = logging.getLogger(__name__)


class Backend(Protocol):
    """A loaded model: named inputs in, list of outputs out."""

    name: str
    input_names: tuple[str, ...]
    input_shapes: tuple[tuple[int, ...], ...]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]: ...

    def close(self) -> None: ...


def tflite_interpreter_class() -> type:
    """The TFLite interpreter the glasses use: ai-edge-litert (tflite-runtime's successor).

    Only ai-edge-litert is accepted: tflite-runtime 2.14's int8 kernels round differently on aarch64
    and x86_64 (docs/arm.md), so a board that silently fell back to it would not give the answers
    measured here. Export (export/convert.py) checks every TFLite file with this same class.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ModelError(
            "no TFLite runtime installed: install ai-edge-litert from requirements.txt "
            "(`make setup`), or set vision.backend = \"onnx\" for the expression model"
        ) from exc
    return Interpreter


class TFLiteBackend:
    """ai-edge-litert with the XNNPACK delegate (the default CPU path), fixed thread count."""

    name = "tflite"

    def __init__(self, path: Path, threads: int = 2, tensor_names: Sequence[str] | None = None) -> None:
        interpreter_class = tflite_interpreter_class()
        try:
            self._interpreter = interpreter_class(model_path=str(path), num_threads=threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{path}: not a loadable TFLite model ({exc}); re-export it or restore it from git") from exc
        self._inputs = self._interpreter.get_input_details()
        if tensor_names:
            # Converters may reorder inputs (onnx2tf puts the landmarks first in the int8 file):
            # the sidecar names the tensor for each model input, and we feed by that.
            by_name = {d["name"]: d for d in self._inputs}
            missing = [n for n in tensor_names if n not in by_name]
            if missing:
                raise ModelError(f"{path}: has no input tensor {missing[0]!r} (has {', '.join(by_name)}); the sidecar is from another export")
            self._inputs = [by_name[n] for n in tensor_names]
        self._outputs = self._interpreter.get_output_details()
        self.input_names = tuple(d["name"] for d in self._inputs)
        self.input_shapes = tuple(tuple(int(s) for s in d["shape"]) for d in self._inputs)
        self._batch = self.input_shapes[0][0] if self.input_shapes else 1

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        n = inputs[0].shape[0]
        if n != self._batch:
            for detail, array in zip(self._inputs, inputs):
                self._interpreter.resize_tensor_input(detail["index"], [n, *array.shape[1:]])
            self._interpreter.allocate_tensors()
            self._batch = n
        for detail, array in zip(self._inputs, inputs):
            self._interpreter.set_tensor(detail["index"], _quantize(array, detail))
        self._interpreter.invoke()
        return [_dequantize(self._interpreter.get_tensor(d["index"]), d) for d in self._outputs]

    def close(self) -> None:
        self._interpreter = None


def _quantize(array: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    if dtype in (np.int8, np.uint8):
        scale, zero = detail["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(array / scale + zero), info.min, info.max).astype(dtype)
    return np.ascontiguousarray(array, dtype=dtype)


def _dequantize(array: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] in (np.int8, np.uint8):
        scale, zero = detail["quantization"]
        return (array.astype(np.float32) - zero) * scale
    return array


class OnnxBackend:
    """onnxruntime on the CPU (or a GPU provider on the AI server when one is installed)."""

    name = "onnx"

    def __init__(self, path: Path, threads: int = 2, tensor_names: Sequence[str] | None = None, providers: Sequence[str] | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelError("onnxruntime is not installed: install it from requirements.txt or set vision.backend = \"tflite\"") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=list(providers or ["CPUExecutionProvider"])
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise ModelError(f"{path}: not a loadable ONNX model ({exc}); re-export it or restore it from git") from exc
        self.providers: tuple[str, ...] = tuple(self._session.get_providers())
        """What the session really runs on: onnxruntime drops a GPU provider whose libraries fail to load."""
        inputs = {i.name: i for i in self._session.get_inputs()}
        order = list(tensor_names) if tensor_names else list(inputs)
        missing = [n for n in order if n not in inputs]
        if missing:
            raise ModelError(f"{path}: has no input {missing[0]!r} (has {', '.join(inputs)}); the sidecar is from another export")
        self.input_names = tuple(order)
        self.input_shapes = tuple(tuple(d if isinstance(d, int) else 1 for d in inputs[n].shape) for n in order)

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        feed = {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in zip(self.input_names, inputs)}
        return list(self._session.run(None, feed))

    def close(self) -> None:
        self._session = None


BACKENDS: dict[str, Callable[..., Backend]] = {"tflite": TFLiteBackend, "onnx": OnnxBackend}

DEFAULT_BACKEND = "onnx"
"""For the expression model; the model card's figures are for its int8 ONNX file. On the 2-core x86
dev machine (2026-12-01, one thread, a face and its mirror, p50): onnxruntime int8 0.78 ms, fp32
1.39 ms; ai-edge-litert int8 0.60 ms, fp32 1.52 ms (tflite-runtime 2.14's int8 had been the slowest).
The bundled face models are TFLite-only and always run on ai-edge-litert."""


DEVICES = ("cpu", "cuda", "auto")
"""Where an ONNX model runs: the CPU, an NVIDIA GPU (required), or the GPU when this onnxruntime has one."""


def onnx_providers(device: str = "cpu") -> list[str]:
    """The onnxruntime execution providers for `device` (see DEVICES), best first.

    "auto" picks CUDA only when the installed onnxruntime offers it (the onnxruntime-gpu wheel);
    "cuda" without it is an error rather than a silent CPU run."""
    if device not in DEVICES:
        raise ModelError(f"device {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "cpu":
        return ["CPUExecutionProvider"]
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ModelError("onnxruntime is not installed: install it from requirements.txt") from exc
    if "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise ModelError(
            f"device cuda: this onnxruntime {ort.__version__} has no CUDAExecutionProvider (it offers "
            f"{', '.join(ort.get_available_providers())}): install onnxruntime-gpu on the server, or use device cpu/auto"
        )
    return ["CPUExecutionProvider"]


def open_model(
    path: Path | str, backend: str, threads: int = 2, tensor_names: Sequence[str] | None = None, providers: Sequence[str] | None = None
) -> Backend:
    """Load a model file with the named backend, once; log the time it took.

    `providers` (onnxruntime execution providers, see onnx_providers) applies to the onnx backend only."""
    path = Path(path)
    if backend not in BACKENDS:
        raise ModelError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if not path.is_file():
        raise ModelError(f"model file {path} is missing: run `make setup` or restore models/ from git")
    if providers and list(providers) != ["CPUExecutionProvider"] and backend != "onnx":
        raise ModelError(f"execution providers {', '.join(providers)} need the onnx backend, not {backend}")
    start = time.perf_counter()
    extra = {"providers": providers} if providers and backend == "onnx" else {}
    model = BACKENDS[backend](path, threads=threads, tensor_names=tensor_names, **extra)
    _LOGGER.debug("loaded %s with %s in %.1f ms", path.name, backend, (time.perf_counter() - start) * 1e3)
    return model


def default_threads() -> int:
    """One fewer than the cores, at most 2: a Pi 4/5 gets 2, a 2-core board 1.

    Measured here: with 2 inference threads on a 2-core machine, the detector stalled for hundreds
    of milliseconds whenever anything else ran (audio, the grabber thread), pushing press-to-speech
    p95 over 100 ms; with 1 thread it stayed at a few ms.
    """
    return max(1, min(2, (os.cpu_count() or 1) - 1))
