"""Shared fixtures: the real photo that ships with the project (no ../shared needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edge.images import demo_portrait

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MODEL_SIDECAR = ROOT / "models" / "expression.json"


@pytest.fixture(scope="session")
def grace_hopper() -> np.ndarray:
    """The demo portrait of Grace Hopper (BGR), public domain, shipped in edge/data/."""
    return demo_portrait()


@pytest.fixture
def no_matplotlib(monkeypatch):
    """As on the glasses, whose lock has no matplotlib: any `import matplotlib…` raises ImportError."""
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)


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
