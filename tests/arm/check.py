"""`make arm-check`: the pinned install and the pipeline on aarch64, under qemu user-mode emulation.

Steps (each cached under cache/arm/ where it can be):
1. tests/arm/build-rootfs.sh: qemu + a Debian bookworm arm64 rootfs + an empty aarch64 venv;
2. the aarch64 wheels of every lock entry (requirements.txt + requirements-dev.txt), for exactly the
   tags the emulated pip accepts; a lock entry with no such wheel fails the check by name;
3. `pip install --no-deps -r …` into the aarch64 venv, as `make setup` does on the Pi;
4. under QEMU_CPU=cortex-a72 (Pi 4): import every edge/ module, `python -m edge analyze --json` on
   the demo portrait (edge/data/grace_hopper.jpg), every shipped model (models/manifest.json) on a fixed set of faces
   compared with this machine's run, and the tests that start no child Python.

Emulated times are 30–300× a real Pi's: they are not performance numbers.

Exit code 1 when a check fails or, without --skip-offline, when the cache cannot be downloaded; with
--skip-offline (CI) that case prints SKIPPED and exits 0. A missing aarch64 wheel is never a skip.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import numpy as np
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
LOCKS = (ROOT / "requirements.txt", ROOT / "requirements-dev.txt")
FER = ROOT.parent / "shared" / "data" / "fer2013" / "fer2013_publictest.npz"
AGREEMENT_BAR = 0.995
OFFLINE = 3
"""build-rootfs.sh's exit code when it could not download."""

# Test modules run under emulation: the ones that start no child Python (a child would be a second
# emulated interpreter, minutes each) and that exercise what differs between the two machines —
# native wheels (OpenCV, ai-edge-litert, onnxruntime, numpy), the models and config/protocol code.
ARM_TESTS = ("tests/test_vision.py", "tests/test_model.py", "tests/test_config.py")
# Tests in those modules that start a child Python (`python -m edge analyze`: covered by step 4 instead).
ARM_DESELECT = (
    "tests/test_model.py::test_analyze_reads_the_demo_photo_and_survives_bad_inputs",
    "tests/test_model.py::test_analyze_walks_folders",
)


class CheckFailed(Exception):
    """A real failure: reported with what to do, and the check exits 1."""


class Offline(Exception):
    """The cache could not be built for lack of network: a skip under --skip-offline."""


def log(message: str) -> None:
    print(f"arm-check: {message}", file=sys.stderr, flush=True)


