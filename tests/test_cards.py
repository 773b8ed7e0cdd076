"""The model and enhancer cards are generated from committed results files (#19).

Regenerating a card from models/results/ must give the committed card byte for byte, and the build's
own path (save_results, then write_card) must give the same card and the same results file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from export import card, enhancer_card

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


def test_model_card_is_what_its_results_files_generate():
    assert card.render(MODELS) == (MODELS / "MODEL_CARD.md").read_text(), "run `python -m export.card` and commit the card"


def test_enhancer_card_is_what_its_results_file_generates():
    assert enhancer_card.render(MODELS) == (MODELS / "ENHANCER_CARD.md").read_text(), "run `python -m export.enhancer_card`"


def test_the_build_writes_the_results_files_the_card_is_generated_from(tmp_path: Path):
    """export build calls save_results then write_card: fed what the build measured, it reproduces both."""
    committed = json.loads((MODELS / card.RESULTS).read_text())
    history = json.loads((MODELS / card.HISTORY).read_text())["history"]
    for name in (card.SIDECAR, "ENHANCER_CARD.md"):
        shutil.copy(MODELS / name, tmp_path / name)
    (tmp_path / "results").mkdir()
    shutil.copy(MODELS / "results" / "saliency.json", tmp_path / "results")  # `export saliency`'s, beside the build's
    shutil.copy(MODELS / "results" / "cv.json", tmp_path / "results")  # `export cv`'s
    shutil.copy(MODELS / "results" / "reconstruction.json", tmp_path / "results")  # `export reconstruct`'s
    for extra in ("families.json", "lofo.json"):  # `export families`' and `export lofo`'s, when committed
        if (MODELS / "results" / extra).is_file():
            shutil.copy(MODELS / "results" / extra, tmp_path / "results")
    training = {**committed["training"], "history": history}
    card.save_results(tmp_path, committed["best"], committed["results"], committed["failed"], committed["fp32"],
                      committed["dark"], training)
    written = card.write_card(tmp_path)
    assert written.read_text() == (MODELS / "MODEL_CARD.md").read_text()
    saved = json.loads((tmp_path / card.RESULTS).read_text())
    assert saved["training"]["epochs"] == len(history) == 48
    assert {k: v for k, v in saved.items() if k != "command"} == {k: v for k, v in committed.items() if k not in ("command", "source")}
    assert json.loads((tmp_path / card.HISTORY).read_text())["history"] == history


def test_export_lowlight_writes_the_results_file_the_enhancer_card_is_generated_from(tmp_path: Path):
    committed = json.loads((MODELS / enhancer_card.RESULTS).read_text())
    for name in (enhancer_card.SIDECAR, "enhancer_sheet.png"):
        shutil.copy(MODELS / name, tmp_path / name)
    measured = {k: v for k, v in committed.items() if k not in ("command", "source")}
    enhancer_card.save_results(tmp_path, measured)
    assert enhancer_card.write_card(tmp_path).read_text() == (MODELS / "ENHANCER_CARD.md").read_text()


def test_training_history_is_an_artifact_the_card_links_not_a_table_in_it():
    text = (MODELS / "MODEL_CARD.md").read_text()
    assert "| epoch |" not in text
    assert f"]({card.HISTORY})" in text
    history = json.loads((MODELS / card.HISTORY).read_text())["history"]
    assert [row["epoch"] for row in history] == list(range(48))
    assert history[-1]["val_masked"] == {"fusion": 0.559, "face": 0.538, "landmarks": 0.472}


def test_a_new_measurement_changes_the_card(tmp_path: Path):
    """The card follows its results file: a different masked accuracy shows up in it."""
    shutil.copytree(MODELS / "results", tmp_path / "results")
    for name in (card.SIDECAR,):
        shutil.copy(MODELS / name, tmp_path / name)
    results = json.loads((tmp_path / card.RESULTS).read_text())
    results["results"]["fusion"]["int8"]["masked"]["accuracy"] = 0.6012
    (tmp_path / card.RESULTS).write_text(json.dumps(results))
    text = card.render(tmp_path)
    assert "| masked | **60.1 %** |" in text and "56.2 %" not in text.split("## The three candidates")[0]


def test_the_card_shows_the_cross_validation_figures_and_their_command(tmp_path: Path):
    """#20 item 3: the card carries each fold and mean ± std from results/cv.json, with the command that made them."""
    shutil.copytree(MODELS / "results", tmp_path / "results")
    shutil.copy(MODELS / card.SIDECAR, tmp_path / card.SIDECAR)
    cv = json.loads((tmp_path / "results" / "cv.json").read_text())
    text = card.render(tmp_path)
    assert f"`{cv['command']}`" in text and "short version of the shipped recipe" in text
    assert all(f"| {f['fold']} | {f['n_val']:,} | " in text for f in cv["folds"])
    cv["summary"]["masked"] = {"mean": 0.4321, "std": 0.0123}
    (tmp_path / "results" / "cv.json").write_text(json.dumps(cv))
    assert "**43.2 ± 1.2**" in card.render(tmp_path)


def test_the_card_shows_every_mask_family_and_the_real_masked_photos(tmp_path: Path):
    """#17 item 1: the card carries results/families.json's row per family, its worst and mean, and the photos."""
    shutil.copytree(MODELS / "results", tmp_path / "results")
    shutil.copy(MODELS / card.SIDECAR, tmp_path / card.SIDECAR)
    path = tmp_path / "results" / "families.json"
    fam = {"command": "python -m export families", "data": "fer2013_publictest.npz", "n": 10, "seed": 2013, "precision": "int8",
           "complete": True, "bars": {"worst": 0.55, "mean": 0.58, "unmasked": 0.66},
           "references": {"unmasked": {"accuracy": 0.7, "macro_f1": 0.6, "detected": 1.0, "answered": 0.5, "accuracy_answered": 0.8}},
           "families": {"polygon": {"description": "flat polygons", "in_shipped_training": "little", "accuracy": 0.4321, "macro_f1": 0.3,
                                    "detected": 0.6, "answered": 0.3, "accuracy_answered": None}},
           "summary": {"all": {"families": ["polygon"], "worst_family": "polygon", "worst": 0.4321, "mean": 0.4321}},
           "photos": [{"file": "mask.png", "faces_found": 1, "faces": [{"label": "sad", "confidence": 0.3, "unsure": True}], "said": "not sure"}]}
    path.write_text(json.dumps(fam))
    (tmp_path / "results" / "lofo.json").unlink(missing_ok=True)
    text = card.render(tmp_path)
    assert "## Mask families" in text and "`python -m export families`" in text
    assert "| polygon: flat polygons | little | **43.2 %** |" in text and "worst **43.2 %** (polygon)" in text
    assert '| mask.png | 1 | sad 30 % (unsure) | "not sure" |' in text
    path.unlink()
    assert "## Mask families" not in card.render(tmp_path)
