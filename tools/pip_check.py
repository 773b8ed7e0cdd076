"""`pip check` for the venv `make setup` builds, less the dependencies the locks leave out on purpose.

Every lock is installed with `pip install --no-deps`, so pip resolves nothing and `pip check` is where a
package missing from a lock shows up. Each omission below has its reason; anything else fails (exit 1).

    .venv/bin/python tools/pip_check.py
"""

from __future__ import annotations

import re
import subprocess
import sys

KNOWN_MISSING: dict[str, frozenset[str]] = {
    # We use only its bundled face models and the legacy FaceMesh solution: jax/jaxlib and sentencepiece
    # serve its model maker and LLM tasks, and opencv-contrib-python would clash with opencv-python-headless.
    "mediapipe": frozenset({"jax", "jaxlib", "opencv-contrib-python", "sentencepiece"}),
    # Only its NPU compiler (ai_edge_litert.aot) imports these; the glasses never do.
    "ai-edge-litert": frozenset({"backports-strenum", "tqdm"}),
}
_MISSING = re.compile(r"(?P<package>\S+) \S+ requires (?P<requirement>\S+), which is not installed\.")


def canonical(name: str) -> str:
    """PEP 503 name: `Backports_StrEnum` and `backports-strenum` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def unexpected(report: str) -> list[str]:
    """The lines of `pip check` output that are not one of KNOWN_MISSING."""
    bad = []
    for line in report.splitlines():
        line = line.strip()
        if not line or line == "No broken requirements found.":
            continue
        found = _MISSING.fullmatch(line)
        if found and canonical(found["requirement"]) in KNOWN_MISSING.get(canonical(found["package"]), ()):
            continue
        bad.append(line)
    return bad


def main() -> int:
    proc = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, check=False)
    bad = unexpected(proc.stdout)
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and not proc.stdout.strip()):
        bad.append(f"pip check itself failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    if bad:
        print("pip check: a lock misses a dependency (add it pinned, or to tools/pip_check.py with its reason):", file=sys.stderr)
        for line in bad:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"pip check: OK but for the {sum(map(len, KNOWN_MISSING.values()))} dependencies tools/pip_check.py leaves out on purpose")
    return 0


if __name__ == "__main__":
    sys.exit(main())