def clean_pip_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """pip with none of this machine's pip config (local wheel folders, constraints): the default index only."""
    keep = ("PIP_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_INDEX_URL", "PIP_PROXY")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in keep}
    env.update({"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    env.update(extra or {})
    return env


def emulated_env() -> dict[str, str]:
    return clean_pip_env({"QEMU_CPU": "cortex-a72", "PYTHONPATH": str(ROOT)})


def nice(cmd: list[str]) -> list[str]:
    return ["nice", "-n", "10", *cmd] if shutil.which("nice") else cmd


def run(cmd: list[str], what: str, env: dict[str, str] | None = None, timeout: float = 3600, capture: bool = True) -> subprocess.CompletedProcess:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=capture, timeout=timeout)
    log(f"{what}: {time.perf_counter() - start:.1f} s")
    return proc


PI_MARKERS = {**default_environment(), "platform_machine": "aarch64", "sys_platform": "linux", "platform_system": "Linux",
              "os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython",
              "python_version": "3.11", "python_full_version": "3.11.2"}
"""Environment markers as pip on the Pi (Bookworm's Python 3.11.2, aarch64) evaluates them."""


def lock_entries(locks: tuple[Path, ...] | None = None) -> list[Requirement]:
    """Every `name==version` line of the runtime and test locks that applies on the Pi (markers honoured)."""
    entries = []
    for path in locks or LOCKS:
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            req = Requirement(line)
            pins = [s for s in req.specifier if s.operator == "=="]
            if len(pins) != 1:
                raise CheckFailed(f"{path.name}: {line!r} is not pinned with ==; the lock must pin every package")
            if req.marker is not None and not req.marker.evaluate(PI_MARKERS):
                log(f"  {path.name}: {req} is not for the Pi ({req.marker}), left out as pip leaves it out")
                continue
            entries.append(req)
    return entries


def pinned_version(req: Requirement) -> str:
    return next(iter(req.specifier)).version


def pin(req: Requirement) -> str:
    return f"{req.name}=={pinned_version(req)}"


def pi_tags(rootfs: Path) -> list[Tag]:
    """The wheel tags pip accepts on the Pi (CPython 3.11, aarch64, the rootfs' glibc), most preferred first.

    Worked out here rather than by the emulated pip (whose import alone takes a minute under
    emulation); the emulated `pip install --no-index` then confirms every wheel is accepted.
    """
    match = re.search(r"libc6_2\.(\d+)-", (rootfs / "debootstrap" / "debpaths").read_text())
    if match is None:
        raise CheckFailed(f"{rootfs}/debootstrap/debpaths names no libc6 package: delete {rootfs} to rebuild it")
    platforms = [f"manylinux_2_{minor}_aarch64" for minor in range(int(match.group(1)), 16, -1)] + ["manylinux2014_aarch64", "linux_aarch64"]
    return [*cpython_tags((3, 11), abis=["cp311", "abi3", "none"], platforms=platforms), *compatible_tags((3, 11), "cp311", platforms)]


def wheel_for(req: Requirement, wheels: Path, tags: set[Tag]) -> Path | None:
    name, version = canonicalize_name(req.name), pinned_version(req)
    for path in sorted(wheels.glob("*.whl")):
        w_name, w_version, _, w_tags = parse_wheel_filename(path.name)
        if w_name == name and str(w_version) == version and w_tags & tags:
            return path
    return None


def pure_on_this_machine(req: Requirement) -> bool:
    """Whether the x86_64 venv got a pure-Python wheel for this entry (then aarch64 has the same one)."""
    try:
        wheel = metadata.distribution(req.name).read_text("WHEEL") or ""
    except metadata.PackageNotFoundError:
        return False
    return any(line.startswith("Tag:") and line.endswith("-none-any") for line in wheel.splitlines())


def download_wheels(entries: list[Requirement], wheels: Path, tags: list[Tag]) -> dict[str, Path]:
    """Every lock entry's aarch64 wheel in `wheels` (downloaded once); fails naming entries without one."""
    accepted = set(tags)
    wheels.mkdir(parents=True, exist_ok=True)
    missing = [r for r in entries if wheel_for(r, wheels, accepted) is None]
    if missing:
        platforms = list(dict.fromkeys(t.platform for t in tags if t.platform != "any"))
        abis = list(dict.fromkeys(t.abi for t in tags))
        args = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--dest", str(wheels),
                "--python-version", "3.11", "--implementation", "cp"]
        for platform in platforms:
            args += ["--platform", platform]
        for abi in abis:
            args += ["--abi", abi]
        log(f"downloading {len(missing)} aarch64 wheels for {', '.join(platforms[:2])}, … ({len(platforms)} platform tags)")
        probe = next((r for r in entries if pure_on_this_machine(r)), None)
        if probe is not None:
            proc = run(args + ["--retries", "1", "--timeout", "20", pin(probe)], f"pip download {pin(probe)} (is the index reachable?)", env=clean_pip_env())
            if proc.returncode != 0:
                raise Offline(f"pip cannot download even the pure-Python wheel {probe} ({proc.stderr.strip().splitlines()[-1:]})")
        pending, unavailable = list(missing), []
        while pending:
            proc = run(args + [pin(r) for r in pending], f"pip download ({len(pending)} wheels)", env=clean_pip_env())
            if proc.returncode == 0:
                break
            culprit = next((r for r in pending if f"found for {pin(r)}" in proc.stderr or f"install {pin(r)} because" in proc.stderr), None)
            if culprit is None:
                raise CheckFailed(f"pip download failed: {proc.stderr.strip()[-800:]}")
            unavailable.append(culprit)
            pending.remove(culprit)
        if unavailable:
            names = ", ".join(pin(r) for r in unavailable)
            raise CheckFailed(
                f"no aarch64 CPython 3.11 wheel (tags {tags[0]} … {tags[-1]}) for {names}: the Pi cannot install the lock. "
                "Pin a version that publishes a manylinux aarch64 cp311 (or abi3/pure) wheel, for both machines"
            )
    found = {r.name: wheel_for(r, wheels, accepted) for r in entries}
    wrong = [name for name, path in found.items() if path is None]
    if wrong:
        raise CheckFailed(f"pip downloaded no wheel that the Pi accepts for {', '.join(wrong)}")
    return found  # type: ignore[return-value]


