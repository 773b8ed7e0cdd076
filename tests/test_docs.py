"""The documents (#19): a short README a newcomer can start from, links that lead somewhere, no work log.

Reference material lives in docs/, what was tried and measured in the dated journal docs/experiments/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKDOWN = [README, *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "models").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
DATE = re.compile(r"\b20\d\d-\d\d-\d\d(?![-\w])")
"""A date in prose; a journal file name (2026-12-01-model.md) is not one."""


def relative_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # code blocks hold commands, not links
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file(path: Path):
    broken = [t for t in relative_links(path) if not (path.parent / t.split("#", 1)[0]).exists()]
    assert not broken, f"{path.relative_to(ROOT)}: links to missing files {broken}"


def test_link_check_sees_links_and_misses():
    """The checker itself: it finds a plain link, an image and a link with an anchor, and skips URLs."""
    sample = ROOT / "docs" / "operations.md"
    links = relative_links(sample)
    assert "hardware-and-wiring.md" in links and "offload.md" in links
    assert not any(t.startswith("http") for t in links)
    assert "confusion_masked.png" in relative_links(ROOT / "models" / "MODEL_CARD.md")


def test_readme_is_short_and_its_first_screen_starts_the_glasses():
    lines = README.read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; reference material goes into docs/"
    first = "\n".join(lines[:40])
    # .ci/run installs "the system packages the README lists" and runs its test command.
    assert re.search(r"apt-get install .*espeak-ng.*alsa-utils", first)
    for words in ("make run", "make test", "Ctrl-C", "press"):
        assert words in first, f"the README's first 40 lines do not say {words!r}"


def test_readme_is_not_a_work_log():
    text = README.read_text()
    assert not DATE.findall(text), "dated notes go into docs/experiments/, not the README"
    assert "load average" not in text
    headings = [h.lower() for h in re.findall(r"^#+ (.*)", text, flags=re.M)]
    assert not [h for h in headings if "tried" in h or "current numbers" in h]


def test_card_generators_hold_no_dated_experiment_prose():
    for module in ("export/card.py", "export/enhancer_card.py"):
        assert not DATE.findall((ROOT / module).read_text()), f"{module}: dated notes go into docs/experiments/"


def test_every_journal_entry_is_listed_in_its_index():
    folder = ROOT / "docs" / "experiments"
    listed = set(relative_links(folder / "README.md"))
    entries = {p.name for p in folder.iterdir() if p.name != "README.md"}
    assert entries and entries <= listed, f"not in docs/experiments/README.md: {sorted(entries - listed)}"


def test_docs_pages_named_in_code_and_config_exist():
    """Code, unit files and config comments send readers to docs pages; those pages must be there."""
    sources = [*ROOT.glob("edge/**/*.py"), *ROOT.glob("export/**/*.py"), *ROOT.glob("firmware_bridge/**/*"),
               *ROOT.glob("systemd/*"), *ROOT.glob("examples/*"), ROOT / "Makefile", ROOT / ".ci" / "run"]
    missing = set()
    for path in sources:
        if path.is_file():
            for name in re.findall(r"docs/[\w./-]+\.(?:md|json)", path.read_text(errors="replace")):
                if not (ROOT / name).exists():
                    missing.add(f"{path.relative_to(ROOT)}: {name}")
    assert not missing, sorted(missing)
