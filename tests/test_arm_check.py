"""The wheel rules of `make arm-check` (tests/arm/check.py), without network or emulation."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.arm import check


@pytest.fixture()
def bookworm(tmp_path: Path) -> Path:
    """A rootfs stand-in: debootstrap's record of the packages it fetched (glibc 2.36, as on Pi OS Bookworm)."""
    (tmp_path / "debootstrap").mkdir()
    (tmp_path / "debootstrap" / "debpaths").write_text(
        "libbz2-1.0 /var/cache/apt/archives/libbz2-1.0_1.0.8-5+b1_arm64.deb\n"
        "libc6 /var/cache/apt/archives/libc6_2.36-9+deb12u14_arm64.deb\n"
    )
    return tmp_path


def test_the_lock_pins_every_entry_exactly() -> None:
    entries = check.lock_entries()
    names = {e.name for e in entries}
    assert {"numpy", "onnxruntime", "ai-edge-litert", "mediapipe", "pytest"} <= names
    assert all(len(e.specifier) == 1 and next(iter(e.specifier)).operator == "==" for e in entries)


def test_pi_tags_follow_the_rootfs_glibc(bookworm: Path) -> None:
    tags = {str(t) for t in check.pi_tags(bookworm)}
    assert "cp311-cp311-manylinux_2_34_aarch64" in tags
    assert "cp37-abi3-manylinux2014_aarch64" in tags
    assert "py3-none-any" in tags
    assert "cp311-cp311-manylinux_2_38_aarch64" not in tags
    assert not any("x86_64" in t or "cp312" in t for t in tags)


def test_only_a_wheel_the_pi_accepts_counts(bookworm: Path, tmp_path: Path) -> None:
    tags = set(check.pi_tags(bookworm))
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    req = Requirement("ai-edge-litert==1.4.0")
    for name in (
        "ai_edge_litert-1.4.0-cp311-cp311-manylinux_2_17_x86_64.whl",
        "ai_edge_litert-1.4.0-cp310-cp310-manylinux_2_17_aarch64.whl",
        "ai_edge_litert-1.3.0-cp311-cp311-manylinux_2_17_aarch64.whl",
        "ai_edge_litert-1.4.0-cp311-cp311-manylinux_2_39_aarch64.whl",
    ):
        (wheels / name).touch()
    assert check.wheel_for(req, wheels, tags) is None
    good = wheels / "ai_edge_litert-1.4.0-cp311-cp311-manylinux_2_17_aarch64.whl"
    good.touch()
    assert check.wheel_for(req, wheels, tags) == good


def test_a_rootfs_without_libc6_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "debootstrap").mkdir()
    (tmp_path / "debootstrap" / "debpaths").write_text("zlib1g /var/cache/apt/archives/zlib1g_1.2.13_arm64.deb\n")
    with pytest.raises(check.CheckFailed, match="no libc6"):
        check.pi_tags(tmp_path)


def test_entries_marked_for_another_machine_are_left_out_as_pip_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = tmp_path / "requirements.txt"
    lock.write_text('numpy==1.26.4\natheris==3.0.0; platform_machine == "x86_64"  # x86 only\nsix==1.17.0; python_version >= "3.8"\n')
    monkeypatch.setattr(check, "LOCKS", (lock,))
    assert [check.pin(r) for r in check.lock_entries()] == ["numpy==1.26.4", "six==1.17.0"]


def test_an_unpinned_entry_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = tmp_path / "requirements.txt"
    lock.write_text("numpy>=1.26\n")
    monkeypatch.setattr(check, "LOCKS", (lock,))
    with pytest.raises(check.CheckFailed, match="not pinned"):
        check.lock_entries()