def lock_digest() -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in LOCKS)).hexdigest()


def build_rootfs(cache: Path) -> None:
    proc = run(nice(["bash", str(HERE / "build-rootfs.sh"), str(cache)]), "rootfs + aarch64 venv", capture=False)
    if proc.returncode == OFFLINE:
        raise Offline("the qemu/debootstrap packages or the arm64 Debian packages could not be downloaded")
    if proc.returncode != 0:
        raise CheckFailed("tests/arm/build-rootfs.sh failed (see above)")


def install(cache: Path, python: Path, wheels: Path) -> None:
    """`make setup`'s install, from the downloaded aarch64 wheels; redone only when the lock changed."""
    stamp = cache / "venv" / ".lock-sha256"
    if stamp.is_file() and stamp.read_text() == lock_digest():
        return
    cmd = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps", "--no-index", "--find-links", str(wheels)]
    for lock in LOCKS:
        cmd += ["-r", str(lock.relative_to(ROOT))]
    proc = run(nice(cmd), "pip install --no-deps -r requirements.txt -r requirements-dev.txt (emulated)", env=emulated_env())
    if proc.returncode != 0:
        raise CheckFailed(f"the emulated pip could not install the lock from the aarch64 wheels:\n{proc.stderr.strip()[-1500:]}")
    check = run(nice([str(python), "tools/pip_check.py"]), "pip check less the omissions tools/pip_check.py lists (emulated)", env=emulated_env())
    if check.returncode != 0:
        raise CheckFailed(f"pip check on aarch64:\n{(check.stderr or check.stdout).strip()[-1500:]}")
    stamp.write_text(lock_digest())


def installed_bytes(site: Path) -> dict[str, int]:
    """Bytes on disk per installed distribution (every file its RECORD lists, .pyc included)."""
    sizes: dict[str, int] = {}
    for record in site.glob("*.dist-info/RECORD"):
        name = canonicalize_name(record.parent.name.removesuffix(".dist-info").rsplit("-", 1)[0])
        total = 0
        for row in csv.reader(record.read_text().splitlines()):
            path = (site / row[0]).resolve()
            if row and path.is_file():
                total += path.stat().st_size
        sizes[name] = total
    return sizes


def check_imports(python: Path) -> dict:
    proc = run(nice([str(python), str(HERE / "imports.py")]), "import every edge/ module and its native runtimes (emulated)", env=emulated_env())
    try:
        report = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError) as exc:
        raise CheckFailed(f"tests/arm/imports.py crashed under emulation:\n{proc.stderr.strip()[-1500:]}") from exc
    if report["failed"]:
        raise CheckFailed("modules fail to import on aarch64: " + "; ".join(f"{m}: {e}" for m, e in report["failed"].items()))
    log(f"  {len(report['modules'])} modules import")
    return {"modules": len(report["modules"]), "seconds": report["seconds"]}


def grace_hopper() -> Path:
    from edge.images import DEMO_PORTRAIT

    return DEMO_PORTRAIT


def analyze(python: Path, image: Path, env: dict[str, str] | None, what: str) -> dict:
    proc = run(nice([str(python), "-m", "edge", "analyze", "--json", str(image)]), what, env=env)
    if proc.returncode != 0:
        raise CheckFailed(f"{what} failed (exit {proc.returncode}):\n{proc.stderr.strip()[-1500:]}")
    return json.loads(proc.stdout)


