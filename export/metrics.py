"""Classification metrics (numpy only: runs in the device env) and the confusion-matrix picture (matplotlib,
from requirements-dev.txt, imported only for the picture)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge.results import LABELS


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int = len(LABELS)) -> np.ndarray:
    return np.bincount(y_true * n + y_pred, minlength=n * n).reshape(n, n)


def report(y_true: np.ndarray, y_pred: np.ndarray, labels: tuple[str, ...] = LABELS) -> dict[str, Any]:
    """accuracy, macro-F1, per-class precision / recall (sensitivity) / specificity / F1, confusion; classes indexed in `labels`."""
    cm = confusion(np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64), len(labels))
    total = cm.sum()
    per_class = {}
    f1s = []
    for i, name in enumerate(labels):
        tp = cm[i, i]
        fp = cm[:, i].sum() - tp
        fn = cm[i, :].sum() - tp
        tn = total - tp - fp - fn
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        f1s.append(f1)
        per_class[name] = {
            "precision": round(float(precision), 4),
            "recall": round(float(recall), 4),
            "specificity": round(float(tn / (tn + fp)) if tn + fp else 0.0, 4),
            "f1": round(float(f1), 4),
        }
    return {
        "n": int(total),
        "accuracy": round(float(np.trace(cm) / max(total, 1)), 4),
        "macro_f1": round(float(np.mean(f1s)), 4),
        "per_class": per_class,
        "confusion": cm.tolist(),
    }


def plot_confusion(cm: np.ndarray | list, path: Path, title: str, labels: tuple[str, ...] = LABELS) -> None:
    from edge.plotting import matplotlib_or_refuse

    matplotlib_or_refuse("the confusion-matrix picture")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, dtype=np.float64)
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=110)
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (FER2013 label)")
    ax.set_title(title, fontsize=10)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{rows[i, j]:.2f}\n({int(cm[i, j])})", ha="center", va="center", fontsize=7, color="white" if rows[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
