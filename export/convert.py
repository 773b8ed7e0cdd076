"""Model-format conversion for the workstation export toolchain.

PyTorch → ONNX fp32 → ONNX int8 (QDQ, static) and ONNX → TFLite fp32 / full-int8, plus the parity
checks that gate every file before it may travel to the glasses. Workstation-only: torch is imported
here at module top; TensorFlow and onnx2tf (training extras) are imported only inside `to_tflite`.

TFLite route: ONNX (batch fixed to 1) → onnx2tf → SavedModel → `tf.lite.TFLiteConverter`. onnx2tf keeps
the ONNX input layout (NCHW image, 1×L×F matrix) so the device feeds the same arrays to every format;
the int8 file has int8 weights and activations with a float32 input/output interface. Every TFLite file
is loaded with the device runtime (ai-edge-litert, XNNPACK) before it is accepted; an op the converter
emits in a version that runtime lacks is kept in float and the conversion is repeated.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from edge.errors import EdgeError, ModelError
from edge.files import sha256_file
from edge.runtime import tflite_interpreter_class

_LOGGER = logging.getLogger(__name__)

ONNX_OPSET = 17
"""onnxruntime 1.20 runs up to opset 21; onnx2tf is most tested on 17; Mish stays Softplus·Tanh·Mul."""

PARITY_FP32: dict[str, float | None] = {"min_top1_agreement": 0.995, "max_score_diff": 1e-3}
PARITY_INT8: dict[str, float | None] = {"min_top1_agreement": 0.95, "max_score_diff": None}

TFLITE_SIGNATURE_KEY = "serving_default"
_MAX_DENYLIST_ROUNDS = 8
_MISSING_OP = re.compile(r"builtin opcode '([A-Z0-9_]+)' version '(\d+)'")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Sample = dict[str, np.ndarray]
ScoresFn = Callable[[Sample], np.ndarray]


class ExportError(EdgeError):
    """A conversion step could not produce a usable file; the message says which step and why."""


class CalibrationError(ExportError):
    """Calibration data is missing or does not match the model inputs."""


class ParityError(ModelError):
    """A converted model disagrees with its reference beyond the allowed thresholds."""


@dataclass(frozen=True)
class ParityReport:
    """How closely a candidate format follows its reference on the same inputs."""

    n: int
    """Number of samples (rows) compared."""
    top1_agreement: float
    """Fraction of samples whose arg-max class is the same."""
    max_score_diff: float
    """Largest absolute difference of any softmax score."""
    mean_score_diff: float
    """Mean absolute softmax-score difference over all samples and classes."""
    min_top1_agreement: float
    """Threshold the agreement had to reach."""
    max_score_diff_limit: float | None
    """Threshold for `max_score_diff`; None means reported only."""

    @property
    def passed(self) -> bool:
        """True when every threshold is met."""
        if self.top1_agreement < self.min_top1_agreement:
            return False
        return self.max_score_diff_limit is None or self.max_score_diff <= self.max_score_diff_limit

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures for a model sidecar."""
        return {
            "n": self.n,
            "top1_agreement": self.top1_agreement,
            "max_score_diff": self.max_score_diff,
            "mean_score_diff": self.mean_score_diff,
            "min_top1_agreement": self.min_top1_agreement,
            "max_score_diff_limit": self.max_score_diff_limit,
        }


