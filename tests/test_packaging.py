"""Packaging: the demo portrait shipped with its provenance, the glasses' code without matplotlib,
pyproject's entry points, and the `pip check` filter `make setup` runs."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import tomllib

import pytest

from edge.images import DEMO_PORTRAIT, demo_portrait
from edge.errors import CameraError, ImageError

from .conftest import ROOT


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


@pytest.mark.parametrize("script", ["edge", "edge-export"])
def test_console_scripts_point_at_the_command_lines(script, capsys):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    module, _, name = project["scripts"][script].partition(":")
    main = getattr(importlib.import_module(module), name)
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0 and "COMMAND" in capsys.readouterr().out


def _pip_check_tool():
    spec = importlib.util.spec_from_file_location("pip_check", ROOT / "tools" / "pip_check.py")
    assert spec and spec.loader
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_pip_check_lets_through_only_the_listed_omissions():
    report = """\
mediapipe 0.10.18 requires jax, which is not installed.
mediapipe 0.10.18 requires opencv-contrib-python, which is not installed.
ai-edge-litert 1.4.0 requires Backports_StrEnum, which is not installed.
mediapipe 0.10.18 requires matplotlib, which is not installed.
piper-tts 1.8.0 requires tqdm, which is not installed.
torch 2.13.0+cpu has requirement setuptools>=77.0.3, but you have setuptools 65.5.0.
"""
    assert _pip_check_tool().unexpected(report) == [
        "mediapipe 0.10.18 requires matplotlib, which is not installed.",
        "piper-tts 1.8.0 requires tqdm, which is not installed.",  # tqdm is excused for ai-edge-litert only
        "torch 2.13.0+cpu has requirement setuptools>=77.0.3, but you have setuptools 65.5.0.",
    ]
    assert _pip_check_tool().unexpected("No broken requirements found.\n") == []
