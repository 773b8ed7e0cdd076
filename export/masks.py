"""Synthetic medical face masks drawn onto face images from their face-mesh landmarks.

Used as training augmentation (half of every epoch wears a mask) and to build the masked evaluation
set, so the expression model learns to read the upper face. A mask is a texture in a canonical
(u across, v down) frame, warped piecewise-affinely onto a Coons patch whose borders are the top
edge (nose bridge and cheeks), the face oval down the sides and the jaw under the chin; it is then
composited through an anti-aliased alpha matte. The top edge is clamped below the lower eyelids so a
mask never touches the eyes.

`random_style` is the shipped model's generator. `FAMILIES` are seven clearly different style
distributions drawn through the same geometry (pleated surgical, folded KN95, printed cloth, flat
hard-edged polygons, worn high, worn low or crooked, hands/scarves/collars), for testing on a family
a model never saw (`python -m export families`); `mask_batch(..., families=[...])` draws from them.

`python -m export.masks --preview OUT.png [--families]` renders a contact sheet to eyeball;
`python -m export.masks --bench 2000` times 48×48 masking.
"""

from __future__ import annotations

import argparse
import colorsys
import enum
import functools
import importlib.util
import json
import logging
import math
import os
import platform
import sys
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.errors import ConfigError, EdgeError, ImageError

_LOGGER = logging.getLogger(__name__)

NUM_LANDMARKS = 468
"""MediaPipe face-mesh landmarks without the iris (a 478-point array is accepted and trimmed)."""

# Anchors inside the face mesh (canonical MediaPipe indices).
_CHEEK_LEFT, _CHEEK_RIGHT = 234, 454
"""Face-oval points at the cheekbones; the line between them is the face's horizontal axis."""
_NOSE_CHAIN = (6, 197, 195, 5, 4, 1)
"""Nose ridge from between the eyes down to the tip."""
_NOSE_BASE = 2
_CHIN = 152
_LOWER_LID_LEFT, _LOWER_LID_RIGHT = 145, 374
"""Middle of each lower eyelid (image left, image right)."""
_UPPER_LIP, _LOWER_LIP = 13, 14
_JAW_LEFT, _JAW_RIGHT = 172, 397
_CHEEK_LOW_LEFT, _CHEEK_LOW_RIGHT = 205, 425
"""Cheek points level with the nose wings: where a mask's edge sits when worn low."""
_OVAL_FROM, _OVAL_TO = 127, 356
"""The lower face oval is walked from 127 (left temple) via the chin to 356 (right temple)."""
_SPECIAL = (_CHEEK_LEFT, _CHEEK_RIGHT, *_NOSE_CHAIN, _NOSE_BASE, _CHIN, _LOWER_LID_LEFT,
            _LOWER_LID_RIGHT, _CHEEK_LOW_LEFT, _CHEEK_LOW_RIGHT, _UPPER_LIP, _LOWER_LIP, _JAW_LEFT,
            _JAW_RIGHT)

_MIN_BLUR = 0.3
"""Edge blur sigmas (pixels) below this are skipped: the anti-aliased edge is already that soft."""
_GRID_COLUMNS, _GRID_ROWS = 6, 2
"""Coons-patch cells the texture is warped over: enough to follow the jaw, few enough to be fast."""


class MaskKind(str, enum.Enum):
    """What is drawn: a pleated surgical mask, a cloth mask, an N95-like cup, or `OCCLUSION` — a
    flat or noisy patch over everything below the nose, as in 'lower half occluded' benchmarks."""

    SURGICAL = "surgical"
    CLOTH = "cloth"
    N95 = "n95"
    OCCLUSION = "occlusion"
    POLYGON = "polygon"
    """A flat single-colour polygon with hard straight edges from the nose bridge to under the chin."""
    HAND = "hand"
    """A hand over the mouth and chin: palm and fingers, skin-toned."""
    SCARF = "scarf"
    """A scarf pulled up over the lower face, wider than the face, knitted or patterned."""
    COLLAR = "collar"
    """A high collar (turtleneck, jacket) pulled up over the chin and mouth."""


PATTERNS = ("none", "stripes", "checks", "dots", "floral", "camo", "ribs")
"""Prints and weaves of a mask's fabric (`MaskStyle.pattern`), in the accent colour."""


