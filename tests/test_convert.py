"""Export a tiny two-input network to every format and hold each file to the parity limits."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.train
torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from export import convert  # noqa: E402  (after the skips: needs the training extras)

SEQ = 10
INPUTS = ("image", "landmarks")


class TinyNet(torch.nn.Module):
    """Same building blocks as the expression model: conv, depthwise-separable, BN, Mish, gating."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.Mish())
        self.dw = nn.Sequential(
            nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.Mish(),
            nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.Mish(),
        )
        self.landmarks = nn.Sequential(nn.Linear(74, 16), nn.Mish())
        self.gate = nn.Linear(32, 32)
        self.head = nn.Linear(32, 7)

    def forward(self, image: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        x = self.dw(self.stem(image)).mean(dim=(2, 3))
        lm = self.landmarks(landmarks).mean(dim=1)
        h = torch.cat([x, lm], dim=1)
        return self.head(h * torch.sigmoid(self.gate(h)))


def _samples(seed: int, count: int, batch: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "image": rng.standard_normal((batch, 1, 48, 48)).astype(np.float32),
            "landmarks": rng.standard_normal((batch, SEQ, 74)).astype(np.float32),
        }
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    net = TinyNet()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
        net.head.weight.mul_(4.0)
    return net.eval()


@pytest.fixture(scope="module")
def onnx_files(model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("onnx")
    sample = tuple(torch.from_numpy(v) for v in _samples(0, 1)[0].values())
    fp32 = convert.to_onnx(model, sample, out / "tiny.onnx", list(INPUTS), ["logits"])
    int8 = convert.quantize_onnx_int8(fp32, out / "tiny.int8.onnx", _samples(1, 64))
    return {"fp32": fp32, "int8": int8}


def test_onnx_fp32_matches_torch_at_any_batch(model, onnx_files) -> None:
    ref = convert.torch_scores_fn(model, INPUTS)
    report = convert.check_parity(ref, convert.onnx_scores_fn(onnx_files["fp32"]), _samples(2, 5, batch=100))
    assert report.n == 500
    assert report.top1_agreement == 1.0
    assert report.max_score_diff < 1e-5


def test_onnx_int8_is_quantised_and_close(model, onnx_files) -> None:
    import onnx

    graph = onnx.load(str(onnx_files["int8"])).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert any(init.data_type == onnx.TensorProto.INT8 for init in graph.initializer)
    ref = convert.torch_scores_fn(model, INPUTS)
    report = convert.check_parity(ref, convert.onnx_scores_fn(onnx_files["int8"]), _samples(3, 5, batch=100),
                                  **convert.PARITY_INT8)
    assert report.top1_agreement >= 0.95
    assert report.max_score_diff_limit is None


@pytest.mark.parametrize("calibration", [None, []])
def test_int8_refuses_without_calibration(onnx_files, tmp_path, calibration) -> None:
    out = tmp_path / "x.onnx"
    with pytest.raises(convert.CalibrationError, match="calibration data"):
        convert.quantize_onnx_int8(onnx_files["fp32"], out, calibration)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_int8_rejects_samples_missing_an_input(onnx_files, tmp_path) -> None:
    with pytest.raises(convert.CalibrationError, match="landmarks"):
        convert.quantize_onnx_int8(onnx_files["fp32"], tmp_path / "x.onnx", [{"image": np.zeros((1, 1, 48, 48))}])


def test_parity_raises_on_permuted_output(model) -> None:
    ref = convert.torch_scores_fn(model, INPUTS)
    with pytest.raises(convert.ParityError, match=r"top-1 agreement \d+\.\d+%") as info:
        convert.check_parity(ref, lambda s: ref(s)[:, ::-1], _samples(4, 1, batch=50), n=50, label="permuted")
    assert "permuted" in str(info.value)


def test_parity_raises_on_small_score_drift_for_fp32(model) -> None:
    ref = convert.torch_scores_fn(model, INPUTS)
    drifted = lambda s: ref(s) + np.array([0.05, 0, 0, 0, 0, 0, -0.05], dtype=np.float32)  # noqa: E731
    with pytest.raises(convert.ParityError, match="max softmax diff"):
        convert.check_parity(ref, drifted, _samples(5, 1, batch=50), n=50)
    report = convert.check_parity(ref, drifted, _samples(5, 1, batch=50), n=50, min_top1_agreement=0.0, max_score_diff=None)
    assert 1e-3 < report.max_score_diff < 0.05


def test_parity_keeps_probabilities_as_they_are() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    report = convert.check_parity(lambda s: probs, lambda s: probs[:, [0, 1, 2]] + [[0.0005, -0.0005, 0]],
                                  [{}], n=2)
    assert report.max_score_diff == pytest.approx(0.0005)


def test_sha256_file(tmp_path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"glasses" * 300_000)
    assert convert.sha256_file(path) == hashlib.sha256(b"glasses" * 300_000).hexdigest()


def test_tflite_fp32_and_int8_run_on_device_runtime(model, onnx_files, tmp_path) -> None:
    pytest.importorskip("tensorflow")
    pytest.importorskip("onnx2tf")
    pytest.importorskip("ai_edge_litert")
    infos = convert.to_tflite(onnx_files["fp32"], tmp_path / "tiny.tflite", tmp_path / "tiny.int8.tflite",
                              _samples(1, 64))
    json.dumps(infos)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.int8.tflite", "tiny.tflite"]

    for info in infos.values():
        assert info["sha256"] == convert.sha256_file(Path(info["path"]))
        assert info["interface"] == "float32"
        image, landmarks = info["inputs"]
        assert (image["name"], image["shape"], image["layout"], image["dtype"]) == (
            "image", [1, 1, 48, 48], "NCHW", "float32")
        assert (landmarks["name"], landmarks["shape"]) == ("landmarks", [1, SEQ, 74])
        assert info["outputs"][0]["name"] == "logits" and info["outputs"][0]["shape"] == [1, 7]
    tensor_types = {
        key: {d["dtype"] for d in convert._load_device_interpreter(Path(info["path"])).get_tensor_details()}
        for key, info in infos.items()
    }
    assert np.int8 not in tensor_types["fp32"]
    assert np.int8 in tensor_types["int8"]
    assert infos["fp32"]["float_ops"] == []
    assert set(infos["int8"]["float_ops"]) <= {"LOG"}, "only Mish's log may stay float on the device runtime"

    ref = convert.onnx_scores_fn(onnx_files["fp32"])
    fp32 = convert.check_parity(ref, convert.tflite_scores_fn(infos["fp32"]), _samples(6, 500))
    int8 = convert.check_parity(ref, convert.tflite_scores_fn(infos["int8"]), _samples(6, 500), **convert.PARITY_INT8)
    assert fp32.max_score_diff < 1e-5
    assert int8.top1_agreement >= 0.95


def test_our_mish_is_mish_and_exports_without_softplus(tmp_path) -> None:
    import onnx

    from export.nets import Mish

    x = torch.linspace(-120, 120, 100_001)
    assert torch.allclose(Mish()(x), torch.nn.functional.mish(x), atol=2e-5)
    path = convert.to_onnx(torch.nn.Sequential(torch.nn.Linear(4, 8), Mish()).eval(), (torch.randn(1, 4),), tmp_path / "m.onnx", ["x"], ["y"])
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "Softplus" not in ops and {"Exp", "Min", "Div"} <= set(ops)


def test_float_chain_keeps_mish_float_and_quantises_the_rest() -> None:
    from onnx import TensorProto, helper

    def node(op, ins, out):
        return helper.make_node(op, ins, [out], name=out)

    nodes = [
        node("Conv", ["x", "w"], "c"),
        node("Min", ["c", "k20"], "m"), node("Exp", ["m"], "e"), node("Add", ["e", "k2"], "e2"), node("Mul", ["e", "e2"], "n"),
        node("Add", ["n", "k2"], "d"), node("Mul", ["c", "n"], "xn"), node("Div", ["xn", "d"], "mish"),
        node("Conv", ["mish", "w2"], "c2"), node("Add", ["c2", "c"], "residual"),  # fed by convolutions only
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])], [])
    assert set(convert.float_chain(graph, ("Exp", "Min"))) == {"m", "e", "e2", "n", "d", "xn", "mish"}
    assert convert.float_chain(graph, ("Softplus",)) == []

