"""`export families` (#17 item 1): every mask family through the device pipeline, and the real masked photos.

Fast: a handful of faces (crops of the demo portrait), two families, the shipped int8 model, no torch."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from export import families
from export.masks import FAMILIES

from .conftest import MODEL_SIDECAR


def test_summary_takes_the_worst_and_the_mean_and_leaves_out_what_training_drew():
    rows = {"surgical": {"accuracy": 0.6}, "polygon": {"accuracy": 0.4}, "occluder": {"accuracy": 0.5}}
    overlap = {"surgical": "yes", "polygon": "little", "occluder": "no"}
    s = families.summarise(rows, overlap)
    assert s["all"] == {"families": ["surgical", "polygon", "occluder"], "worst_family": "polygon", "worst": 0.4, "mean": 0.5}
    assert s["not_in_training"]["families"] == ["polygon", "occluder"] and s["not_in_training"]["mean"] == 0.45
    assert families.summarise({}, {}) == {}


def test_every_family_says_how_much_the_shipped_generator_draws_it():
    assert {f.shipped_overlap.split(":")[0] for f in FAMILIES.values()} <= {"yes", "partly", "little", "no"}
    assert any(f.shipped_overlap.startswith("no") for f in FAMILIES.values())


def test_the_default_photos_are_the_masked_ones():
    photos = families.default_photos()
    if not families.SHARED_FACES.is_dir():
        pytest.skip("../shared/data/faces not here")
    assert photos and all("mask" in p.name for p in photos)


@pytest.mark.skipif(not MODEL_SIDECAR.is_file(), reason="models/expression.json not built yet")
def test_export_families_measures_each_family_and_reports_the_photos(tmp_path: Path, grace_hopper, capsys):
    gray = cv2.cvtColor(grace_hopper, cv2.COLOR_BGR2GRAY)
    crops = [cv2.resize(gray[120 + d: 340 + d, 160 + d: 360 + d], (48, 48), interpolation=cv2.INTER_AREA) for d in range(0, 20, 4)]
    x = np.stack(crops + [c[:, ::-1] for c in crops]).astype(np.uint8)
    y = np.array([6, 3] * 5)
    data = tmp_path / "faces.npz"
    np.savez(data, x=x, y=y)
    photo = tmp_path / "portrait.jpg"
    cv2.imwrite(str(photo), grace_hopper)
    parser = argparse.ArgumentParser()
    families.add_arguments(parser)
    out = tmp_path / "families.json"
    args = parser.parse_args(["--data", str(data), "--cache", str(tmp_path / "cache"), "--family", "polygon", "--family", "occluder",
                              "--photos", str(photo), "--results", str(out)])
    assert families.main(args) == 0
    r = json.loads(out.read_text())
    assert r["complete"] and r["n"] == 10 and list(r["families"]) == ["polygon", "occluder"]
    assert set(r["references"]) == {"unmasked", "shipped generator"}
    for row in [*r["families"].values(), *r["references"].values()]:
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["answered"] <= 1.0 and 0.0 <= row["detected"] <= 1.0
        assert {"macro_f1", "accuracy_answered"} <= set(row)
    assert r["families"]["occluder"]["in_shipped_training"] == "no"
    assert r["summary"]["all"]["worst"] == min(row["accuracy"] for row in r["families"].values())
    assert r["photos"][0]["file"] == "portrait.jpg" and r["photos"][0]["faces_found"] == 1 and r["photos"][0]["said"]
    assert "polygon" in capsys.readouterr().out


def test_export_families_refuses_missing_photos(tmp_path: Path):
    parser = argparse.ArgumentParser()
    families.add_arguments(parser)
    args = parser.parse_args(["--photos", str(tmp_path / "nope.jpg"), "--results", str(tmp_path / "r.json")])
    with pytest.raises(families.EdgeError, match="not found"):
        families.main(args)
