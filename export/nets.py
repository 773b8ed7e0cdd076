"""The three candidate networks (PyTorch, training only).

(a) `LandmarkHogNet` — the published method: per upper-face landmark HOG + shape → CNN with Mish.
(b) `FaceNet` — a small MobileNet-like image CNN (depthwise separable, inverted residuals) on the
    aligned 48×48 face, trained on a 50/50 mix of masked and unmasked faces.
(c) `FusionNet` — both branches' embeddings concatenated, one head.

Inputs are raw: pixels 0..255 and raw HOG/shape features. Normalisation lives inside the graph
so the device feeds exactly what upperface.py produces and nothing can drift between the two.
"""

from __future__ import annotations

import torch
from torch import nn

N_CLASSES = 7


class Mish(nn.Module):
    """x · tanh(softplus(x)), written as x · n / (n + 2) with n = eˣ(eˣ + 2) — the same function.

    tanh(log(1 + eˣ)) = ((1 + eˣ)² − 1) / ((1 + eˣ)² + 1) = n / (n + 2). This form exports as Min, Exp,
    Add, Mul, Div, which onnxruntime runs vectorised; its Softplus kernel is scalar and cost 5× more
    (120 vs 24 µs on a [2, 96, 47] activation). x is capped at 20 inside the exponential, where
    n / (n + 2) is 1 in float32, so nothing overflows.

    Its exp chain does not survive int8 (eˣ spans orders of magnitude, so one int8 scale flattens the
    small values): export/build.py keeps these elementwise ops in float in both int8 files
    (export/build.FLOAT_OPS) and quantises the convolutions and matrix products around them.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = torch.exp(torch.minimum(x, torch.tensor(20.0, dtype=x.dtype)))
        n = e * (e + 2)
        return x * n / (n + 2)


class LandmarkHogNet(nn.Module):
    """Shared per-landmark encoder (1×1 convolutions over the landmark axis) → flatten → Mish head."""

    def __init__(self, n_landmarks: int, n_features: int = 74, width: int = 48, embed: int = 256) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_landmarks, n_features))
        self.register_buffer("std", torch.ones(n_landmarks, n_features))
        self.encode = nn.Sequential(
            nn.Conv1d(n_features, width * 2, 1), nn.BatchNorm1d(width * 2), Mish(),
            nn.Conv1d(width * 2, width, 1), nn.BatchNorm1d(width), Mish(),
        )
        self.embed = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(n_landmarks * width, embed), nn.BatchNorm1d(embed), Mish(), nn.Dropout(0.3)
        )
        self.head = nn.Linear(embed, N_CLASSES)
        self.embed_dim = embed

    def features(self, landmarks: torch.Tensor) -> torch.Tensor:
        x = ((landmarks - self.mean) / self.std).transpose(1, 2)
        return self.embed(self.encode(x))

    def forward(self, landmarks: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(landmarks))


def _conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class FaceNet(nn.Module):
    """~0.3 M parameters, plain 3×3 convolutions: 48 → 24 (stride) → 12 → 6 → global pool.

    A MobileNet-style variant (inverted residuals, depthwise) was measured first: ~15× slower to
    train per batch in PyTorch on the 2-core CPU, so it did not fit a training session. Plain
    small convolutions run well under XNNPACK int8 on the Pi; ReLU keeps int8 faithful.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            *_conv(1, w), *_conv(w, 2 * w, 2), *_conv(2 * w, 2 * w), nn.MaxPool2d(2),
            *_conv(2 * w, 4 * w), *_conv(4 * w, 4 * w), nn.MaxPool2d(2),
            *_conv(4 * w, 8 * w), *_conv(8 * w, 8 * w),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3),
        )
        self.head = nn.Linear(8 * w, N_CLASSES)
        self.embed_dim = 8 * w

    def features(self, face: torch.Tensor) -> torch.Tensor:
        return self.body(face / 127.5 - 1.0)

    def forward(self, face: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(face))


class FusionNet(nn.Module):
    """(a) and (b) side by side; their embeddings meet in one small head."""

    def __init__(self, landmark_net: LandmarkHogNet, face_net: FaceNet) -> None:
        super().__init__()
        self.landmark_net = landmark_net
        self.face_net = face_net
        self.head = nn.Sequential(
            nn.Linear(landmark_net.embed_dim + face_net.embed_dim, 128), nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear(128, N_CLASSES)
        )

    def forward(self, face: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.face_net.features(face), self.landmark_net.features(landmarks)], dim=1))

    def all_logits(self, face: torch.Tensor, landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(fusion, image-only, landmark-only) logits: one training run supervises all three."""
        f, l = self.face_net.features(face), self.landmark_net.features(landmarks)
        return self.head(torch.cat([f, l], dim=1)), self.face_net.head(f), self.landmark_net.head(l)


class Branch(nn.Module):
    """One branch of a trained FusionNet as a stand-alone two-input model (for export and comparison)."""

    def __init__(self, fusion: FusionNet, which: str) -> None:
        super().__init__()
        self.fusion, self.which = fusion, which

    def forward(self, face: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        if self.which == "face":
            return self.fusion.face_net(face)
        if self.which == "landmarks":
            return self.fusion.landmark_net(landmarks)
        return self.fusion(face, landmarks)