@dataclass(frozen=True)
class MaskStyle:
    """Everything that decides how one mask looks; `random_style` draws one."""

    kind: MaskKind = MaskKind.SURGICAL
    hue: float = 0.55
    """Base colour hue, 0..1 (HSV); ignored for grayscale images except through brightness."""
    saturation: float = 0.35
    """Base colour saturation, 0..1."""
    value: float = 0.85
    """Base colour brightness, 0..1."""
    pleats: int = 3
    """Horizontal folds (surgical masks); 0 for none."""
    pleat_depth: float = 0.15
    """Brightness swing across one pleat, 0..1."""
    noise: float = 0.03
    """Fabric noise amplitude as a fraction of full scale."""
    shading: float = 0.2
    """Strength of the directional gradient and of the darkening towards the sides, 0..1."""
    light_angle: float = 1.5
    """Direction the light comes from in the mask frame, radians (pi/2: from above)."""
    fit: float = 0.7
    """How tightly the top edge follows the nose and cheeks: 0 a straight tent, 1 hugging."""
    height: float = 0.3
    """Top edge on the nose: 0 just below the lower eyelids, 1 at the nose tip."""
    chin_extend: float = 0.06
    """How far the mask reaches past the jaw line, as a fraction of the eye-to-chin height."""
    edge_blur: float = 0.01
    """Gaussian blur of the matte edge, sigma as a fraction of the eye-to-chin height."""
    straps: bool = True
    """Draw ear loops from the mask's corners towards the ears."""
    seam: bool = False
    """A vertical centre seam (cloth masks, fold-flat KN95)."""
    valve: bool = False
    """An exhalation valve (N95)."""
    family: str = ""
    """The mask family the style was drawn from (FAMILIES), for labels; "" for random_style."""
    pattern: str = "none"
    """Print or weave in the accent colour (PATTERNS)."""
    accent: tuple[float, float, float] = (0.0, 0.0, 1.0)
    """Accent (print) colour as HSV, each 0..1."""
    pattern_scale: float = 6.0
    """Pattern repeats across the mask's width."""
    pattern_angle: float = 0.0
    """Pattern direction, radians."""
    falloff: float = 0.0
    """Light falloff across the mask away from the light, 0..1 (0: none)."""
    fold: bool = False
    """A folded KN95: a sharp vertical fold, each half lit differently, welded edge lines."""
    tilt: float = 0.0
    """Worn crooked: the mask turned in the face plane about the nose tip, radians (|tilt| <= 0.5)."""
    shift: float = 0.0
    """Worn off-centre: sideways offset as a fraction of the eye-to-chin height (|shift| <= 0.2)."""
    drop: float = 0.0
    """Worn below the nose: the top edge lowered from `height`'s place towards the upper lip, 0..1."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", MaskKind(self.kind))
        object.__setattr__(self, "accent", tuple(float(c) for c in self.accent))
        if self.pattern not in PATTERNS:
            raise ConfigError(f"MaskStyle.pattern={self.pattern!r}: one of {', '.join(PATTERNS)}")
        if len(self.accent) != 3 or not all(0.0 <= c <= 1.0 for c in self.accent):
            raise ConfigError(f"MaskStyle.accent={self.accent!r}: three HSV values within 0..1")
        if abs(self.tilt) > 0.5 or abs(self.shift) > 0.2 or not 0.5 <= self.pattern_scale <= 40:
            raise ConfigError(f"MaskStyle tilt={self.tilt!r} shift={self.shift!r} pattern_scale="
                              f"{self.pattern_scale!r}: |tilt| <= 0.5, |shift| <= 0.2, scale 0.5..40")
        for name in ("hue", "saturation", "value", "pleat_depth", "noise", "shading", "fit",
                     "height", "falloff", "drop"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"MaskStyle.{name}={value!r}: must be within 0..1")
        if not 0 <= self.pleats <= 8:
            raise ConfigError(f"MaskStyle.pleats={self.pleats!r}: must be within 0..8")
        if not 0.0 <= self.chin_extend <= 0.3:
            raise ConfigError(f"MaskStyle.chin_extend={self.chin_extend!r}: must be within 0..0.3")
        if not 0.0 <= self.edge_blur <= 0.05:
            raise ConfigError(f"MaskStyle.edge_blur={self.edge_blur!r}: must be within 0..0.05")

    @property
    def bgr(self) -> np.ndarray:
        """Base colour as float32 BGR, 0..255."""
        r, g, b = colorsys.hsv_to_rgb(self.hue, self.saturation, self.value)
        return np.array([b, g, r], np.float32) * 255.0

    @property
    def strap_bgr(self) -> np.ndarray:
        """Ear loops: white elastic on surgical masks, the fabric colour otherwise."""
        if self.kind is MaskKind.SURGICAL:
            return np.full(3, 235.0, np.float32)
        return self.bgr * 0.9

    @property
    def accent_bgr(self) -> np.ndarray:
        r, g, b = colorsys.hsv_to_rgb(*self.accent)
        return np.array([b, g, r], np.float32) * 255.0

    @property
    def crooked(self) -> bool:
        return bool(self.tilt or self.shift)


_KIND_WEIGHTS = {MaskKind.SURGICAL: 0.4, MaskKind.CLOTH: 0.25, MaskKind.N95: 0.2,
                 MaskKind.OCCLUSION: 0.15}
SHIPPED_KINDS = tuple(_KIND_WEIGHTS)
"""The kinds random_style (the shipped model's generator) draws; the others come only from FAMILIES."""


def random_style(rng: np.random.Generator) -> MaskStyle:
    """Draw a mask style; ranges are per kind (surgical mostly blue or white, N95 near-white…)."""
    kinds = list(_KIND_WEIGHTS)
    kind = kinds[rng.choice(len(kinds), p=np.array(list(_KIND_WEIGHTS.values())))]
    u = rng.uniform
    common = dict(shading=u(0.05, 0.35), light_angle=u(0, 2 * math.pi), edge_blur=u(0, 0.02))
    if kind is MaskKind.SURGICAL:
        blue = rng.random() < 0.6
        return MaskStyle(kind=kind, hue=u(0.48, 0.6) if blue else u(0, 1),
                         saturation=u(0.2, 0.6) if blue else u(0, 0.5), value=u(0.55, 1.0),
                         pleats=int(rng.integers(2, 5)), pleat_depth=u(0.08, 0.25),
                         noise=u(0.01, 0.04), fit=u(0.3, 1.0), height=u(0, 0.8),
                         chin_extend=u(0.02, 0.1), straps=bool(rng.random() < 0.8), **common)
    if kind is MaskKind.CLOTH:
        return MaskStyle(kind=kind, hue=u(0, 1), saturation=u(0, 0.9), value=u(0.1, 0.95),
                         pleats=0, pleat_depth=0.0, noise=u(0.03, 0.1), fit=u(0.4, 1.0),
                         height=u(0, 0.7), chin_extend=u(0.04, 0.12),
                         straps=bool(rng.random() < 0.7), seam=bool(rng.random() < 0.5), **common)
    if kind is MaskKind.N95:
        return MaskStyle(kind=kind, hue=u(0, 1), saturation=u(0, 0.15), value=u(0.75, 1.0),
                         pleats=0, pleat_depth=0.0, noise=u(0.02, 0.06), fit=u(0, 0.4),
                         height=u(0, 0.5), chin_extend=u(0.06, 0.14),
                         straps=bool(rng.random() < 0.7), seam=bool(rng.random() < 0.5),
                         valve=bool(rng.random() < 0.25), **common)
    return MaskStyle(kind=kind, hue=u(0, 1), saturation=u(0, 0.4), value=u(0, 1), pleats=0,
                     pleat_depth=0.0, noise=u(0, 0.15), fit=0.0, height=u(0, 1),
                     chin_extend=0.0, straps=False, **common)


# ---------------------------------------------------------------------------------------------
# Mask families: style distributions that are clearly different from each other, for testing on a
# family the model never saw (`python -m export families`) and leave-one-family-out training. They
# share this module's geometry and compositing; a family is only a sampler of MaskStyle.


def _tone(rng: np.random.Generator, dark: float = 0.25, light: float = 0.35
          ) -> tuple[float, float, float]:
    """(hue, saturation, value): dark, light or coloured, with the given shares of dark and light."""
    u, pick = rng.uniform, rng.random()
    if pick < dark:
        return u(0, 1), u(0, 0.4), u(0.04, 0.28)
    if pick < dark + light:
        return u(0, 1), u(0, 0.15), u(0.8, 1.0)
    return u(0, 1), u(0.35, 0.9), u(0.3, 0.9)


def _light(rng: np.random.Generator) -> dict[str, float]:
    """Shading and light falloff on the mask, light from any side (every family has them)."""
    u = rng.uniform
    return dict(shading=u(0.1, 0.45), light_angle=u(0, 2 * math.pi), falloff=u(0.0, 0.6))


def _surgical(rng: np.random.Generator) -> MaskStyle:
    u = rng.uniform
    colour = rng.choice(4, p=[0.5, 0.25, 0.15, 0.1])
    hue, sat, val = [(u(0.5, 0.58), u(0.3, 0.6), u(0.6, 0.95)), (u(0, 1), u(0, 0.08), u(0.85, 1.0)),
                     (u(0, 1), u(0, 0.1), u(0.05, 0.2)), (u(0.25, 0.95), u(0.25, 0.5), u(0.6, 0.95))][colour]
    return MaskStyle(kind=MaskKind.SURGICAL, family="surgical", hue=hue, saturation=sat, value=val,
                     pleats=3, pleat_depth=u(0.15, 0.3), noise=u(0.01, 0.03), fit=u(0.5, 0.9),
                     height=u(0.1, 0.6), chin_extend=u(0.03, 0.08), edge_blur=u(0, 0.01),
                     straps=True, **_light(rng))


def _kn95(rng: np.random.Generator) -> MaskStyle:
    u = rng.uniform
    hue, sat, val = _tone(rng, dark=0.2, light=0.65)
    return MaskStyle(kind=MaskKind.N95, family="kn95", hue=hue, saturation=min(sat, 0.5), value=val,
                     pleats=0, pleat_depth=0.0, noise=u(0.01, 0.03), fit=u(0.0, 0.3),
                     height=u(0.0, 0.4), chin_extend=u(0.12, 0.2), edge_blur=u(0, 0.008),
                     straps=bool(rng.random() < 0.85), seam=False, fold=True,
                     valve=bool(rng.random() < 0.2), **_light(rng))


def _cloth(rng: np.random.Generator) -> MaskStyle:
    u = rng.uniform
    hue, sat, val = _tone(rng, dark=0.3, light=0.2)
    accent = _tone(rng, dark=0.3 if val > 0.5 else 0.0, light=0.0 if val > 0.5 else 0.6)
    pattern = str(rng.choice(["stripes", "checks", "dots", "floral", "camo"]))
    return MaskStyle(kind=MaskKind.CLOTH, family="cloth", hue=hue, saturation=sat, value=val, pleats=0,
                     pleat_depth=0.0, noise=u(0.02, 0.06), fit=u(0.6, 1.0), height=u(0.0, 0.6),
                     chin_extend=u(0.06, 0.14), edge_blur=u(0, 0.015), straps=bool(rng.random() < 0.6),
                     seam=bool(rng.random() < 0.4), pattern=pattern, accent=accent,
                     pattern_scale=u(3, 12), pattern_angle=u(-0.6, 0.6), **_light(rng))


def _polygon(rng: np.random.Generator) -> MaskStyle:
    u = rng.uniform
    hue, sat, val = _tone(rng, dark=0.35, light=0.3)
    return MaskStyle(kind=MaskKind.POLYGON, family="polygon", hue=hue, saturation=sat, value=val,
                     pleats=0, pleat_depth=0.0, noise=0.0, shading=u(0, 0.06), light_angle=u(0, 6.28),
                     fit=0.0, height=u(0.0, 0.35), chin_extend=u(0.0, 0.1), edge_blur=0.0,
                     straps=False)


def _high(rng: np.random.Generator) -> MaskStyle:
    """Worn high: the top edge at the nose bridge and hugging the cheeks right under the eyes."""
    u = rng.uniform
    kind = [MaskKind.SURGICAL, MaskKind.CLOTH, MaskKind.N95][int(rng.choice(3))]
    hue, sat, val = _tone(rng)
    return MaskStyle(kind=kind, family="high", hue=hue, saturation=sat, value=val,
                     pleats=3 if kind is MaskKind.SURGICAL else 0,
                     pleat_depth=u(0.1, 0.25) if kind is MaskKind.SURGICAL else 0.0,
                     noise=u(0.01, 0.05), fit=u(0.9, 1.0), height=0.0, chin_extend=u(0.08, 0.16),
                     edge_blur=u(0, 0.01), straps=bool(rng.random() < 0.7),
                     seam=kind is not MaskKind.SURGICAL and bool(rng.random() < 0.5), **_light(rng))


def _low_crooked(rng: np.random.Generator) -> MaskStyle:
    """Worn below the nose, turned and pushed to one side, or both."""
    u = rng.uniform
    kind = [MaskKind.SURGICAL, MaskKind.CLOTH][int(rng.choice(2))]
    hue, sat, val = _tone(rng)
    mode = rng.random()
    low, crooked = mode < 0.7, mode > 0.4
    sign = 1.0 if rng.random() < 0.5 else -1.0
    return MaskStyle(kind=kind, family="low_crooked", hue=hue, saturation=sat, value=val,
                     pleats=3 if kind is MaskKind.SURGICAL else 0,
                     pleat_depth=u(0.1, 0.25) if kind is MaskKind.SURGICAL else 0.0,
                     noise=u(0.01, 0.05), fit=u(0.4, 0.9), height=u(0.6, 1.0) if low else u(0.1, 0.5),
                     drop=u(0.5, 1.0) if low else 0.0, chin_extend=u(0.02, 0.1), edge_blur=u(0, 0.01),
                     straps=bool(rng.random() < 0.8), tilt=sign * u(0.12, 0.35) if crooked else 0.0,
                     shift=-sign * u(0.0, 0.1) if crooked else 0.0, **_light(rng))


def _occluder(rng: np.random.Generator) -> MaskStyle:
    """A hand, a scarf or a collar over the lower face."""
    u = rng.uniform
    kind = [MaskKind.HAND, MaskKind.SCARF, MaskKind.COLLAR][int(rng.choice(3))]
    if kind is MaskKind.HAND:  # skin, from pale to dark; pose and side in pattern_angle / tilt
        return MaskStyle(kind=kind, family="occluder", hue=u(0.03, 0.09), saturation=u(0.25, 0.6),
                         value=u(0.3, 0.95), pleats=0, pleat_depth=0.0, noise=u(0.01, 0.03),
                         height=u(0, 1), edge_blur=u(0.005, 0.02), straps=False,
                         tilt=u(-0.4, 0.4), pattern_angle=float(rng.choice([-1.0, 1.0])),
                         pattern_scale=float(rng.choice([1.0, 2.0])), chin_extend=0.0, **_light(rng))
    hue, sat, val = _tone(rng, dark=0.35, light=0.25)
    accent = _tone(rng, dark=0.5 if val > 0.5 else 0.0, light=0.0 if val > 0.5 else 0.7)
    pattern = str(rng.choice(["ribs", "stripes", "checks", "none"] if kind is MaskKind.SCARF else ["ribs", "none"]))
    return MaskStyle(kind=kind, family="occluder", hue=hue, saturation=sat, value=val, pleats=0,
                     pleat_depth=0.0, noise=u(0.02, 0.07), height=u(0, 1), edge_blur=u(0.005, 0.02),
                     straps=False, pattern=pattern, accent=accent, chin_extend=0.0,
                     pattern_scale=u(8, 20) if pattern == "ribs" else u(2, 6),
                     pattern_angle=u(-0.3, 0.3), tilt=u(-0.15, 0.15), **_light(rng))


@dataclass(frozen=True)
class MaskFamily:
    name: str
    sample: Callable[[np.random.Generator], MaskStyle]
    description: str
    shipped_overlap: str
    """How much of the family the shipped model's training generator (random_style) already draws."""


FAMILIES: dict[str, MaskFamily] = {f.name: f for f in (
    MaskFamily("surgical", _surgical, "pleated surgical: blue, white, black or coloured, three pleats, "
               "hems, ear loops", "yes: random_style's SURGICAL kind (40 % of its masks) draws the same"),
    MaskFamily("kn95", _kn95, "folded KN95: a sharp centre fold with each half lit differently, welded "
               "edge lines, pointed chin, mostly white/grey", "partly: its N95 kind (near-white cup, "
               "optional seam), never folded"),
    MaskFamily("cloth", _cloth, "printed and patterned cloth: stripes, checks, polka dots, florals, camo "
               "in two colours", "partly: its CLOTH kind (plain colours, seam), never printed"),
    MaskFamily("polygon", _polygon, "flat single-colour polygons, hard straight edges, no shading, from "
               "the nose bridge to under the chin", "little: its OCCLUSION kind is a flat box, but from "
               "the lower nose down"),
    MaskFamily("high", _high, "worn high: top edge at the nose bridge, hugging the cheeks right under "
               "the eyes", "partly: its heights reach the bridge, but rarely with the tightest fit"),
    MaskFamily("low_crooked", _low_crooked, "worn below the nose, turned up to 20° and pushed "
               "sideways, or both", "no: it never lowers a mask past the nose tip nor turns one"),
    MaskFamily("occluder", _occluder, "hands, scarves and high collars over the lower face",
               "no: nothing like it"),
)}
"""The mask families, in report order."""


def family_style(family: str, rng: np.random.Generator) -> MaskStyle:
    """Draw a style from one family (FAMILIES)."""
    if family not in FAMILIES:
        raise ConfigError(f"mask family {family!r}: one of {', '.join(FAMILIES)}")
    return FAMILIES[family].sample(rng)


# ---------------------------------------------------------------------------------------------
# Landmark topology (from MediaPipe's own connection tables) and the fallback geometry.


@functools.lru_cache(maxsize=1)
def _topology() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From MediaPipe's connection tables: the lower face oval in order (127 → chin → 356),
    every eye-contour index, and how far each oval point is pushed out (1 at the chin, less up)."""
    conn = _face_mesh_connections()
    neighbours: dict[int, list[int]] = {}
    for a, b in conn.FACEMESH_FACE_OVAL:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    loop = [_OVAL_FROM, _OVAL_DOWN_HINT[_OVAL_FROM]]
    while loop[-1] in neighbours and len(loop) < len(neighbours):
        loop.append(next(n for n in neighbours[loop[-1]] if n != loop[-2]))
    if loop[1] not in neighbours.get(_OVAL_FROM, ()) or _CHIN not in loop or (
            _OVAL_TO not in loop or loop.index(_CHIN) > loop.index(_OVAL_TO)):
        raise EdgeError("MediaPipe's FACEMESH_FACE_OVAL is not the expected loop through "
                        f"{_OVAL_FROM}, {_CHIN} and {_OVAL_TO}; update export/masks.py")
    oval = np.array(loop[: loop.index(_OVAL_TO) + 1])
    chin_at = loop.index(_CHIN)
    weight = np.concatenate([np.linspace(0.15, 1.0, chin_at + 1),
                             np.linspace(1.0, 0.15, len(oval) - chin_at)[1:]])
    eyes = sorted({i for edge in conn.FACEMESH_LEFT_EYE | conn.FACEMESH_RIGHT_EYE for i in edge})
    return oval, np.array(eyes), weight


def _face_mesh_connections() -> types.ModuleType:
    """MediaPipe's `face_mesh_connections` (plain frozensets of index pairs), loaded from its file:
    `import mediapipe` pulls in its whole framework (and TensorFlow when installed), 1.5–5 s."""
    spec = importlib.util.find_spec("mediapipe")
    path = None if spec is None or spec.origin is None else (
        Path(spec.origin).parent / "python" / "solutions" / "face_mesh_connections.py")
    if path is None or not path.is_file():
        raise EdgeError("mediapipe's face_mesh_connections.py was not found: install the pinned "
                        "mediapipe from requirements.txt")
    module_spec = importlib.util.spec_from_file_location("_mediapipe_face_mesh_connections", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


_OVAL_DOWN_HINT = {_OVAL_FROM: _CHEEK_LEFT}
"""127's oval neighbours are 162 (up) and 234 (down): the walk starts downwards."""


# Canonical FER2013 geometry for the 468-point indices this module reads (x, y as fractions of
# the crop). Made by `python -m export.masks --print-canonical`: grace_hopper.jpg's FaceMesh
# landmarks, de-rolled and scaled so the eyes sit at y=0.385, the chin at y=0.99 and the
# cheek-to-cheek width (234→454) is 0.76 — the median FaceMesh geometry we measured on FER2013
# public-test crops (eyes 0.385, nose tip 0.63, chin 1.0, cheeks 0.12..0.88).
_CANONICAL = {
    1: (0.5043, 0.6186), 2: (0.5026, 0.6469), 4: (0.5044, 0.5817), 5: (0.5039, 0.5298),
    6: (0.503, 0.4051), 7: (0.2538, 0.3928), 13: (0.4997, 0.7512), 14: (0.4991, 0.7525),
    33: (0.2403, 0.385), 58: (0.151, 0.7138), 61: (0.3484, 0.7442), 70: (0.1752, 0.3073),
    93: (0.1201, 0.5513), 127: (0.1129, 0.4081), 132: (0.1288, 0.6307), 133: (0.3997, 0.3897),
    136: (0.2193, 0.8383), 144: (0.2905, 0.4012), 145: (0.321, 0.4027), 148: (0.4195, 0.9831),
    149: (0.311, 0.9272), 150: (0.2672, 0.8899), 152: (0.4988, 0.99), 153: (0.3499, 0.4003),
    154: (0.3766, 0.3949), 155: (0.3926, 0.3921), 157: (0.3686, 0.3688), 158: (0.3378, 0.3614),
    159: (0.3075, 0.3604), 160: (0.2772, 0.3661), 161: (0.2586, 0.3747), 163: (0.2691, 0.3975),
    172: (0.1832, 0.7832), 173: (0.3899, 0.381), 176: (0.3601, 0.9603), 195: (0.5038, 0.4862),
    197: (0.5033, 0.4466), 205: (0.2739, 0.604), 234: (0.1166, 0.479), 246: (0.2482, 0.381),
    249: (0.7463, 0.3924), 263: (0.7597, 0.385), 288: (0.8412, 0.7129), 291: (0.6496, 0.7471),
    300: (0.8246, 0.3108), 323: (0.8725, 0.55), 356: (0.8819, 0.4069), 361: (0.8635, 0.6292),
    362: (0.6015, 0.3896), 365: (0.7754, 0.8378), 373: (0.7104, 0.401), 374: (0.68, 0.4028),
    377: (0.5776, 0.9822), 378: (0.6854, 0.9261), 379: (0.7289, 0.8891), 380: (0.6511, 0.4004),
    381: (0.6244, 0.3948), 382: (0.6085, 0.392), 384: (0.6327, 0.3686), 385: (0.6635, 0.3612),
    386: (0.6937, 0.3603), 387: (0.7237, 0.3661), 388: (0.742, 0.3748), 390: (0.7314, 0.397),
    397: (0.8102, 0.7826), 398: (0.6116, 0.3809), 400: (0.637, 0.9588), 425: (0.7274, 0.6037),
    454: (0.8766, 0.4776), 466: (0.7523, 0.3808),
}


def canonical_landmarks(height: int = 48, width: int = 48) -> np.ndarray:
    """Landmarks for an aligned FER2013-style crop with no detection: float32 [468,3] pixels.

    Only the points this module (and a typical check of eyes, brows and mouth) reads are set;
    every other row is NaN.
    """
    out = np.full((NUM_LANDMARKS, 3), np.nan, np.float32)
    for index, (x, y) in _CANONICAL.items():
        out[index] = (x * width, y * height, 0.0)
    return out


# ---------------------------------------------------------------------------------------------
# Geometry.


@dataclass(frozen=True)
class _Face:
    """Landmarks in the face's own axes: a across (image left→right), b down towards the chin,
    origin at the nose bridge; the axes follow the cheek-to-cheek line, so roll is undone."""

    ab: np.ndarray
    """All landmarks in face coordinates, float64 [468,2], pixels."""
    origin: np.ndarray
    axes: np.ndarray
    """Rows: the a and b unit vectors in image pixels."""
    scale: float
    """Eye-to-chin height in pixels: the unit for every margin and offset."""
    lid_b: float
    """The lowest eye-contour point; nothing is drawn above `protect_b`."""

    @classmethod
    def from_landmarks(cls, lm: np.ndarray) -> "_Face":
        _, eyes, _ = _topology()
        ex = lm[_CHEEK_RIGHT] - lm[_CHEEK_LEFT]
        ex = ex / max(math.hypot(ex[0], ex[1]), 1e-6)
        axes = np.array([[ex[0], ex[1]], [-ex[1], ex[0]]])
        origin = lm[_NOSE_CHAIN[0]]
        ab = (lm - origin) @ axes.T
        eye_b = ab[eyes, 1]
        return cls(ab, origin, axes, float(ab[_CHIN, 1] - eye_b.mean()), float(eye_b.max()))

    def to_image(self, ab: np.ndarray) -> np.ndarray:
        return self.origin + ab @ self.axes

    def protect_b(self, style: MaskStyle) -> float:
        """Highest b the mask's top edge may reach: below the lowest eyelid point by a margin,
        the anti-aliased edge's reach and the blur's reach, so the eyes stay pixel-identical."""
        sigma = style.edge_blur * self.scale
        return self.lid_b + 0.03 * self.scale + 1.5 + (3.0 * sigma if sigma >= _MIN_BLUR else 0.0)


def _cumlen(points: np.ndarray) -> np.ndarray:
    seg = np.hypot(*(points[1:] - points[:-1]).T)
    out = np.zeros(len(points))
    np.cumsum(seg, out=out[1:])
    return out


def _sample(points: np.ndarray, s_cum: np.ndarray, s: np.ndarray) -> np.ndarray:
    out = np.empty((len(s), 2))
    out[:, 0] = np.interp(s, s_cum, points[:, 0])
    out[:, 1] = np.interp(s, s_cum, points[:, 1])
    return out


def _chaikin(points: np.ndarray, iterations: int = 2) -> np.ndarray:
    for _ in range(iterations):
        out = np.empty((2 * len(points), 2))
        out[1:-1:2] = 0.75 * points[:-1] + 0.25 * points[1:]
        out[2:-1:2] = 0.25 * points[:-1] + 0.75 * points[1:]
        out[0], out[-1] = points[0], points[-1]
        points = out
    return points


@dataclass(frozen=True)
class _Outline:
    grid: np.ndarray
    """Coons-patch grid, image pixels [rows+1, columns+1, 2]."""
    polygon: np.ndarray
    """Closed outline, image pixels [K, 2]."""
    straps: tuple[np.ndarray, ...]
    """Ear-loop segments, image pixels [2, 2] each."""


_HUG_A = np.array([1.0, 0.45, 0.2, 0.0, 0.2, 0.45, 1.0])
"""Top-edge control points between the nose (0) and the middle of each lower lid (1)…"""
_HUG_B = np.array([1.0, 0.675, 0.35, 0.0, 0.35, 0.675, 1.0])
"""…and how far each has dropped from the nose-ridge height to the cheek height."""


def _mask_outline(face: _Face, style: MaskStyle) -> _Outline:
    oval_idx, _, weight = _topology()
    ab, scale = face.ab, face.scale
    protect_b = face.protect_b(style)

    nose = ab[list(_NOSE_CHAIN)]
    nose_b = max(nose[1, 1], protect_b)
    top_b = nose_b + style.height * (max(nose[-1, 1], protect_b) - nose_b)
    top_a = float(np.interp(top_b, np.maximum.accumulate(nose[:, 1]), nose[:, 0]))
    cheek_low_b = 0.5 * (ab[_CHEEK_LOW_LEFT, 1] + ab[_CHEEK_LOW_RIGHT, 1])
    cheek_b = protect_b + style.height * max(cheek_low_b - protect_b, 0.0)
    if style.drop:  # worn below the nose: the whole top edge slides down towards the upper lip
        below = ab[_NOSE_BASE, 1] + 0.3 * (ab[_UPPER_LIP, 1] - ab[_NOSE_BASE, 1])
        lower = style.drop * max(below - top_b, 0.0)
        top_b, cheek_b = top_b + lower, cheek_b + lower
    side_b = cheek_b + 0.06 * scale

    # The oval pushed outwards, most at the chin: masks bulge and reach under the jaw.
    oval = ab[oval_idx]
    out = oval - ab[_NOSE_CHAIN[-1]]
    out *= (weight * ((0.01 + style.chin_extend) * scale) / np.maximum(
        np.hypot(out[:, 0], out[:, 1]), 1e-6))[:, None]
    oval = oval + out
    s_cum = _cumlen(oval)
    chin_at = int(np.argmax(weight))
    jaw_b = side_b + 0.45 * (oval[chin_at, 1] - side_b)
    left_b = np.maximum.accumulate(oval[: chin_at + 1, 1])
    right_b = np.maximum.accumulate(oval[chin_at:, 1][::-1])
    s_left, s_right = s_cum[: chin_at + 1], s_cum[chin_at:][::-1]
    s_top_l, s_jaw_l = np.interp([side_b, jaw_b], left_b, s_left)
    s_top_r, s_jaw_r = np.interp([side_b, jaw_b], right_b, s_right)
    side_l, side_r = _sample(oval, s_cum, np.array([s_top_l, s_top_r]))

    # Top edge: a curve hugging the nose ridge, the nose sides and the cheeks under the eyes,
    # blended by `fit` with a straight tent from the nose to the sides.
    lid_a = ab[[_LOWER_LID_LEFT, _LOWER_LID_LEFT, _LOWER_LID_LEFT, _LOWER_LID_LEFT,
                _LOWER_LID_RIGHT, _LOWER_LID_RIGHT, _LOWER_LID_RIGHT], 0]
    top = np.empty((9, 2))
    top[0], top[-1] = side_l, side_r
    top[1:-1, 0] = top_a + _HUG_A * (lid_a - top_a)
    hug_b = top_b + _HUG_B * (cheek_b - top_b)
    side = np.where(np.arange(7) < 3, 0, 1)
    side_pts = np.array([side_l, side_r])[side]
    span = top_a - side_pts[:, 0]
    t = np.divide(top[1:-1, 0] - side_pts[:, 0], span, out=np.zeros(7), where=np.abs(span) > 1e-6)
    tent_b = side_pts[:, 1] + t * (top_b - side_pts[:, 1])
    top[1:-1, 1] = np.maximum(tent_b + style.fit * (hug_b - tent_b), protect_b)
    top = _chaikin(top)

    top_cum = _cumlen(top)
    t_curve = _sample(top, top_cum, top_cum[-1] * _U)
    oval_s = np.concatenate([s_jaw_l + (s_jaw_r - s_jaw_l) * _U, s_top_l + (s_jaw_l - s_top_l) * _V,
                             s_top_r + (s_jaw_r - s_top_r) * _V])
    grid = (_COONS @ np.concatenate([t_curve, _sample(oval, s_cum, oval_s)])).reshape(
        len(_V), len(_U), 2)

    # The outline follows the oval at its own resolution, not the grid's, so the jaw stays smooth.
    inside = (s_cum > s_top_l) & (s_cum < s_top_r)
    polygon = np.concatenate([top, [side_r], oval[inside][::-1], [side_l]])

    parts = [grid.reshape(-1, 2), polygon]
    if style.straps:
        width = ab[_CHEEK_RIGHT, 0] - ab[_CHEEK_LEFT, 0]
        ear_l = ab[_CHEEK_LEFT] + (-0.12 * width, 0.05 * scale)
        ear_r = ab[_CHEEK_RIGHT] + (0.12 * width, 0.05 * scale)
        jaw_l, jaw_r = grid[-1, 0], grid[-1, -1]
        parts.append(np.array([side_l, ear_l, jaw_l, ear_l, side_r, ear_r, jaw_r, ear_r]))
    image = face.to_image(_crooked(face, style, np.concatenate(parts)))
    k = grid.shape[0] * grid.shape[1]
    grid_px, polygon_px = image[:k].reshape(grid.shape), image[k:k + len(polygon)]
    straps = image[k + len(polygon):]
    return _Outline(grid_px, polygon_px, tuple(straps.reshape(-1, 2, 2)))


def _crooked(face: _Face, style: MaskStyle, ab: np.ndarray) -> np.ndarray:
    """Face-frame points of a mask worn crooked: turned about the nose tip by `tilt`, shifted by `shift`."""
    if not style.crooked:
        return ab
    pivot = face.ab[_NOSE_CHAIN[-1]]
    c, s = math.cos(style.tilt), math.sin(style.tilt)
    return (ab - pivot) @ np.array([[c, s], [-s, c]]) + pivot + (style.shift * face.scale, 0.0)


def _below_eyes(face: _Face, style: MaskStyle, roi: tuple[int, int, int, int], alpha: np.ndarray
                ) -> np.ndarray:
    """`alpha` cut to zero above `protect_b` (for shapes whose edges are not clamped: crooked
    masks, hands, scarves), with a one-pixel ramp."""
    x0, y0 = roi[:2]
    h, w = alpha.shape
    xs = np.arange(x0, x0 + w, dtype=np.float64) - face.origin[0]
    ys = np.arange(y0, y0 + h, dtype=np.float64) - face.origin[1]
    b = xs[None, :] * face.axes[1, 0] + ys[:, None] * face.axes[1, 1]
    return alpha * np.clip(b - face.protect_b(style), 0.0, 1.0).astype(np.float32)


def _coons_matrix(columns: int, rows: int) -> np.ndarray:
    """Grid points of a Coons patch as a linear map of its four sampled borders, stacked as
    top [columns+1], bottom [columns+1], left [rows+1], right [rows+1] (top/bottom left→right,
    left/right downwards)."""
    nu, nv = columns + 1, rows + 1
    u, v = np.meshgrid(np.linspace(0, 1, nu), np.linspace(0, 1, nv))
    u, v = u.ravel(), v.ravel()
    j, i = np.meshgrid(np.arange(nu), np.arange(nv))
    j, i = j.ravel(), i.ravel()
    c = np.zeros((nu * nv, 2 * nu + 2 * nv))
    rows_ = np.arange(nu * nv)
    top, bottom, left, right = 0, nu, 2 * nu, 2 * nu + nv
    c[rows_, top + j] += 1 - v
    c[rows_, bottom + j] += v
    c[rows_, left + i] += 1 - u
    c[rows_, right + i] += u
    c[:, top] -= (1 - u) * (1 - v)
    c[:, top + nu - 1] -= u * (1 - v)
    c[:, bottom] -= (1 - u) * v
    c[:, bottom + nu - 1] -= u * v
    return c


_U = np.linspace(0, 1, _GRID_COLUMNS + 1)
_V = np.linspace(0, 1, _GRID_ROWS + 1)
_COONS = _coons_matrix(_GRID_COLUMNS, _GRID_ROWS)


def _occlusion_polygon(face: _Face, style: MaskStyle) -> np.ndarray:
    """A box over the face from a line across the lower nose to below the chin, image pixels."""
    ab = face.ab
    nose_b, base_b = ab[_NOSE_CHAIN[3], 1], ab[_NOSE_BASE, 1]
    top_b = max(nose_b + style.height * (base_b - nose_b), face.protect_b(style))
    width = ab[_CHEEK_RIGHT, 0] - ab[_CHEEK_LEFT, 0]
    left, right = ab[_CHEEK_LEFT, 0] - 0.2 * width, ab[_CHEEK_RIGHT, 0] + 0.2 * width
    bottom = ab[_CHIN, 1] + 0.3 * face.scale
    return face.to_image(np.array([[left, top_b], [right, top_b], [right, bottom],
                                   [left, bottom]]))


# ---------------------------------------------------------------------------------------------
# Texture in the canonical mask frame.


@functools.lru_cache(maxsize=32)
def _uv(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.linspace(0, 1, width, dtype=np.float32),
                       np.linspace(0, 1, height, dtype=np.float32))


def _template(style: MaskStyle, height: int, width: int, channels: int,
              rng: np.random.Generator) -> np.ndarray:
    """Mask texture, float32 [height, width, channels], 0..255, v=0 the top edge."""
    u, v = _uv(height, width)
    angle = style.light_angle
    shade = 1.0 + style.shading * (math.cos(angle) * (u - 0.5) - math.sin(angle) * (v - 0.5))
    shade -= 0.5 * style.shading * (2 * u - 1) ** 2
    if style.kind is MaskKind.SURGICAL:
        if style.pleats:
            phase = np.clip((v - 0.22) / 0.6, 0, 1) * style.pleats
            frac = phase - np.floor(phase)
            inside = (v > 0.22) & (v < 0.82)
            shade += np.where(inside, style.pleat_depth * (frac - 0.5), 0)
        hem = (v < 0.07) | (v > 0.94) | (u < 0.03) | (u > 0.97)
        shade += np.where(hem, 0.06, 0.0)
    elif style.kind is MaskKind.N95:
        shade -= 0.35 * style.shading * ((2 * u - 1) ** 2 + 0.6 * (2 * v - 1) ** 2)
        shade -= np.where((v < 0.05) | (v > 0.95), 0.08, 0.0)
        if style.fold:  # two flat halves facing different ways: one lit, one in shade, a sharp ridge
            lit = 1.0 if math.cos(angle) >= 0 else -1.0
            shade += np.where(u < 0.5, -lit, lit) * (0.07 + 0.35 * style.shading)
            shade += 0.18 * np.exp(-(((u - 0.5) * width / 1.2) ** 2))
            weld = np.minimum(np.minimum(u, 1 - u) * width, np.minimum(v, 1 - v) * height)
            shade -= 0.14 * np.exp(-(((weld - max(1.5, 0.05 * width)) / 0.7) ** 2))
    elif style.kind is MaskKind.SCARF:  # drapes: soft diagonal folds
        shade += 0.12 * np.sin(2 * math.pi * (1.6 * u + 0.8 * v) + 3 * style.light_angle)
    elif style.kind is MaskKind.COLLAR:  # a rolled band at the top
        shade += np.where(v < 0.08, 0.12, 0.0) - np.where((v > 0.08) & (v < 0.1), 0.1, 0.0)
    if style.falloff:  # light falls off away from the side the light comes from
        lu, lv = 0.5 + 0.7 * math.cos(angle), 0.5 - 0.7 * math.sin(angle)
        shade *= 1.0 - style.falloff * np.clip(((u - lu) ** 2 + (v - lv) ** 2) / 1.8, 0, 1)
    if style.seam:
        shade -= 0.25 * np.exp(-(((u - 0.5) * width / max(0.8, 0.012 * width)) ** 2))
    noise = rng.standard_normal((height, width), dtype=np.float32)
    if style.kind is MaskKind.CLOTH:
        coarse = rng.standard_normal((max(2, height // 6), max(2, width // 6)), dtype=np.float32)
        noise = 0.6 * noise + 0.8 * cv2.resize(coarse, (width, height),
                                               interpolation=cv2.INTER_LINEAR)
    base = _base(style, channels)
    if style.pattern != "none":
        m = _pattern(style, u * width, v * height, width, rng)[..., None]
        accent = _gray(style.accent_bgr) if channels == 1 else style.accent_bgr
        base = base * (1.0 - m) + accent * m
    tex = shade[..., None] * base + (style.noise * 255.0) * noise[..., None]
    if style.valve:
        # A round valve on the wearer's left: a darker disc with a darker rim.
        d2 = ((u - 0.72) * width) ** 2 + ((v - 0.58) * height * 1.4) ** 2
        r = 0.1 * width
        tex[d2 < r * r] *= 0.8
        tex[(d2 < r * r) & (d2 > (0.75 * r) ** 2)] *= 0.7
    return np.clip(tex, 0, 255, out=tex)


def _blobs(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Smooth noise, float32 [h,w] of unit-ish spread, features about `cell` pixels wide."""
    h, w = shape
    coarse = rng.standard_normal((max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)), dtype=np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def _pattern(style: MaskStyle, x: np.ndarray, y: np.ndarray, width: int,
             rng: np.random.Generator) -> np.ndarray:
    """Share of the accent colour per texel, 0..1, for `style.pattern` (x, y in texels)."""
    period = width / style.pattern_scale
    c, s = math.cos(style.pattern_angle), math.sin(style.pattern_angle)
    p, q = (c * x + s * y) / period, (-s * x + c * y) / period

    def square(t: np.ndarray) -> np.ndarray:  # a square wave with a one-texel soft edge
        return np.clip(0.5 + 0.5 * period * np.cos(2 * math.pi * t) / math.pi, 0, 1)

    name = style.pattern
    if name == "stripes":
        m = square(p)
    elif name == "checks":
        m = 0.5 * (square(p) + square(q))
    elif name == "dots":
        d = np.hypot(p - np.round(p), q - np.round(q + 0.5 * (np.round(p) % 2)))
        m = np.clip((0.28 - d) * period, 0, 1)
    elif name == "floral":
        blobs = _blobs(rng, x.shape, max(2.0, period / 2))
        petals = np.hypot(p - np.round(p), q - np.round(q)) < 0.2
        m = np.clip((blobs - 0.7) * 3, 0, 1) + 0.8 * petals
    elif name == "camo":
        m = 0.5 * (_blobs(rng, x.shape, max(2.0, period)) > 0.3) + 0.5 * (
            _blobs(rng, x.shape, max(2.0, period)) > 0.5)
    else:  # ribs: a fine knit, low contrast
        m = 0.35 * (0.5 + 0.5 * np.cos(2 * math.pi * x / max(period, 1.5)))
    return np.clip(m, 0, 1).astype(np.float32)


def _gray(bgr: np.ndarray) -> np.ndarray:
    return np.array([0.114 * bgr[0] + 0.587 * bgr[1] + 0.299 * bgr[2]], np.float32)


def _base(style: MaskStyle, channels: int) -> np.ndarray:
    return _gray(style.bgr) if channels == 1 else style.bgr


# ---------------------------------------------------------------------------------------------
# Rendering and compositing.


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ImageError(f"mask image must be a uint8 numpy array, got "
                         f"{getattr(image, 'dtype', type(image).__name__)}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3) or min(
            image.shape[:2]) < 8:
        raise ImageError(f"mask image must be HxW gray or HxWx3 BGR of at least 8x8, got "
                         f"shape {image.shape}")


def _usable_face(landmarks: np.ndarray | None, shape: tuple[int, int]) -> _Face:
    """The face geometry from landmarks, or the canonical crop geometry when they are unusable."""
    if landmarks is not None:
        lm = np.asarray(landmarks)
        if lm.ndim != 2 or lm.shape[0] not in (468, 478) or lm.shape[1] not in (2, 3):
            raise ImageError(f"landmarks must be [468,3] (or [468,2]/[478,3]) face-mesh points in "
                             f"pixels, got shape {lm.shape}")
        lm = lm[:NUM_LANDMARKS, :2].astype(np.float64)
        if np.isfinite(lm[_needed()]).all():
            face = _Face.from_landmarks(lm)
            if face.scale >= 4.0 and face.ab[_CHEEK_RIGHT, 0] - face.ab[_CHEEK_LEFT, 0] >= 4.0:
                return face
            _LOGGER.debug("landmarks degenerate (eye-to-chin %.1f px); canonical geometry used",
                          face.scale)
        else:
            _LOGGER.debug("landmarks contain NaN/inf; canonical geometry used")
    return _canonical_face(*shape)


@functools.lru_cache(maxsize=1)
def _needed() -> np.ndarray:
    oval, eyes, _ = _topology()
    return np.unique(np.concatenate([oval, eyes, list(_SPECIAL)]))


@functools.lru_cache(maxsize=16)
def _canonical_face(height: int, width: int) -> _Face:
    lm = canonical_landmarks(height, width)[:, :2].astype(np.float64)
    return _Face.from_landmarks(np.nan_to_num(lm))


def _roi(points: np.ndarray, shape: tuple[int, int], pad: float) -> tuple[int, int, int, int]:
    lo = np.floor(points.min(axis=0) - pad)
    hi = np.ceil(points.max(axis=0) + pad)
    return (max(int(lo[0]), 0), max(int(lo[1]), 0), min(int(hi[0]) + 1, shape[1]),
            min(int(hi[1]) + 1, shape[0]))


def _fill_alpha(polygon: np.ndarray | list[np.ndarray], size: tuple[int, int], sigma: float) -> np.ndarray:
    """Anti-aliased matte, float32 [h,w] in 0..1: the polygon's true pixel coverage, from a
    supersampled fill (OpenCV's own LINE_AA fill spills up to a pixel past the edge)."""
    k = 4 if size[0] * size[1] <= 40_000 else 2
    big = np.zeros((size[0] * k, size[1] * k), np.uint8)
    polygons = polygon if isinstance(polygon, list) else [polygon]
    for part in polygons:  # one by one: fillPoly of several would cut overlaps out (even-odd)
        cv2.fillPoly(big, [np.round(((part + 0.5) * k - 0.5) * 16).astype(np.int32)], 255,
                     cv2.LINE_8, shift=4)
    alpha = cv2.resize(big, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    if sigma >= _MIN_BLUR:
        alpha = cv2.GaussianBlur(alpha, (0, 0), sigma)
    return alpha.astype(np.float32) * np.float32(1.0 / 255.0)


@functools.lru_cache(maxsize=4)
def _cells(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two triangles per grid cell: vertex indices into the flattened grid [T,3], their (u,v)
    at the first vertex [T,2] and the (u,v) edge vectors [T,2,2] (columns: edge 1, edge 2)."""
    index = np.arange((rows + 1) * (cols + 1)).reshape(rows + 1, cols + 1)
    p00, p01 = index[:-1, :-1].ravel(), index[:-1, 1:].ravel()
    p10, p11 = index[1:, :-1].ravel(), index[1:, 1:].ravel()
    tris = np.concatenate([np.stack([p00, p01, p10], 1), np.stack([p11, p10, p01], 1)])
    uv = np.stack([index % (cols + 1) / cols, index // (cols + 1) / rows], -1).reshape(-1, 2)
    tri_uv = uv[tris]
    edges = np.stack([tri_uv[:, 1] - tri_uv[:, 0], tri_uv[:, 2] - tri_uv[:, 0]], -1)
    return tris, tri_uv[:, 0], edges


def _warp_uv(grid: np.ndarray, size: tuple[int, int], reach: int) -> tuple[np.ndarray, np.ndarray]:
    """Canonical (u, v) of every ROI pixel: find its grid triangle, apply that triangle's inverse
    affine map. Pixels just outside the patch (soft edges) borrow a neighbouring triangle."""
    tris, uv0, uv_edges = _cells(grid.shape[0] - 1, grid.shape[1] - 1)
    pts = grid.reshape(-1, 2)[tris]
    e = np.stack([pts[:, 1] - pts[:, 0], pts[:, 2] - pts[:, 0]], -1)  # [T, xy, edge]
    det = e[:, 0, 0] * e[:, 1, 1] - e[:, 0, 1] * e[:, 1, 0]
    det[np.abs(det) < 1e-9] = 1e-9
    inv = np.empty_like(e)  # [T, edge, xy]
    inv[:, 0, 0], inv[:, 0, 1] = e[:, 1, 1] / det, -e[:, 0, 1] / det
    inv[:, 1, 0], inv[:, 1, 1] = -e[:, 1, 0] / det, e[:, 0, 0] / det
    table = np.zeros((len(tris) + 1, 2, 3), np.float32)
    lin = uv_edges @ inv  # [T, uv, xy]
    table[1:, :, :2] = lin
    table[1:, :, 2] = uv0 - (lin @ pts[:, 0, :, None])[..., 0]
    table = table.reshape(-1, 6)

    ids = np.zeros(size, np.uint8)
    for k, tri in enumerate(np.round(pts * 16).astype(np.int32), start=1):
        cv2.fillConvexPoly(ids, tri, k, cv2.LINE_8, shift=4)
    if reach > 0:
        grown = cv2.dilate(ids, np.ones((2 * reach + 1, 2 * reach + 1), np.uint8))
        np.copyto(ids, grown, where=ids == 0)
    m = table[ids]
    xs = np.arange(size[1], dtype=np.float32)
    ys = np.arange(size[0], dtype=np.float32)[:, None]
    u = m[..., 0] * xs + m[..., 1] * ys + m[..., 2]
    v = m[..., 3] * xs + m[..., 4] * ys + m[..., 5]
    return u, v


@dataclass(frozen=True)
class _Layer:
    """A rendered mask inside its region of interest of the image."""

    roi: tuple[int, int, int, int]
    """x0, y0, x1, y1 in image pixels."""
    colour: np.ndarray
    """float32 [h, w, channels], 0..255."""
    alpha: np.ndarray
    """float32 [h, w], 0..1."""
    strap_colour: np.ndarray | None = None
    strap_alpha: np.ndarray | None = None


def _render(shape: tuple[int, ...], face: _Face, style: MaskStyle, rng: np.random.Generator
            ) -> _Layer | None:
    hw = shape[:2]
    channels = 1 if len(shape) == 2 else 3
    sigma = style.edge_blur * face.scale
    if style.kind in _SHAPES:
        return _shape_layer(shape, face, style, rng)
    if style.kind is MaskKind.OCCLUSION:
        polygon = _occlusion_polygon(face, style)
        x0, y0, x1, y1 = roi = _roi(polygon, hw, 0)
        if x1 <= x0 or y1 <= y0:
            return None
        alpha = _fill_alpha(polygon - (x0, y0), (y1 - y0, x1 - x0), sigma)
        h, w = alpha.shape
        shade = 1.0 + style.shading * np.linspace(-0.5, 0.5, h, dtype=np.float32)
        tex = (shade[:, None, None] * _base(style, channels)
               + (style.noise * 255.0) * rng.standard_normal((h, w, 1), dtype=np.float32))
        return _Layer(roi, np.clip(tex, 0, 255, out=tex), alpha)

    outline = _mask_outline(face, style)
    points = np.concatenate([outline.polygon, *outline.straps])
    x0, y0, x1, y1 = roi = _roi(points, hw, 3.0 * sigma + 2.0)
    if x1 <= x0 or y1 <= y0:
        return None
    size = (y1 - y0, x1 - x0)
    offset = np.array([x0, y0], np.float64)
    alpha = _fill_alpha(outline.polygon - offset, size, sigma)
    if style.crooked:
        alpha = _below_eyes(face, style, roi, alpha)
    u, v = _warp_uv(outline.grid - offset, size, int(math.ceil(3 * sigma)) + 2)

    mask_w = math.hypot(*(outline.grid[0, -1] - outline.grid[0, 0]))
    tw = int(np.clip(round(mask_w), 16, 160))
    th = int(np.clip(round(tw * 0.6), 10, 100))
    template = _template(style, th, tw, channels, rng)
    u *= tw - 1
    v *= th - 1
    tex = cv2.remap(template, u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    tex = tex.reshape(size[0], size[1], channels)
    if not outline.straps:
        return _Layer(roi, tex, alpha)
    strap = np.zeros(size, np.uint8)
    thickness = max(1, round(0.02 * face.scale))
    cv2.polylines(strap, list(np.round((np.array(outline.straps) - offset) * 16).astype(np.int32)),
                  False, 255, thickness, cv2.LINE_AA, shift=4)
    strap_colour = _gray(style.strap_bgr) if channels == 1 else style.strap_bgr
    strap_alpha = strap.astype(np.float32) * np.float32(0.8 / 255)
    if style.crooked:
        strap_alpha = _below_eyes(face, style, roi, strap_alpha)
    return _Layer(roi, tex, alpha, strap_colour, strap_alpha)


# ---------------------------------------------------------------------------------------------
# Flat shapes: hard-edged polygons, hands, scarves and collars (face frame, then the same
# matte, texture and compositing as the worn masks).

_SHAPES = frozenset({MaskKind.POLYGON, MaskKind.HAND, MaskKind.SCARF, MaskKind.COLLAR})


def _capsule(p0: np.ndarray, p1: np.ndarray, radius: float, n: int = 6) -> np.ndarray:
    """A finger: the segment p0→p1 with round ends of `radius`, as a polygon."""
    d = p1 - p0
    angle = math.atan2(d[1], d[0])
    half = np.linspace(-math.pi / 2, math.pi / 2, n)
    end = p1 + radius * np.stack([np.cos(angle + half), np.sin(angle + half)], 1)
    start = p0 + radius * np.stack([np.cos(angle + math.pi + half), np.sin(angle + math.pi + half)], 1)
    return np.concatenate([end, start])


def _ellipse(centre: np.ndarray, ra: float, rb: float, angle: float, n: int = 20) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    c, s = math.cos(angle), math.sin(angle)
    x, y = ra * np.cos(t), rb * np.sin(t)
    return centre + np.stack([c * x - s * y, s * x + c * y], 1)


def _shape_polygons(face: _Face, style: MaskStyle, rng: np.random.Generator) -> list[np.ndarray]:
    """The shape's parts in face coordinates (a polygon each; a hand is a palm, a thumb and fingers)."""
    ab, s = face.ab, face.scale
    w = ab[_CHEEK_RIGHT, 0] - ab[_CHEEK_LEFT, 0]
    pb = face.protect_b(style)
    na = ab[_NOSE_CHAIN[0], 0]
    mouth, chin = ab[_UPPER_LIP], ab[_CHIN]
    if style.kind is MaskKind.POLYGON:
        top_b = pb + style.height * max(ab[_NOSE_CHAIN[3], 1] - pb, 0.0)
        tip = ab[_NOSE_CHAIN[-1]]

        def out(i: int) -> np.ndarray:
            d = ab[i] - tip
            return ab[i] + d * ((0.02 + style.chin_extend) * s / max(math.hypot(*d), 1e-6))

        side_l = (ab[_CHEEK_LEFT, 0] - 0.02 * w, max(ab[_CHEEK_LEFT, 1] + 0.04 * s, pb))
        side_r = (ab[_CHEEK_RIGHT, 0] + 0.02 * w, max(ab[_CHEEK_RIGHT, 1] + 0.04 * s, pb))
        eye_drop = rng.uniform(0.0, 0.06) * s
        points = [side_l, (ab[_LOWER_LID_LEFT, 0], top_b + eye_drop), (na, top_b),
                  (ab[_LOWER_LID_RIGHT, 0], top_b + eye_drop), side_r, out(_JAW_RIGHT)]
        if rng.random() < 0.4:
            points += [out(_CHIN) + (0.12 * w, 0), out(_CHIN) - (0.12 * w, 0)]  # a flat bottom
        else:
            points.append(out(_CHIN))
        points.append(out(_JAW_LEFT))
        points = np.array(points, np.float64)
        if rng.random() < 0.4:  # a tent: straight from the sides to the bridge
            points = np.delete(points, [1, 3], axis=0)
        points += rng.normal(0, 0.015 * s, points.shape)
        points[:, 1] = np.maximum(points[:, 1], pb)
        return [points]
    if style.kind is MaskKind.HAND:
        side = 1.0 if style.pattern_angle >= 0 else -1.0
        fw = 0.13 * w  # finger width
        if style.pattern_scale < 1.5:  # from the side, fingers across the mouth
            t = 0.35 * style.tilt
            d = np.array([-side * math.cos(t), -math.sin(t)])
            n = np.array([-d[1], d[0]])
            palm_c = np.array([mouth[0] + side * 0.62 * w, mouth[1] + 0.12 * s])
            base = palm_c + d * 0.15 * w
            lengths = (0.55, 0.65, 0.62, 0.5)
            offsets = (-0.2 * s, -0.05 * s, 0.1 * s, 0.24 * s)
            parts = [_ellipse(palm_c, 0.28 * w, 0.34 * s, t)]
            for length, off in zip(lengths, offsets):
                p0 = base + n * off * side
                parts.append(_capsule(p0, p0 + d * length * w, fw / 2))
            thumb0 = palm_c + np.array([-side * 0.05 * w, -0.24 * s])
            parts.append(_capsule(thumb0, thumb0 + np.array([-side * 0.16 * w, -0.18 * s]), fw / 2))
        else:  # from below, chin in the palm, fingers up over the mouth
            t = 0.5 * style.tilt
            d = np.array([math.sin(t), -math.cos(t)])
            n = np.array([-d[1], d[0]])
            palm_c = np.array([chin[0], chin[1] + 0.14 * s])
            parts = [_ellipse(palm_c, 0.36 * w, 0.26 * s, t)]
            lengths = (0.36, 0.44, 0.46, 0.4)
            for k, length in enumerate(lengths):
                p0 = palm_c + n * (k - 1.5) * 1.05 * fw + d * 0.1 * s
                parts.append(_capsule(p0, p0 + d * (length + 0.1 * style.height) * s, fw / 2))
        return parts
    if style.kind is MaskKind.SCARF:
        top_b = max(pb, ab[_NOSE_CHAIN[2], 1] + style.height * (ab[_NOSE_BASE, 1] - ab[_NOSE_CHAIN[2], 1]))
        a = np.linspace(ab[_CHEEK_LEFT, 0] - 0.45 * w, ab[_CHEEK_RIGHT, 0] + 0.45 * w, 15)
        phase = rng.uniform(0, 2 * math.pi)
        b = top_b + 0.12 * s * ((a - na) / (0.5 * w)) ** 2 + 0.02 * s * np.sin(9 * a / w + phase)
        top = np.stack([a, b], 1)
        bottom = np.array([[a[-1], chin[1] + 0.7 * s], [a[0], chin[1] + 0.7 * s]])
        return [np.concatenate([top, bottom])]
    # COLLAR: from just under the nose (height 0) to the mouth (1)
    hi = ab[_NOSE_BASE, 1] + 0.3 * (ab[_UPPER_LIP, 1] - ab[_NOSE_BASE, 1])
    lo = ab[_UPPER_LIP, 1] + 0.02 * s
    top_b = hi + style.height * (lo - hi)
    a = np.linspace(ab[_CHEEK_LEFT, 0] - 0.3 * w, ab[_CHEEK_RIGHT, 0] + 0.3 * w, 11)
    b = top_b - 0.04 * s * ((a - na) / (0.5 * w)) ** 2 + 0.03 * s * (np.abs(a - na) < 0.12 * w)
    top = np.stack([a, np.maximum(b, pb)], 1)
    bottom = np.array([[a[-1], chin[1] + 0.7 * s], [a[0], chin[1] + 0.7 * s]])
    return [np.concatenate([top, bottom])]


def _shape_layer(shape: tuple[int, ...], face: _Face, style: MaskStyle, rng: np.random.Generator
                 ) -> _Layer | None:
    hw = shape[:2]
    channels = 1 if len(shape) == 2 else 3
    sigma = style.edge_blur * face.scale
    parts_ab = _shape_polygons(face, style, rng)
    sizes = [len(p) for p in parts_ab]
    flat = _crooked(face, style, np.concatenate(parts_ab))
    parts = np.split(face.to_image(flat), np.cumsum(sizes)[:-1])
    x0, y0, x1, y1 = roi = _roi(np.concatenate(parts), hw, 3.0 * sigma + 2.0)
    if x1 <= x0 or y1 <= y0:
        return None
    size = (y1 - y0, x1 - x0)
    offset = np.array([x0, y0], np.float64)
    alpha = _fill_alpha([p - offset for p in parts], size, sigma)
    alpha = _below_eyes(face, style, roi, alpha)
    # Texture: the canonical frame spans the shapes' box in face axes, so prints follow the face.
    lo, hi = flat.min(axis=0), flat.max(axis=0)
    xs = np.arange(x0, x1, dtype=np.float64) - face.origin[0]
    ys = np.arange(y0, y1, dtype=np.float64) - face.origin[1]
    a = xs[None, :] * face.axes[0, 0] + ys[:, None] * face.axes[0, 1]
    b = xs[None, :] * face.axes[1, 0] + ys[:, None] * face.axes[1, 1]
    extent = np.maximum(hi - lo, 1.0)
    tw = int(np.clip(round(extent[0]), 16, 200))
    th = int(np.clip(round(extent[1]), 10, 200))
    template = _template(style, th, tw, channels, rng)
    u = ((a - lo[0]) / extent[0] * (tw - 1)).astype(np.float32)
    v = ((b - lo[1]) / extent[1] * (th - 1)).astype(np.float32)
    tex = cv2.remap(template, u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    tex = tex.reshape(size[0], size[1], channels)
    if len(parts) > 1:  # a hand: each finger a little differently lit, dark creases between them
        ids = np.zeros(size, np.uint8)
        for k, part in enumerate(parts, start=1):
            cv2.fillPoly(ids, [np.round((part - offset) * 16).astype(np.int32)], k, cv2.LINE_8, shift=4)
        gain = np.concatenate([[1.0], rng.uniform(0.88, 1.06, len(parts))]).astype(np.float32)
        crease = cv2.morphologyEx(ids, cv2.MORPH_GRADIENT, np.ones((2, 2), np.uint8)) > 0
        crease &= ids > 0
        tex = tex * (gain[ids] * np.where(crease, 0.78, 1.0).astype(np.float32))[..., None]
    return _Layer(roi, np.clip(tex, 0, 255), alpha)


def apply_mask(image: np.ndarray, landmarks: np.ndarray | None, style: MaskStyle,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """A copy of `image` (uint8 HxW gray or HxWx3 BGR) with a mask drawn over the lower face.

    `landmarks` are the 468 face-mesh points in this image's pixels ([468,3] or [468,2]); None, or
    points with NaN, mean "no reliable detection" and use the canonical FER2013 crop geometry.
    `rng` draws the fabric noise; None uses a fixed seed so the call is repeatable.
    """
    _check_image(image)
    face = _usable_face(landmarks, image.shape[:2])
    layer = _render(image.shape, face, style, rng if rng is not None else np.random.default_rng(0))
    out = image.copy()
    if layer is None:
        return out
    x0, y0, x1, y1 = layer.roi
    view = out[y0:y1, x0:x1]
    roi = view.astype(np.float32).reshape(y1 - y0, x1 - x0, -1)
    if layer.strap_alpha is not None:
        roi += layer.strap_alpha[..., None] * (layer.strap_colour - roi)
    roi += layer.alpha[..., None] * (layer.colour - roi)
    roi += 0.5
    view[...] = roi.reshape(view.shape)
    return out


def render_mask(shape: tuple[int, ...], landmarks: np.ndarray | None, style: MaskStyle,
                rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The mask alone for an image of `shape`: (colour float32 [H,W] or [H,W,3], matte float32
    [H,W] in 0..1, ear loops excluded). For checks and visualisation; `apply_mask` composites it."""
    probe = np.zeros(shape, np.uint8)
    _check_image(probe)
    face = _usable_face(landmarks, probe.shape[:2])
    layer = _render(probe.shape, face, style, rng if rng is not None else np.random.default_rng(0))
    colour = np.zeros(probe.shape, np.float32)
    matte = np.zeros(probe.shape[:2], np.float32)
    if layer is not None:
        x0, y0, x1, y1 = layer.roi
        colour[y0:y1, x0:x1] = layer.colour.reshape(colour[y0:y1, x0:x1].shape)
        matte[y0:y1, x0:x1] = layer.alpha
    return colour, matte


def mask_batch(images: np.ndarray, landmarks: np.ndarray | None, seed: int,
               fraction: float = 0.5, families: Sequence[str] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Mask `fraction` of a batch (exactly round(fraction·N) faces, chosen by `seed`).

    `families`: None draws every style from `random_style` (the shipped generator); otherwise each
    face draws one of these FAMILIES (uniformly) and a style from it.

    `images` uint8 [N,H,W] (or [N,H,W,3]); `landmarks` [N,468,3] pixels, NaN rows where the
    detection failed, or None for all-canonical geometry. Image i's style and noise depend only
    on (seed, i), so the same seed always gives the same batch. Returns (images, was_masked).
    """
    images = np.asarray(images)
    if images.ndim not in (3, 4) or images.dtype != np.uint8:
        raise ImageError(f"images must be uint8 [N,H,W] or [N,H,W,3], got {images.dtype} "
                         f"{images.shape}")
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"fraction={fraction!r}: must be within 0..1")
    n = len(images)
    if landmarks is not None and (len(landmarks) != n):
        raise ImageError(f"landmarks hold {len(landmarks)} faces for {n} images")
    if families is not None:
        families = list(families)
        for name in families:
            family_style(name, np.random.default_rng(0))  # unknown names fail before any work
        if not families:
            raise ConfigError("families: give at least one mask family, or None for random_style")
    chosen = np.random.default_rng(seed).permutation(n)[: int(round(fraction * n))]
    was_masked = np.zeros(n, bool)
    was_masked[chosen] = True
    out = images.copy()
    for i in np.flatnonzero(was_masked):
        rng = np.random.default_rng([seed, int(i)])
        if families is None:
            style = random_style(rng)
        else:
            style = family_style(families[int(rng.integers(len(families)))], rng)
        out[i] = apply_mask(images[i], None if landmarks is None else landmarks[i], style, rng)
    return out, was_masked


# ---------------------------------------------------------------------------------------------
# Command line: preview contact sheet, benchmark, and the generator of the canonical table.

_FER_DEFAULT = Path("/work/shared/data/fer2013/fer2013_publictest.npz")


def facemesh_landmarks(image: np.ndarray) -> np.ndarray | None:
    """MediaPipe FaceMesh (static image mode) landmarks in pixels, float32 [468,3]; None if no
    face. A development helper for previews and tests, not the on-device detector."""
    import mediapipe as mp

    bgr = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1) as mesh:
        found = mesh.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    if not found.multi_face_landmarks:
        return None
    h, w = image.shape[:2]
    pts = found.multi_face_landmarks[0].landmark
    return np.array([[p.x * w, p.y * h, p.z * w] for p in pts[:NUM_LANDMARKS]], np.float32)


def grace_hopper() -> tuple[np.ndarray, np.ndarray]:
    """The public-domain demo portrait (BGR, edge/data/grace_hopper.jpg) and its FaceMesh landmarks."""
    from edge.images import demo_portrait

    image = demo_portrait()
    landmarks = facemesh_landmarks(image)
    if landmarks is None:
        raise EdgeError("FaceMesh found no face in grace_hopper.jpg")
    return image, landmarks


def fer_crop(image: np.ndarray, landmarks: np.ndarray, size: int = 48
             ) -> tuple[np.ndarray, np.ndarray]:
    """A FER2013-like gray crop (eyes at 0.385·H, chin at the bottom) and its landmarks."""
    eyes_y = float(landmarks[[33, 263], 1].mean())
    chin_y = float(landmarks[_CHIN, 1])
    side = (chin_y - eyes_y) / (0.99 - 0.385)
    cx = float(landmarks[[_CHEEK_LEFT, _CHEEK_RIGHT], 0].mean())
    x0, y0 = cx - side / 2, eyes_y - 0.385 * side
    k = size / side
    affine = np.array([[k, 0, -x0 * k], [0, k, -y0 * k]], np.float32)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    crop = cv2.warpAffine(gray, affine, (size, size), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REPLICATE)
    lm = landmarks.copy()
    lm[:, :2] = (lm[:, :2] - [x0, y0]) * k
    lm[:, 2] *= k
    return crop, lm


def _used_indices() -> list[int]:
    oval, eyes, _ = _topology()
    extra = [33, 133, 362, 263, 70, 300, 13, 14, 61, 291]
    return sorted({int(i) for i in (*oval, *eyes, *_SPECIAL, *extra)})


def _make_canonical_table() -> dict[int, tuple[float, float]]:
    _, lm = grace_hopper()
    xy = lm[:, :2].astype(np.float64)
    d = xy[263] - xy[33]
    angle = math.atan2(d[1], d[0])
    c, s = math.cos(-angle), math.sin(-angle)
    xy = xy @ np.array([[c, s], [-s, c]])
    eyes = xy[[33, 263]].mean(0)
    sx = 0.76 / (xy[454, 0] - xy[234, 0])
    sy = (0.99 - 0.385) / (xy[_CHIN, 1] - eyes[1])
    norm = np.stack([0.5 + (xy[:, 0] - eyes[0]) * sx, 0.385 + (xy[:, 1] - eyes[1]) * sy], -1)
    return {i: (round(float(norm[i, 0]), 4), round(float(norm[i, 1]), 4)) for i in _used_indices()}


def _tile(image: np.ndarray, height: int, label: str) -> np.ndarray:
    bgr = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image
    interp = cv2.INTER_NEAREST if bgr.shape[0] < height else cv2.INTER_AREA
    bgr = cv2.resize(bgr, (round(bgr.shape[1] * height / bgr.shape[0]), height),
                     interpolation=interp)
    bgr = cv2.copyMakeBorder(bgr, 0, 16, 2, 2, cv2.BORDER_CONSTANT, value=(255, 255, 255))
    cv2.putText(bgr, label, (3, height + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1,
                cv2.LINE_AA)
    return bgr


def _row(tiles: list[np.ndarray], width: int) -> np.ndarray:
    row = np.concatenate(tiles, axis=1)
    return cv2.copyMakeBorder(row, 2, 2, 0, max(0, width - row.shape[1]), cv2.BORDER_CONSTANT,
                              value=(255, 255, 255))


def _write_sheet(path: Path, rows: list[list[np.ndarray]], what: str) -> None:
    """Rows of tiles stacked into one contact sheet and written to path (any suffix OpenCV writes)."""
    width = max(sum(t.shape[1] for t in r) for r in rows)
    sheet = np.concatenate([_row(r, width) for r in rows], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), sheet):
        raise ImageError(f"could not write the {what} to {path}: check the directory and suffix")
    _LOGGER.info("%s written to %s (%dx%d)", what, path, sheet.shape[1], sheet.shape[0])


def preview(path: Path, seed: int = 0, fer: Path | None = _FER_DEFAULT, count: int = 8) -> None:
    """Contact sheet: grace_hopper full size and as a 48×48 crop, then FER2013 faces."""
    rng = np.random.default_rng(seed)
    image, lm = grace_hopper()
    fixed = [random_style(np.random.default_rng(k)) for k in range(200)]
    by_kind = {}
    for st in fixed:
        by_kind.setdefault(st.kind, st)
    rows: list[list[np.ndarray]] = []
    row = [_tile(image, 240, "original")]
    for kind, st in by_kind.items():
        row.append(_tile(apply_mask(image, lm, st, rng), 240, kind.value))
    rows.append(row)
    crop, crop_lm = fer_crop(image, lm)
    styles = [random_style(rng) for _ in range(count)]
    rows.append([_tile(crop, 144, "48x48")] + [
        _tile(apply_mask(crop, crop_lm, st, rng), 144, st.kind.value) for st in styles])
    rows.append([_tile(crop, 144, "canonical")] + [
        _tile(apply_mask(crop, None, st, rng), 144, st.kind.value) for st in styles])
    if fer is not None and fer.exists():
        faces = np.load(fer)["x"][rng.choice(3589, size=2 * count, replace=False)]
        for part in (faces[:count], faces[count:]):
            tiles = []
            for face in part:
                big = cv2.resize(face, (192, 192), interpolation=cv2.INTER_CUBIC)
                found = facemesh_landmarks(big)
                if found is not None:
                    found[:, :2] *= face.shape[0] / 192
                st = random_style(rng)
                tiles.append(_tile(face, 144, "raw"))
                source = "mesh" if found is not None else "canon"
                tiles.append(_tile(apply_mask(face, found, st, rng), 144,
                                   f"{st.kind.value[:4]} {source}"))
            rows.append(tiles)
    elif fer is not None:
        _LOGGER.warning("FER2013 file %s not found; preview without FER faces", fer)
    _write_sheet(path, rows, "preview")


def preview_families(path: Path, seed: int = 0, fer: Path | None = _FER_DEFAULT,
                     count: int = 7) -> None:
    """Contact sheet, one row per mask family: grace_hopper three times, then FER2013 faces (their
    own FaceMesh, or the canonical geometry when none is found) at 48×48, all shown 168 px high."""
    image, lm = grace_hopper()
    faces: list[tuple[np.ndarray, np.ndarray | None]] = [fer_crop(image, lm)]
    if fer is not None and fer.exists():
        pick = np.random.default_rng(seed).choice(3589, size=count - 1, replace=False)
        for face in np.load(fer)["x"][pick]:
            big = cv2.resize(face, (192, 192), interpolation=cv2.INTER_CUBIC)
            found = facemesh_landmarks(big)
            if found is not None:
                found[:, :2] *= face.shape[0] / 192
            faces.append((face, found))
    rows = []
    for k, (name, family) in enumerate(FAMILIES.items()):
        row = []
        for j in range(3):
            rng = np.random.default_rng([seed, k, j])
            st = family.sample(rng)
            row.append(_tile(apply_mask(image, lm, st, rng), 168, f"{name} {st.kind.value}"))
        for j, (face, found) in enumerate(faces):
            rng = np.random.default_rng([seed, k, 10 + j])
            st = family.sample(rng)
            row.append(_tile(apply_mask(face, found, st, rng), 168, st.kind.value[:7]))
        rows.append(row)
    _write_sheet(path, rows, "family preview")


def bench(count: int, size: tuple[int, ...] = (48, 48), seed: int = 0) -> dict[str, object]:
    """Time `apply_mask` with random styles on an image of `size` whose face fills the frame
    (canonical geometry; for 480×640 that is the worst case), after a warm-up."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size, dtype=np.uint8)
    lm = canonical_landmarks(*size[:2])
    styles = [random_style(rng) for _ in range(count)]
    for st in styles[:50]:
        apply_mask(image, lm, st, rng)
    wall, cpu = np.empty(count), np.empty(count)
    for k, st in enumerate(styles):
        t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        apply_mask(image, lm, st, rng)
        wall[k], cpu[k] = time.perf_counter_ns() - t0, time.thread_time_ns() - c0
    p50, p95, p99 = np.percentile(wall, [50, 95, 99]) / 1e3
    # Thread CPU time too: on a shared machine the wall-clock tail is mostly waiting for a core.
    c50, c95 = np.percentile(cpu, [50, 95]) / 1e3
    return {"shape": list(size), "count": count, "p50_us": round(p50, 1),
            "p95_us": round(p95, 1), "p99_us": round(p99, 1), "cpu_p50_us": round(c50, 1),
            "cpu_p95_us": round(c95, 1), "cpus": os.cpu_count(),
            "load_1min": round(os.getloadavg()[0], 2),
            "machine": f"{platform.machine()} {platform.processor() or platform.platform()}",
            "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.masks",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--preview", type=Path, metavar="OUT.png", help="write a contact sheet")
    parser.add_argument("--fer", type=Path, default=_FER_DEFAULT,
                        help="FER2013 .npz with x uint8 [N,48,48] for the preview "
                             "(default %(default)s; skipped if missing)")
    parser.add_argument("--families", action="store_true",
                        help="with --preview: one row per mask family (FAMILIES) instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bench", type=int, metavar="N", help="time N masks on 48x48 and 480x640")
    parser.add_argument("--json", action="store_true", help="benchmark results as JSON")
    parser.add_argument("--print-canonical", action="store_true",
                        help="print the canonical FER2013 landmark table (development)")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not (args.preview or args.bench or args.print_canonical):
        parser.error("nothing to do: give --preview, --bench or --print-canonical")
    try:
        if args.print_canonical:
            print(_make_canonical_table())
        if args.preview:
            (preview_families if args.families else preview)(args.preview, args.seed, args.fer)
        if args.bench:
            results = [bench(args.bench, (48, 48), args.seed),
                       bench(max(50, args.bench // 10), (480, 640, 3), args.seed)]
            if args.json:
                print(json.dumps(results))
            else:
                for r in results:
                    print(f"{r['shape']}: p50 {r['p50_us']} us, p95 {r['p95_us']} us, "
                          f"p99 {r['p99_us']} us (CPU p50 {r['cpu_p50_us']} us, p95 "
                          f"{r['cpu_p95_us']} us) over {r['count']} masks on {r['machine']}, "
                          f"{r['cpus']} CPUs, load {r['load_1min']}")
    except EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
