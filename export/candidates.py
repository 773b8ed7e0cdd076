"""The expression-model candidates `export build` compares: the inputs each one reads and its title.

Its own module because the build (sidecars) and the model card (export/card.py) both name the candidates,
and the build writes the card: with the titles in build.py the two modules imported each other.
"""

from __future__ import annotations

INPUTS = {"landmarks": ["landmarks"], "face": ["face"], "fusion": ["face", "landmarks"]}
TITLES = {
    "landmarks": "(a) upper-face landmarks + per-landmark HOG → CNN with Mish (the published method)",
    "face": "(b) aligned-face image CNN (small plain conv net)",
    "fusion": "(c) fusion of (a) and (b)",
}
