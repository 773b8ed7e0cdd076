"""Packaging: the demo portrait shipped with its provenance, the glasses' code without matplotlib."""

from __future__ import annotations

import hashlib
import re

import pytest

from edge.images import DEMO_PORTRAIT, demo_portrait
from edge.errors import CameraError, ImageError


def test_demo_portrait_is_the_file_its_provenance_names():
    note = (DEMO_PORTRAIT.parent / "README.md").read_text()
    sha = re.search(r"sha256:\*\* `([0-9a-f]{64})`", note)
    assert sha and hashlib.sha256(DEMO_PORTRAIT.read_bytes()).hexdigest() == sha.group(1)
    assert "public domain" in note.lower() and "commons.wikimedia.org/wiki/File:Grace_Hopper.jpg" in note
    assert demo_portrait().shape == (600, 512, 3)


def test_demo_sources_and_loadtest_need_no_matplotlib(no_matplotlib):
    from edge.hw.camera import DemoReader, SceneReader
    from edge.offload.loadtest import payload

    assert DemoReader(640, 480).read().shape == (480, 640, 3)
    assert SceneReader(320, 240).read().shape == (240, 320, 3)
    assert payload(None, full=True) == DEMO_PORTRAIT.read_bytes()


def test_a_missing_demo_portrait_is_one_line_naming_the_fix(monkeypatch, tmp_path):
    import edge.images
    from edge.hw.camera import DemoReader

    monkeypatch.setattr(edge.images, "DEMO_PORTRAIT", tmp_path / "grace_hopper.jpg")
    with pytest.raises(ImageError, match=r"no such file: it ships with the code; restore it with `git checkout -- edge/data`"):
        demo_portrait()
    with pytest.raises(CameraError, match="^demo source: demo portrait .*git checkout"):
        DemoReader(64, 48)
