"""Generate the tiny Piper-format test voice committed under edge/speech/voices/.

Why: no real Piper voice (≈63 MB each) can live in the repository or CI, yet the tests must run the
real `piper.PiperVoice` path — load, espeak phonemisation, phoneme ids, ONNX inference, chunking.
This voice has Piper's exact graph signature but, instead of speech, it sings one short tone per
phoneme id: `input_lengths × round(256 × length_scale)` samples at 16 kHz, pitch 200 + 8·id Hz.
So the audio is deterministic, non-silent, longer for longer text, different for different text,
and slower when `length_scale` grows — everything a test of the TTS plumbing needs to see.

    python tools/make_test_voice.py                # writes edge/speech/voices/edge-test-tone.onnx(.json)
    python tools/make_test_voice.py --check        # exit 1 if the committed files differ

Needs the `onnx` package (requirements-train.txt), only to build the graph; the runtime does not.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

NAME = "edge-test-tone"
SAMPLE_RATE = 16_000
HOP_LENGTH = 256
"""Samples per phoneme id at length_scale 1 (16 ms at 16 kHz)."""
BASE_HZ = 200.0
HZ_PER_ID = 8.0
AMPLITUDE = 0.5
OPSET = 13
IR_VERSION = 8
"""Old enough for every onnxruntime the glasses may carry (IR 8 = onnxruntime ≥ 1.10)."""

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "edge" / "speech" / "voices"


def build_model() -> bytes:
    """The ONNX graph, serialised. Same inputs/outputs as a real Piper VITS voice."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, value: np.ndarray) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))

    nodes = [
        const("hop", np.array(HOP_LENGTH, dtype=np.float32)),
        const("idx1", np.array([1], dtype=np.int64)),
        const("zero_f", np.array(0.0, dtype=np.float32)),
        const("one_f", np.array(1.0, dtype=np.float32)),
        const("base_hz", np.array(BASE_HZ, dtype=np.float32)),
        const("hz_per_id", np.array(HZ_PER_ID, dtype=np.float32)),
        const("two_pi_over_sr", np.array(2.0 * np.pi / SAMPLE_RATE, dtype=np.float32)),
        const("amp", np.array(AMPLITUDE, dtype=np.float32)),
        const("out_shape", np.array([1, 1, -1], dtype=np.int64)),
        const("flat", np.array([-1], dtype=np.int64)),
        # seg = max(1, round(hop * length_scale)); length_scale is scales[1]
        helper.make_node("Gather", ["scales", "idx1"], ["ls1"], axis=0),
        helper.make_node("ReduceSum", ["ls1"], ["length_scale"], keepdims=0),
        helper.make_node("Mul", ["hop", "length_scale"], ["seg_raw"]),
        helper.make_node("Round", ["seg_raw"], ["seg_rounded"]),
        helper.make_node("Max", ["seg_rounded", "one_f"], ["seg"]),
        # total = input_lengths[0] * seg
        helper.make_node("Cast", ["input_lengths"], ["len_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["len_f"], ["n_ids"], keepdims=0),
        helper.make_node("Mul", ["n_ids", "seg"], ["total"]),
        helper.make_node("Range", ["zero_f", "total", "one_f"], ["t"]),
        # id at each sample = ids[floor(t / seg)]
        helper.make_node("Div", ["t", "seg"], ["pos"]),
        helper.make_node("Floor", ["pos"], ["pos_floor"]),
        helper.make_node("Cast", ["pos_floor"], ["pos_i"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["input", "flat"], ["ids_flat"]),
        helper.make_node("Gather", ["ids_flat", "pos_i"], ["id_t"], axis=0),
        helper.make_node("Cast", ["id_t"], ["id_f"], to=TensorProto.FLOAT),
        # y = amp * sin(2π (base + k·id) t / sr)
        helper.make_node("Mul", ["id_f", "hz_per_id"], ["hz_delta"]),
        helper.make_node("Add", ["hz_delta", "base_hz"], ["hz"]),
        helper.make_node("Mul", ["hz", "t"], ["cycles"]),
        helper.make_node("Mul", ["cycles", "two_pi_over_sr"], ["phase"]),
        helper.make_node("Sin", ["phase"], ["wave"]),
        helper.make_node("Mul", ["wave", "amp"], ["scaled"]),
        helper.make_node("Reshape", ["scaled", "out_shape"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        NAME,
        inputs=[
            helper.make_tensor_value_info("input", TensorProto.INT64, [1, "phonemes"]),
            helper.make_tensor_value_info("input_lengths", TensorProto.INT64, [1]),
            helper.make_tensor_value_info("scales", TensorProto.FLOAT, [3]),
        ],
        outputs=[helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, "time"])],
    )
    model = helper.make_model(
        graph,
        producer_name="edge/tools/make_test_voice.py",
        producer_version="1",
        doc_string="Test voice: one tone per phoneme id. Not speech; never ship it.",
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def build_config(model_bytes: bytes) -> bytes:
    """The `.onnx.json` sidecar PiperVoice.load reads, plus what this voice is and how it was made."""
    from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP

    config = {
        "audio": {"sample_rate": SAMPLE_RATE, "quality": "x_low"},
        "espeak": {"voice": "en-us"},
        "inference": {"noise_scale": 0.667, "length_scale": 1.0, "noise_w": 0.8},
        "phoneme_type": "espeak",
        "phoneme_id_map": {k: list(v) for k, v in DEFAULT_PHONEME_ID_MAP.items()},
        "num_symbols": 256,
        "num_speakers": 1,
        "speaker_id_map": {},
        "hop_length": HOP_LENGTH,
        "piper_version": "1.8.0",
        "language": {"code": "en_US"},
        "dataset": NAME,
        "edge_test_voice": {
            "generator": "tools/make_test_voice.py",
            "what": "one sine tone per phoneme id, pitch 200 + 8*id Hz, amplitude 0.5",
            "samples_per_id": "round(256 * length_scale)",
            "onnx_sha256": hashlib.sha256(model_bytes).hexdigest(),
            "not_for_wearers": True,
        },
    }
    return (json.dumps(config, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the two files")
    parser.add_argument("--check", action="store_true", help="compare with the files in --out, write nothing")
    args = parser.parse_args(argv)

    model_bytes = build_model()
    files = {f"{NAME}.onnx": model_bytes, f"{NAME}.onnx.json": build_config(model_bytes)}
    if args.check:
        stale = [name for name, data in files.items() if not (args.out / name).is_file()
                 or (args.out / name).read_bytes() != data]
        for name in stale:
            print(f"{args.out / name}: differs from the generator; run tools/make_test_voice.py", file=sys.stderr)
        return 1 if stale else 0

    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        tmp = args.out / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(args.out / name)
        print(f"wrote {args.out / name} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