@contextlib.contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path` and move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _log_step(step: str, path: Path, started: float) -> None:
    _LOGGER.info("%s: %s (%d bytes) in %.2f s", step, path, path.stat().st_size, time.perf_counter() - started)


def _onnx_input_names(path: Path) -> list[str]:
    model = onnx.load(str(path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    return [inp.name for inp in model.graph.input if inp.name not in initializers]


def _materialise_calibration(calibration: Iterable[Sample] | None, input_names: list[str]) -> list[Sample]:
    """Check calibration samples up front so a bad set fails before minutes of conversion."""
    if calibration is None:
        raise CalibrationError(
            "int8 quantisation needs calibration data: pass an iterable of {input name: array} samples "
            "drawn from the training/validation set (a few hundred is typical)"
        )
    samples: list[Sample] = []
    for i, sample in enumerate(calibration):
        missing = [name for name in input_names if name not in sample]
        if missing:
            raise CalibrationError(
                f"calibration sample {i} lacks input(s) {missing}; the model expects {input_names}"
            )
        samples.append({name: np.ascontiguousarray(sample[name], dtype=np.float32) for name in input_names})
    if not samples:
        raise CalibrationError(
            "int8 quantisation needs calibration data but the iterable was empty; pass "
            "{input name: array} samples drawn from the training/validation set"
        )
    return samples


def to_onnx(
    model: torch.nn.Module,
    sample: torch.Tensor | tuple[torch.Tensor, ...],
    path: Path,
    input_names: list[str] | tuple[str, ...],
    output_names: list[str] | tuple[str, ...],
    *,
    dynamic_batch: bool = True,
    opset: int = ONNX_OPSET,
) -> Path:
    """Export an fp32 ONNX file, batch dimension dynamic so evaluation can run large batches.

    Uses the TorchScript exporter (`dynamo=False`): it needs no onnxscript, folds BatchNorm into the
    convolutions in eval mode and writes Mish as Softplus·Tanh·Mul, which every downstream tool handles.
    """
    path = Path(path)
    inputs = (sample,) if isinstance(sample, torch.Tensor) else tuple(sample)
    input_names, output_names = list(input_names), list(output_names)
    if len(inputs) != len(input_names):
        raise ExportError(f"to_onnx: {len(inputs)} sample tensor(s) but {len(input_names)} input name(s) {input_names}")
    bad = [name for name in input_names + output_names if not _NAME.match(name)]
    if bad:
        raise ExportError(f"to_onnx: names {bad} must be identifiers ([A-Za-z_][A-Za-z0-9_]*) so TFLite keeps them")
    dynamic_axes = {name: {0: "batch"} for name in input_names + output_names} if dynamic_batch else None
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        with _atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
            torch.onnx.export(
                model,
                inputs,
                str(tmp),
                input_names=input_names,
                output_names=output_names,
                opset_version=opset,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
                dynamo=False,
            )
            onnx.checker.check_model(str(tmp), full_check=True)
            dropped = [name for name in input_names if name not in _onnx_input_names(tmp)]
            if dropped:
                _LOGGER.warning("inputs %s are unused by the model and were left out of %s", dropped, path.name)
    finally:
        model.train(was_training)
    _log_step("onnx fp32", path, started)
    return path


class _CalibrationReader:
    """onnxruntime CalibrationDataReader over already-validated samples."""

    def __init__(self, samples: list[Sample]) -> None:
        self._samples = samples
        self._iter = iter(samples)

    def get_next(self) -> Sample | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self._samples)


ELEMENTWISE = ("Add", "Mul", "Div", "Sub")


def float_chain(graph: Any, seed_types: Sequence[str]) -> list[str]:
    """Names of the nodes to keep in float: those of `seed_types` and every elementwise node fed by them.

    Mish is Min → Exp → Add → Mul → Add → Div (→ Mul): seeding with Exp/Min keeps the whole chain in
    float while residual Adds elsewhere in the net, which no seed feeds, are still quantised.
    """
    seeds = set(seed_types)
    keep = {n.name for n in graph.node if n.op_type in seeds}
    float_tensors = {o for n in graph.node if n.name in keep for o in n.output}
    changed = bool(keep)
    while changed:
        changed = False
        for n in graph.node:
            if n.name not in keep and n.op_type in ELEMENTWISE and any(i in float_tensors for i in n.input):
                keep.add(n.name)
                float_tensors.update(n.output)
                changed = True
    return [n.name for n in graph.node if n.name in keep]


def quantize_onnx_int8(
    fp32_path: Path,
    out_path: Path,
    calibration: Iterable[Sample] | None,
    *,
    per_channel: bool = True,
    float_op_types: Sequence[str] = (),
) -> Path:
    """Static int8 (QDQ, int8 weights and activations) so the ONNX route measures what int8 costs.

    Refuses to run without calibration data: activation ranges guessed without data silently ruin
    accuracy. Per-channel weight scales keep depthwise convolutions accurate.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    samples = _materialise_calibration(calibration, _onnx_input_names(fp32_path))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quant-") as tmp_dir, _atomic_path(out_path) as tmp_out:
        prepped = Path(tmp_dir) / "prepped.onnx"
        quant_pre_process(str(fp32_path), str(prepped), skip_symbolic_shape=False)
        keep_float = float_chain(onnx.load(str(prepped)).graph, float_op_types)
        if keep_float:
            _LOGGER.info("onnx int8: keeping %d %s node(s) in float", len(keep_float), "/".join(float_op_types))
        quantize_static(
            str(prepped),
            str(tmp_out),
            _CalibrationReader(samples),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            nodes_to_exclude=keep_float,
        )
        onnx.checker.check_model(str(tmp_out))
    _LOGGER.info("calibrated on %d sample(s)", len(samples))
    _log_step("onnx int8 (QDQ)", out_path, started)
    return out_path


def _static_batch_copy(fp32_path: Path, out_path: Path) -> dict[str, list[int]]:
    """Write a batch-1 copy of the ONNX file; onnx2tf misreads layouts when the batch is symbolic."""
    from onnx.tools import update_model_dims

    model = onnx.load(str(fp32_path))
    initializers = {init.name for init in model.graph.initializer}

    def fixed(value_info: onnx.ValueInfoProto) -> list[int]:
        dims = []
        for i, dim in enumerate(value_info.type.tensor_type.shape.dim):
            if dim.HasField("dim_value"):
                dims.append(dim.dim_value)
            elif i == 0:
                dims.append(1)
            else:
                raise ExportError(
                    f"to_tflite: input/output {value_info.name!r} has a dynamic non-batch dimension {i} "
                    f"({dim.dim_param!r}); export the ONNX file with that size fixed"
                )
        return dims

    inputs = {vi.name: fixed(vi) for vi in model.graph.input if vi.name not in initializers}
    outputs = {vi.name: fixed(vi) for vi in model.graph.output}
    del model.graph.value_info[:]
    model = update_model_dims.update_inputs_outputs_dims(model, inputs, outputs)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.save(model, str(out_path))
    return inputs


def _rows(sample: Sample) -> int:
    return int(next(iter(sample.values())).shape[0])


def _tflite_feed(sample: Sample, row: int, onnx_inputs: dict[str, list[int]], keep_onnx_layout: bool) -> Sample:
    """One batch-1 row of an ONNX-layout sample, transposed to channels-last when the file wants it."""
    feed = {}
    for name in onnx_inputs:
        x = np.asarray(sample[name][row : row + 1], dtype=np.float32)
        if not keep_onnx_layout and x.ndim >= 3:
            x = np.transpose(x, [0, *range(2, x.ndim), 1])
        feed[name] = np.ascontiguousarray(x)
    return feed


def _load_device_interpreter(path: Path) -> Any:
    """Open a TFLite file with the runtime the glasses use, so op-version gaps show up here."""
    interpreter = tflite_interpreter_class()(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


_LAYOUT_NAMES = {(4, True): "NCHW", (4, False): "NHWC", (5, True): "NCDHW", (5, False): "NDHWC"}


def _describe_tflite(
    path: Path, onnx_inputs: dict[str, list[int]], onnx_outputs: list[str], keep_onnx_layout: bool
) -> dict[str, Any]:
    """Everything the device needs to feed and read a TFLite file, without guessing from names."""
    interpreter = _load_device_interpreter(path)
    runner = interpreter.get_signature_runner(TFLITE_SIGNATURE_KEY)
    sig_inputs = runner.get_input_details()
    sig_outputs = runner.get_output_details()

    def quant(details: dict[str, Any]) -> dict[str, Any] | None:
        scale, zero_point = details["quantization"]
        if details["dtype"] == np.float32 or scale == 0.0:
            return None
        return {"scale": float(scale), "zero_point": int(zero_point)}

    inputs = []
    for name, onnx_shape in onnx_inputs.items():
        details = sig_inputs[name]
        rank = len(onnx_shape)
        kept = keep_onnx_layout or rank < 3
        perm = list(range(rank)) if kept else [0, *range(2, rank), 1]
        inputs.append({
            "name": name,
            "tensor_name": details["name"],
            "index": int(details["index"]),
            "shape": [int(d) for d in details["shape"]],
            "onnx_shape": list(onnx_shape),
            "transpose_from_onnx": perm,
            "layout": _LAYOUT_NAMES.get((rank, kept), "as_onnx" if kept else "channels_last"),
            "dtype": np.dtype(details["dtype"]).name,
            "quantization": quant(details),
        })
    outputs = []
    for onnx_name, key in zip(onnx_outputs, sorted(sig_outputs, key=lambda k: int(k.rsplit("_", 1)[-1]))):
        details = sig_outputs[key]
        outputs.append({
            "name": onnx_name,
            "signature_name": key,
            "tensor_name": details["name"],
            "index": int(details["index"]),
            "shape": [int(d) for d in details["shape"]],
            "dtype": np.dtype(details["dtype"]).name,
            "quantization": quant(details),
        })
    return {
        "path": str(path),
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "signature_key": TFLITE_SIGNATURE_KEY,
        "inputs": inputs,
        "outputs": outputs,
    }


def _convert_checked(
    make_converter: Callable[[], Any], calibration: list[Sample] | None, path: Path, float_ops: Sequence[str] = ()
) -> list[str]:
    """Convert, then load with the device runtime; keep ops it lacks in an int8 form in float and retry.

    Returns the op names that had to stay float (empty for fp32 or when nothing was missing).
    """
    import tensorflow as tf

    denylisted: list[str] = list(float_ops) if calibration is not None else []
    for _ in range(_MAX_DENYLIST_ROUNDS):
        converter = make_converter()
        if denylisted:
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter,
                debug_dataset=lambda: iter(calibration[:1]),
                debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=denylisted),
            )
            flatbuffer = debugger.get_nondebug_quantized_model()
        else:
            flatbuffer = converter.convert()
        path.write_bytes(flatbuffer)
        try:
            _load_device_interpreter(path)
            return denylisted
        except (ValueError, RuntimeError) as exc:
            match = _MISSING_OP.search(str(exc))
            if calibration is None or match is None or match.group(1) in denylisted:
                raise ExportError(f"to_tflite: the device runtime cannot load {path.name}: {exc}") from exc
            _LOGGER.warning(
                "device runtime lacks %s v%s; keeping %s in float in the int8 model",
                match.group(1), match.group(2), match.group(1),
            )
            denylisted.append(match.group(1))
    raise ExportError(f"to_tflite: gave up after keeping {denylisted} in float; the device runtime still fails")


def _float_compute_ops(path: Path) -> list[str]:
    """Ops of a TFLite file that compute in float32 (QUANTIZE/DEQUANTIZE at the interface excluded)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    skip = {"QUANTIZE", "DEQUANTIZE"}
    found = []
    for graph in model.subgraphs:
        for op in graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), str(code.builtinCode))
            first = graph.tensors[op.inputs[0]] if len(op.inputs) and op.inputs[0] >= 0 else None
            if name not in skip and first is not None and first.type == schema.TensorType.FLOAT32:
                found.append(name)
    return sorted(set(found))


def to_tflite(
    fp32_onnx: Path,
    fp32_path: Path,
    int8_path: Path,
    calibration: Iterable[Sample] | None,
    *,
    keep_onnx_layout: bool = True,
    float_ops: Sequence[str] = (),
) -> dict[str, dict[str, Any]]:
    """Write a TFLite fp32 file and a full-int8 file (int8 weights+activations, float32 interface).

    Batch is fixed to 1 (the device runs one frame at a time). With `keep_onnx_layout` the inputs keep
    their ONNX layout (NCHW image, 1×L×F matrix) so the device feeds identical arrays to ONNX and TFLite.
    Returns {"fp32": info, "int8": info}, each describing path, sha256, input/output tensors (name,
    index, shape, layout, dtype, quantisation) ready for the model sidecar.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import onnx2tf
    import tensorflow as tf

    fp32_onnx, fp32_path, int8_path = Path(fp32_onnx), Path(fp32_path), Path(int8_path)
    input_names = _onnx_input_names(fp32_onnx)
    samples = _materialise_calibration(calibration, input_names)
    output_names = [out.name for out in onnx.load(str(fp32_onnx), load_external_data=False).graph.output]
    infos: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="tflite-") as tmp_dir:
        tmp = Path(tmp_dir)
        started = time.perf_counter()
        static_onnx = tmp / "static.onnx"
        onnx_inputs = _static_batch_copy(fp32_onnx, static_onnx)
        saved_model = tmp / "saved_model"
        try:
            onnx2tf.convert(
                input_onnx_file_path=str(static_onnx),
                output_folder_path=str(saved_model),
                output_signaturedefs=True,
                not_use_onnxsim=True,
                keep_ncw_or_nchw_or_ncdhw_input_names=input_names if keep_onnx_layout else None,
                verbosity="error",
            )
        except Exception as exc:
            raise ExportError(f"to_tflite: onnx2tf could not convert {fp32_onnx}: {exc}") from exc
        signature = tf.saved_model.load(str(saved_model)).signatures[TFLITE_SIGNATURE_KEY]
        sig_names = sorted(signature.structured_input_signature[1])
        if sig_names != sorted(input_names):
            raise ExportError(f"to_tflite: SavedModel inputs {sig_names} do not match ONNX inputs {input_names}")
        _LOGGER.info("onnx2tf SavedModel in %.2f s", time.perf_counter() - started)

        def fp32_converter() -> Any:
            return tf.lite.TFLiteConverter.from_saved_model(str(saved_model))

        batch1 = [_tflite_feed(s, r, onnx_inputs, keep_onnx_layout) for s in samples for r in range(_rows(s))]

        def int8_converter() -> Any:
            converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: iter(batch1)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
            converter.inference_input_type = tf.float32
            converter.inference_output_type = tf.float32
            return converter

        for key, out_path, make, calib in (("fp32", fp32_path, fp32_converter, None),
                                           ("int8", int8_path, int8_converter, batch1)):
            started = time.perf_counter()
            with _atomic_path(out_path) as part:
                kept_float = _convert_checked(make, calib, part, float_ops)
                info = _describe_tflite(part, onnx_inputs, output_names, keep_onnx_layout)
                computed_float = _float_compute_ops(part) if key == "int8" else []
            if computed_float:
                _LOGGER.warning("int8 TFLite still computes %s in float (%s kept for the device runtime)",
                                computed_float, kept_float or "none")
            info["path"] = str(out_path)
            info["weights"] = "float32" if key == "fp32" else "int8"
            info["activations"] = "float32" if key == "fp32" else "int8"
            info["interface"] = "float32"
            info["float_ops"] = computed_float
            infos[key] = info
            _log_step(f"tflite {key}", out_path, started)
    return infos


def torch_scores_fn(model: torch.nn.Module, input_names: list[str] | tuple[str, ...]) -> ScoresFn:
    """Reference callable for `check_parity`: the PyTorch model in eval mode on named numpy inputs."""
    model.eval()
    names = list(input_names)

    def run(sample: Sample) -> np.ndarray:
        with torch.no_grad():
            return model(*(torch.from_numpy(np.asarray(sample[n], dtype=np.float32)) for n in names)).numpy()

    return run


def onnx_scores_fn(path: Path) -> ScoresFn:
    """Callable for `check_parity` running an ONNX file on onnxruntime's CPU provider."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(sample: Sample) -> np.ndarray:
        return session.run(None, {n: np.asarray(sample[n], dtype=np.float32) for n in names})[0]

    return run


def tflite_scores_fn(info: dict[str, Any]) -> ScoresFn:
    """Callable for `check_parity` running a TFLite file (as described by `to_tflite`) row by row."""
    interpreter = _load_device_interpreter(Path(info["path"]))
    runner = interpreter.get_signature_runner(info["signature_key"])
    out_key = info["outputs"][0]["signature_name"]

    def run(sample: Sample) -> np.ndarray:
        rows = next(iter(sample.values())).shape[0]
        results = []
        for r in range(rows):
            feed = {}
            for spec in info["inputs"]:
                x = np.asarray(sample[spec["name"]][r : r + 1], dtype=np.float32).transpose(spec["transpose_from_onnx"])
                if spec["quantization"]:
                    q = spec["quantization"]
                    x = np.clip(np.round(x / q["scale"] + q["zero_point"]), -128, 127).astype(np.int8)
                feed[spec["name"]] = x
            y = runner(**feed)[out_key]
            out_q = info["outputs"][0]["quantization"]
            if out_q:
                y = (y.astype(np.float32) - out_q["zero_point"]) * out_q["scale"]
            results.append(y)
        return np.concatenate(results)

    return run


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def _as_probabilities(scores: np.ndarray) -> np.ndarray:
    """Softmax logits; leave rows alone that already are probabilities (non-negative, sum to 1)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(scores.shape[0], -1)
    if np.all(scores >= 0) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3):
        return scores
    return _softmax(scores)


def check_parity(
    reference_fn: ScoresFn,
    candidate_fn: ScoresFn,
    inputs: Iterable[Sample],
    n: int = 500,
    min_top1_agreement: float = 0.995,
    max_score_diff: float | None = 1e-3,
    *,
    label: str = "candidate",
) -> ParityReport:
    """Compare two formats on the same inputs and raise `ParityError` when they disagree too much.

    Scores are compared as softmax probabilities (logits are soft-maxed, probabilities kept), so the
    limit means the same for models that end in logits or in a softmax. Defaults are the fp32 limits;
    pass `**PARITY_INT8` for int8 files (agreement ≥ 95 %, score difference reported only).
    """
    ref_rows, cand_rows = [], []
    seen = 0
    for sample in inputs:
        if seen >= n:
            break
        ref = np.asarray(reference_fn(sample))
        cand = np.asarray(candidate_fn(sample))
        if ref.shape != cand.shape:
            raise ParityError(f"{label}: output shape {cand.shape} differs from reference {ref.shape}")
        ref_rows.append(ref)
        cand_rows.append(cand)
        seen += ref.shape[0]
    if seen == 0:
        raise ParityError(f"{label}: no inputs to compare; pass held-out samples")
    ref_p = _as_probabilities(np.concatenate(ref_rows)[:n])
    cand_p = _as_probabilities(np.concatenate(cand_rows)[:n])
    diff = np.abs(ref_p - cand_p)
    report = ParityReport(
        n=int(ref_p.shape[0]),
        top1_agreement=float(np.mean(ref_p.argmax(axis=1) == cand_p.argmax(axis=1))),
        max_score_diff=float(diff.max()),
        mean_score_diff=float(diff.mean()),
        min_top1_agreement=float(min_top1_agreement),
        max_score_diff_limit=None if max_score_diff is None else float(max_score_diff),
    )
    limit = "report only" if max_score_diff is None else f"limit {max_score_diff:g}"
    summary = (
        f"{label}: top-1 agreement {report.top1_agreement:.2%} (need ≥ {min_top1_agreement:.2%}), "
        f"max softmax diff {report.max_score_diff:.3g} ({limit}), mean {report.mean_score_diff:.3g}, n={report.n}"
    )
    if not report.passed:
        raise ParityError(f"parity check failed: {summary}")
    _LOGGER.info("parity ok: %s", summary)
    return report