def compare_analyze(python: Path) -> dict:
    image = grace_hopper()
    x86 = analyze(Path(sys.executable), image, None, "edge analyze --json grace_hopper.jpg (x86_64)")
    arm = analyze(python, image, emulated_env(), "edge analyze --json grace_hopper.jpg (emulated aarch64)")
    if len(arm["faces"]) != len(x86["faces"]) or not arm["faces"]:
        raise CheckFailed(f"analyze found {len(arm['faces'])} faces on aarch64, {len(x86['faces'])} on x86_64 (grace_hopper.jpg has one)")
    a, b = arm["faces"][0], x86["faces"][0]
    diff = max(abs(a["scores"][k] - b["scores"][k]) for k in b["scores"])
    out = {"label_aarch64": a["label"], "label_x86_64": b["label"], "box_aarch64": a["box"], "box_x86_64": b["box"], "max_score_diff": round(diff, 5)}
    if a["label"] != b["label"]:
        raise CheckFailed(f"analyze says {a['label']!r} on aarch64 but {b['label']!r} on x86_64 for grace_hopper.jpg: {out}")
    return out


def fixed_inputs(cache: Path, count: int) -> tuple[Path, str]:
    """The fixed faces: FER2013 PublicTest's first `count`, else the demo photo under fixed crops/jitters."""
    if FER.is_file():
        x = np.load(FER)["x"][:count]
        source = f"FER2013 PublicTest, first {len(x)} faces"
    else:
        x = demo_jitters(count)
        source = f"grace_hopper.jpg under {count} fixed crops/jitters (seed 0)"
    digest = hashlib.sha256(x.tobytes()).hexdigest()[:16]
    path = cache / f"inputs-{digest}.npz"
    if not path.is_file():
        np.savez_compressed(path, x=x)
    return path, source


