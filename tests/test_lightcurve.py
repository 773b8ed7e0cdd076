"""`python -m export lightcurve`: the readability rule's fit, and that it is the rule the device applies."""

from __future__ import annotations

import numpy as np

from edge.config import LightConfig
from edge.results import reading
from export.lightcurve import calibrate, spoken, subsample


def _faces(seed: int = 0) -> dict[str, np.ndarray]:
    """Synthetic readings: the darker the level, the noisier the face and the less often it is right."""
    rng = np.random.default_rng(seed)
    levels, rows = (200.0, 20.0, 5.0, 2.0), []
    for k, level in enumerate(levels):
        noise = rng.gamma(4.0, 0.8 + 3.0 * k, 1000)
        confidence = rng.uniform(0.3, 1.0, 1000)
        right = rng.random(1000) < np.clip(confidence * (1.0 - noise / 30.0), 0.0, 1.0)
        rows.append((np.full(1000, level), right, confidence, noise))
    return {key: np.concatenate([r[i] for r in rows]) for i, key in enumerate(("level", "right", "confidence", "noise"))}


def test_the_fitted_rule_keeps_spoken_labels_right_at_every_level():
    faces = _faces()
    base = 0.55
    before = spoken(faces["confidence"], faces["noise"], base, 1000.0, 0.0, 1000.0)
    dark = faces["level"] == 2.0
    assert faces["right"][before & dark].mean() < 0.6  # the model's own threshold alone speaks wrong labels in the dark
    rule = calibrate(faces, base, target=0.75)
    said = spoken(faces["confidence"], faces["noise"], base, rule["readable_noise"], rule["unsure_per_noise"], rule["unreadable_noise"])
    for level in np.unique(faces["level"]):
        at = said & (faces["level"] == level)
        assert at.sum() < 10 or faces["right"][at].mean() >= 0.75, level
    day = faces["level"] == 200.0
    assert said[day].mean() > 0.5 * before[day].mean()  # and the day still gets answers


def test_the_fit_scores_the_rule_the_device_applies():
    rng = np.random.default_rng(3)
    light = LightConfig(readable_noise=4.0, unsure_per_noise=0.05, unreadable_noise=11.0)
    confidence, noise = rng.uniform(0.2, 1.0, 500), rng.uniform(0.0, 15.0, 500)
    fitted = spoken(confidence, noise, 0.55, light.readable_noise, light.unsure_per_noise, light.unreadable_noise)
    device = np.array([not reading(float(c), float(n), 0.55, light)[0] for c, n in zip(confidence, noise)])
    assert np.array_equal(fitted, device)


def test_subsample_is_seeded_and_sorted():
    a, b = subsample(3589, 800, 17), subsample(3589, 800, 17)
    assert np.array_equal(a, b) and len(set(a)) == 800 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, subsample(3589, 800, 18))
