"""matplotlib for the PNG plots (`edge bench --plot`, `export evaluate/distance --plot`), imported only
when a plot is asked for: it is not in the glasses' lock (requirements.txt) but in requirements-dev.txt."""

from __future__ import annotations

from typing import Any

from edge.errors import ConfigError


def matplotlib_or_refuse(option: str = "--plot") -> Any:
    """The matplotlib module on its file-only Agg backend, or ConfigError saying how to install it.

    Call it before a long run, so that a missing matplotlib costs a line, not the measurement."""
    try:
        import matplotlib
        import matplotlib.figure  # loads its compiled parts too: a half-installed matplotlib is refused here
    except ImportError as exc:
        raise ConfigError(
            f"{option} needs matplotlib ({exc.name or exc} is not installed; the glasses' lock leaves it out): "
            "pip install --no-deps -r requirements-dev.txt, or `make setup`"
        ) from None
    matplotlib.use("Agg")
    return matplotlib


def finish(fig: Any, ax: Any, path: Any, title: str, xlabel: str, ylabel: str, legend_size: int = 7, ncol: int = 2) -> None:
    """Label, grid and legend a one-axes figure, write it to `path` (its folder made) and close it."""
    from pathlib import Path

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size, ncol=ncol)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    import matplotlib.pyplot as plt

    plt.close(fig)
