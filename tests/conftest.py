"""Shared fixtures: real photos that ship with our dependencies (no ../shared needed)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MODEL_SIDECAR = ROOT / "models" / "expression.json"


@pytest.fixture(scope="session")
def grace_hopper() -> np.ndarray:
    """matplotlib's bundled public-domain portrait of Grace Hopper (BGR)."""
    from matplotlib import cbook

    image = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    assert image is not None
    return image


@pytest.fixture(scope="session")
def face_mesh():
    from edge.vision.faces import FaceMesh

    with FaceMesh(threads=1) as mesh:
        yield mesh


class StepClock:
    """A fake monotonic clock that advances by `step` seconds on every reading."""

    def __init__(self, step: float) -> None:
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t
