"""Import every runtime module of edge/ and the native runtimes it loads lazily; print one JSON object.

Run by tests/arm/check.py with the emulated aarch64 interpreter. edge/ imports ai-edge-litert,
onnxruntime and piper only when a model or a voice is loaded, so those are imported here by name
too. export/ is the workstation toolchain and never goes on the glasses: it is not imported.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

LAZY_RUNTIMES = ("ai_edge_litert.interpreter", "onnxruntime", "piper", "gpiozero", "serial", "aiohttp")
"""Imported inside edge/ functions (backends, voices, hardware, offload): `import edge.x` alone would not load them."""


def edge_modules() -> list[str]:
    import edge

    return ["edge", *sorted(m.name for m in pkgutil.walk_packages(edge.__path__, "edge."))]


def try_import(name: str) -> str | None:
    try:
        importlib.import_module(name)
    except BaseException as exc:  # a native module can raise anything (OSError for a missing .so)
        return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    return None


def main() -> int:
    start = time.perf_counter()
    modules = [*edge_modules(), *LAZY_RUNTIMES]
    failed = {m: err for m in modules if (err := try_import(m)) is not None}
    print(json.dumps({"modules": modules, "failed": failed, "seconds": round(time.perf_counter() - start, 1)}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
