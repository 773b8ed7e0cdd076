"""Comparison anchors for the low-light branch: TBEFN and SCI, rebuilt in PyTorch from their write-ups.

Workstation-only (torch). The networks are rebuilt here from the architecture descriptions in
../shared/weights/*/PROVENANCE.md; the weights are loaded from ../shared/weights only when present and
are never copied into this repository. Both take and return BGR uint8 frames so they can stand in for
the glasses' enhancer (`Pipeline(enhancer=...)`) in the comparison (export/lowlight.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from edge.errors import ModelError

_LOGGER = logging.getLogger(__name__)

SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights"


def _conv(cin: int, cout: int, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation)


def _clip01(t: torch.Tensor) -> torch.Tensor:
    return t.clamp(0.0, 1.0)


class _GainUNet(nn.Module):
    """TBEFN's per-pixel gain estimator (one per branch, same shape, separate weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.pp = nn.ModuleList(_conv(3, 3) for _ in range(4))
        widths = [(6, 16), (16, 32), (32, 64), (64, 128), (128, 64), (64, 32), (32, 16), (16, 3)]
        self.u = nn.ModuleList(_conv(a, b) for a, b in widths)
        self.up = nn.ModuleList(nn.ConvTranspose2d(a, b, 2, stride=2, bias=False) for a, b in ((128, 64), (64, 32), (32, 16)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pp[1](self.pp[0](x))
        p = F.relu(self.pp[3](F.relu(self.pp[2](p))))
        e1 = F.relu(self.u[0](torch.cat([x, p], 1)))
        e2 = F.relu(self.u[1](F.max_pool2d(e1, 2)))
        e3 = F.relu(self.u[2](F.max_pool2d(e2, 2)))
        e4 = F.relu(self.u[3](F.max_pool2d(e3, 2)))
        d = e4
        for up, conv, skip in zip(self.up, self.u[4:7], (e3, e2, e1)):
            d = F.relu(conv(torch.cat([up(d), skip], 1)))
        return F.relu(self.u[7](d))


class TBEFN(nn.Module):
    """Two-branch exposure fusion (Lu & Zhang, IEEE TMM 2020); input/output BGR float in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.branch_a, self.branch_b = _GainUNet(), _GainUNet()
        self.denoise = nn.ModuleList(_conv(3, 3) for _ in range(5))
        self.atten = nn.ModuleList([_conv(3, 16), _conv(16, 16, 2), _conv(16, 16, 2), _conv(16, 1)])
        self.fusion = nn.ModuleList([_conv(6, 16), _conv(16, 16), _conv(16, 3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = _clip01(x * self.branch_a(x))
        a = self.denoise[0](x)
        s = a + self.denoise[1](a)
        for conv in self.denoise[2:4]:
            s = s + conv(s)
        d = _clip01(x + self.denoise[4](s))
        e2 = _clip01(d * self.branch_b(d))
        m = F.relu(self.atten[0](x))
        m = F.relu(self.atten[2](F.relu(self.atten[1](m))))
        m = _clip01(self.atten[3](m))
        fused = m * e1 + (1 - m) * e2
        h = F.relu(self.fusion[1](F.relu(self.fusion[0](torch.cat([fused, x], 1)))))
        return _clip01(self.fusion[2](h))

    def load_converted(self, state: dict[str, torch.Tensor]) -> None:
        """Load the TF-variable-named state dict (tbefn_pytorch_state_dict.pth)."""
        mine: dict[str, torch.Tensor] = {}
        for scope, branch in (("fun_est_A_with_1E", "branch_a"), ("fun_est_B_with_2E", "branch_b")):
            for i in range(4):
                mine[f"{branch}.pp.{i}.weight"] = state[f"{scope}.pp_conv{i + 1}.weights"]
                mine[f"{branch}.pp.{i}.bias"] = state[f"{scope}.pp_conv{i + 1}.biases"]
            for i in range(8):
                mine[f"{branch}.u.{i}.weight"] = state[f"{scope}.u_conv{i + 1}.weights"]
                mine[f"{branch}.u.{i}.bias"] = state[f"{scope}.u_conv{i + 1}.biases"]
            for i, suffix in enumerate(("us_vars", "us_vars_1", "us_vars_2")):
                mine[f"{branch}.up.{i}.weight"] = state[f"{scope}.{suffix}.Variable"]
        for i in range(5):
            mine[f"denoise.{i}.weight"] = state[f"denoise_net.di_conv{i + 1}.weights"]
            mine[f"denoise.{i}.bias"] = state[f"denoise_net.di_conv{i + 1}.biases"]
        for i in range(4):
            mine[f"atten.{i}.weight"] = state[f"atten.atten_{i + 1}.weights"]
            mine[f"atten.{i}.bias"] = state[f"atten.atten_{i + 1}.biases"]
        for i in range(3):
            mine[f"fusion.{i}.weight"] = state[f"fusion.fusion_{i + 1}.weights"]
            mine[f"fusion.{i}.bias"] = state[f"fusion.fusion_{i + 1}.biases"]
        self.load_state_dict(mine, strict=True)


class SCIIllumination(nn.Module):
    """SCI's inference part (Ma et al., CVPR 2022): illumination from a 3-conv net, output x / illumination. RGB in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.in_conv = _conv(3, 3)
        self.conv = _conv(3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.out_conv = _conv(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = F.relu(self.in_conv(x))
        f = f + F.relu(self.bn(self.conv(f)))
        illumination = (torch.sigmoid(self.out_conv(f)) + x).clamp(1e-4, 1.0)
        return (x / illumination).clamp(0.0, 1.0)

    def load_upstream(self, state: dict[str, torch.Tensor]) -> None:
        mine = {
            "in_conv.weight": state["enhance.in_conv.0.weight"], "in_conv.bias": state["enhance.in_conv.0.bias"],
            "conv.weight": state["enhance.conv.0.weight"], "conv.bias": state["enhance.conv.0.bias"],
            "out_conv.weight": state["enhance.out_conv.0.weight"], "out_conv.bias": state["enhance.out_conv.0.bias"],
        }
        for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            mine[f"bn.{key}"] = state[f"enhance.conv.1.{key}"]
        self.load_state_dict(mine, strict=True)


class TorchEnhancer:
    """A torch anchor behind the glasses' enhancer interface: `enhance(bgr or gray uint8) -> same shape`."""

    def __init__(self, name: str, net: nn.Module, rgb: bool, multiple: int = 1) -> None:
        self.name, self.net, self.rgb, self.multiple = name, net.eval(), rgb, multiple

    def enhance(self, frame: np.ndarray) -> np.ndarray:
        gray = frame.ndim == 2
        image = np.repeat(frame[:, :, None], 3, axis=2) if gray else frame
        if self.rgb:
            image = image[:, :, ::-1]
        h, w = image.shape[:2]
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:  # TBEFN needs sizes divisible by 8: pad by reflection, crop after
            image = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="reflect")
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        with torch.no_grad():
            y = self.net(x)[0].permute(1, 2, 0).numpy()[:h, :w]
        if self.rgb:
            y = y[:, :, ::-1]
        out = np.round(np.clip(y, 0.0, 1.0) * 255.0).astype(np.uint8)
        return np.ascontiguousarray(out.mean(axis=2).round().astype(np.uint8) if gray else out)

    def close(self) -> None:
        pass


def load_tbefn(root: Path = SHARED_WEIGHTS) -> TorchEnhancer:
    path = Path(root) / "tbefn" / "tbefn_pytorch_state_dict.pth"
    if not path.is_file():
        raise ModelError(f"TBEFN weights not found at {path}: the comparison needs ../shared/weights/tbefn")
    net = TBEFN()
    net.load_converted(torch.load(path, map_location="cpu", weights_only=True))
    return TorchEnhancer("TBEFN", net, rgb=False, multiple=8)


def load_sci(variant: str = "difficult", root: Path = SHARED_WEIGHTS) -> TorchEnhancer:
    path = Path(root) / "sci" / f"{variant}.pt"
    if not path.is_file():
        raise ModelError(f"SCI weights not found at {path}: the comparison needs ../shared/weights/sci")
    net = SCIIllumination()
    net.load_upstream(torch.load(path, map_location="cpu", weights_only=True))
    return TorchEnhancer(f"SCI ({variant})", net, rgb=True)