def demo_jitters(count: int, size: int = 160) -> np.ndarray:
    """`count` crops of the demo photo around its face: shifted, scaled, rotated, brightened (seeded)."""
    import cv2

    from edge.vision.faces import FaceMesh

    image = cv2.imread(str(grace_hopper()))
    with FaceMesh(threads=1, max_faces=1) as mesh:
        faces = mesh.process(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    if not faces:
        raise CheckFailed("the face detector finds no face in grace_hopper.jpg on x86_64")
    x, y, w, h = faces[0].box
    cx, cy, side = x + w / 2, y + h / 2, 1.5 * max(w, h)  # head and a little of the shoulders
    rng = np.random.default_rng(0)
    out = np.empty((count, size, size, 3), dtype=np.uint8)
    for i in range(count):
        scale = size / (side * rng.uniform(0.8, 1.3))
        angle = rng.uniform(-15, 15)
        centre = (cx + rng.uniform(-30, 30), cy + rng.uniform(-30, 30))
        matrix = cv2.getRotationMatrix2D(centre, angle, scale)
        matrix[:, 2] += np.array([size / 2, size / 2]) - centre
        crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        gain, bias = rng.uniform(0.6, 1.3), rng.uniform(-20, 20)
        out[i] = np.clip(crop.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
    return out


def parity(cache: Path, python: Path, count: int, shards: int, model_only: bool) -> tuple[str, dict]:
    """Every shipped model on the fixed faces, here and emulated; top-1 agreement and score differences."""
    inputs, source = fixed_inputs(cache, count)
    x86_out = cache / "scores-x86_64.npz"
    proc = run([sys.executable, str(HERE / "parity.py"), "--inputs", str(inputs), "--out", str(x86_out)], f"{count} faces, every model (x86_64)")
    if proc.returncode != 0:
        raise CheckFailed(f"tests/arm/parity.py failed on x86_64:\n{proc.stderr.strip()[-1500:]}")
    x = np.load(inputs)["x"]
    bounds = np.linspace(0, len(x), shards + 1).astype(int)
    jobs = []
    for i in range(shards):
        part_in = cache / f"shard{i}-in.npz"
        np.savez(part_in, x=x[bounds[i] : bounds[i + 1]])
        cmd = [str(python), str(HERE / "parity.py"), "--inputs", str(part_in), "--out", str(cache / f"shard{i}-aarch64.npz")]
        if model_only:
            part_ref = cache / f"shard{i}-ref.npz"
            ref = np.load(x86_out)
            np.savez(part_ref, **{k: ref[k][bounds[i] : bounds[i + 1]] for k in ("face", "features", "landmarks")})
            cmd += ["--samples-from", str(part_ref)]
        jobs.append(nice(cmd))
    start = time.perf_counter()
    with ThreadPoolExecutor(shards) as pool:
        procs = list(pool.map(lambda c: subprocess.run(c, cwd=ROOT, env=emulated_env(), text=True, capture_output=True), jobs))
    log(f"{count} faces, every model (emulated aarch64, {shards} processes): {time.perf_counter() - start:.1f} s")
    for proc in procs:
        if proc.returncode != 0:
            raise CheckFailed(f"tests/arm/parity.py failed under emulation:\n{proc.stderr.strip()[-1500:]}")
    parts = [np.load(cache / f"shard{i}-aarch64.npz") for i in range(shards)]
    ref = np.load(x86_out)
    models = sorted(k for k in ref.files if "/" in k and ":" not in k)
    emulated_models = sorted(k for k in parts[0].files if "/" in k and ":" not in k)
    if models != emulated_models:
        raise CheckFailed(f"the two machines ran different models: x86_64 {models}, aarch64 {emulated_models}")
    for key in models:
        hashes = {str(ref[f"sha256:{key}"]), *(str(p[f"sha256:{key}"]) for p in parts)}
        if len(hashes) > 1:
            raise CheckFailed(f"{key}: the model file changed while the check ran (retrained/rebuilt?); run it again on a settled models/")
    detected_arm = np.concatenate([p["detected"] for p in parts])
    report: dict = {
        "faces": len(x),
        "detected_both": int((detected_arm & ref["detected"]).sum()),
        "detected_differs": int((detected_arm != ref["detected"]).sum()),
        "models": {},
    }
    keys = models + ([f"given:{m}" for m in models if f"given:{m}" in parts[0].files] if model_only else [])
    for key in keys:
        arm = np.concatenate([p[key] for p in parts])
        x86 = ref[key.removeprefix("given:")]
        entry = {"max_abs_diff": float(np.abs(arm - x86).max()), "mean_abs_diff": float(np.abs(arm - x86).mean())}
        if arm.ndim == 2:
            entry["top1_agreement"] = float((arm.argmax(1) == x86.argmax(1)).mean())
        else:
            entry["limit"] = output_limit(key, x86)
        report["models"][key] = entry
    return source, report


def output_limit(key: str, reference: np.ndarray) -> float:
    """Largest allowed aarch64 − x86_64 difference for a model that is not a classifier (e.g. the enhancer):
    the sidecar's own export-parity limit for that file when it has one, else 1 % of the output's range."""
    stem, _, variant = key.removeprefix("given:").partition("/")
    spec = json.loads((ROOT / "models" / f"{stem}.json").read_text())
    limit = (spec.get("parity", {}).get(variant) or {}).get("limit")
    return float(limit) if limit is not None else 0.01 * float(reference.max() - reference.min())


def run_tests(python: Path) -> dict:
    cmd = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *ARM_TESTS]
    for node in ARM_DESELECT:
        cmd += ["--deselect", node]
    proc = run(nice(cmd), f"pytest {' '.join(t.removeprefix('tests/') for t in ARM_TESTS)} (emulated)", env=emulated_env(), timeout=1800)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr.strip()[-500:]
    log(f"  {tail}")
    if proc.returncode != 0:
        raise CheckFailed(f"tests fail under emulated aarch64:\n{proc.stdout.strip()[-3000:]}")
    return {"summary": tail}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=ROOT / "cache" / "arm")
    parser.add_argument("--faces", type=int, default=int(os.environ.get("ARM_FACES", 1000)), help="size of the fixed set (the bar is 1,000)")
    parser.add_argument("--shards", type=int, default=os.cpu_count() or 1, help="emulated processes for the parity run")
    parser.add_argument("--model-only", action="store_true", help="also run each model on the x86_64 samples (runtime differences alone)")
    parser.add_argument("--skip-offline", action="store_true", help="print SKIPPED and exit 0 (not 1) when the cache cannot be downloaded")
    args = parser.parse_args(argv)

    cache = args.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    python = cache / "venv" / "bin" / "python"
    start = time.perf_counter()
    report: dict = {}
    try:
        if (cache / "venv" / ".lock-sha256").is_file() and (cache / "venv" / ".lock-sha256").read_text() != lock_digest():
            log("the lock changed: rebuilding the aarch64 venv")
            shutil.rmtree(cache / "venv")
        build_rootfs(cache)
        per_lock = {path.name: lock_entries((path,)) for path in LOCKS}
        entries = [r for rs in per_lock.values() for r in rs]
        lock_of = {r.name: name for name, rs in per_lock.items() for r in rs}
        tags = pi_tags(cache / "rootfs")
        wheels = download_wheels(entries, cache / "wheels", tags)
        install(cache, python, cache / "wheels")
        site = next((cache / "venv" / "lib").glob("python3.*/site-packages"))
        sizes = installed_bytes(site)
        report["wheels"] = {
            r.name: {"file": wheels[r.name].name, "bytes": wheels[r.name].stat().st_size, "installed_bytes": sizes.get(canonicalize_name(r.name), 0),
                     "lock": lock_of[r.name]}
            for r in entries
        }
        for lock in LOCKS:
            mine = [w for w in report["wheels"].values() if w["lock"] == lock.name]
            wheel_mb, disk_mb = sum(w["bytes"] for w in mine) / 1e6, sum(w["installed_bytes"] for w in mine) / 1e6
            log(f"{lock.name}: {len(mine)} aarch64 wheels, {wheel_mb:.1f} MB; {disk_mb:.1f} MB installed")
        report["imports"] = check_imports(python)
        report["analyze"] = compare_analyze(python)
        source, report["parity"] = parity(cache, python, args.faces, max(1, args.shards), args.model_only)
        report["parity"]["source"] = source
        report["tests"] = run_tests(python)
    except Offline as exc:
        if args.skip_offline:
            log(f"SKIPPED (not a pass): {exc}. The aarch64 check needs the Debian archive and PyPI once; later runs use {cache}")
            return 0
        log(f"error: {exc}; connect to the network (Debian archive, PyPI) once to fill {cache}")
        return 1
    except CheckFailed as exc:
        log(f"FAILED: {exc}")
        return 1
    finally:
        report["seconds"] = round(time.perf_counter() - start, 1)
        (cache / "report.json").write_text(json.dumps(report, indent=1))

    failures = []
    log(f"parity on {report['parity']['source']} (x86_64 vs emulated aarch64, cortex-a72):")
    for key, entry in report["parity"]["models"].items():
        agreement = entry.get("top1_agreement")
        text = f"top-1 identical {agreement:.1%}, " if agreement is not None else f"limit {entry['limit']:.1e}, "
        log(f"  {key:28s} {text}max diff {entry['max_abs_diff']:.2e}, mean {entry['mean_abs_diff']:.2e}")
        if key.startswith("given:"):
            continue
        if agreement is not None and agreement < AGREEMENT_BAR:
            failures.append(f"{key}: top-1 identical on {agreement:.2%} of the faces (bar {AGREEMENT_BAR:.1%})")
        if agreement is None and entry["max_abs_diff"] > entry["limit"]:
            failures.append(f"{key}: outputs differ by up to {entry['max_abs_diff']:.2e} (limit {entry['limit']:.1e})")
    if args.faces < 1000:
        log(f"note: {args.faces} faces, fewer than the 1,000 of the bar")
    if failures:
        log("FAILED: aarch64 and x86_64 disagree: " + "; ".join(failures))
        return 1
    log(f"passed in {report['seconds']:.0f} s (report: {cache / 'report.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
