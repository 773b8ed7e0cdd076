# Expression-aware glasses — the two commands: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TRAIN_STAMP := $(VENV)/.train-installed
SHARED ?= ../shared

.PHONY: setup train-setup run lint test test-train check-config clean-venv masked-testset evaluate train build

# Idempotent: (re)creates .venv only when the lock changed. Every package is pinned; --no-deps so
# nothing unpinned (jax, opencv-contrib) is pulled in by mediapipe's declared dependencies.
# tools/pip_check.py fails on any declared dependency missing from the locks, but for the few it lists.
# A venv that has the training extras gets their lock too, so the check sees the venv as it is.
$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements.txt -r requirements-dev.txt \
		$(if $(wildcard $(TRAIN_STAMP)),-r requirements-train.txt)
	$(PY) tools/pip_check.py
	touch $(STAMP)

setup: $(STAMP)

# Workstation only: torch, onnx and the TFLite converter for training/export. Never on the glasses.
$(TRAIN_STAMP): $(STAMP) requirements-train.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-train.txt
	$(PY) tools/pip_check.py
	touch $(TRAIN_STAMP)

train-setup: $(TRAIN_STAMP)

# The wearer loop: camera if one is present, else the demo face; WAV file when there is no sound card.
# One simulated press once ready, so a newcomer hears it work; then the button (or Enter) as usual,
# until Ctrl-C. `make run ARGS=--exit-after-presses` stops once the simulated press is answered.
RUN_ARGS ?= --presses 1
run: $(STAMP)
	$(PY) -m edge run $(RUN_ARGS) $(ARGS)

# ruff, with the rules in pyproject.toml (defects, not style); `make test` runs it first.
lint: $(STAMP)
	$(PY) -m ruff check .

test: $(STAMP) lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The tests marked `train` (they skip under `make test`: no torch on the glasses): export to ONNX and
# TFLite with parity, training steps, a GPU teacher's step, the test voice's generator. The imports go
# first, so a broken install fails here instead of turning into skips. .ci/run calls it.
test-train: $(TRAIN_STAMP)
	$(PY) -c "import onnx, onnx2tf, tensorflow, torch"
	$(PY) -m pytest -q -m train $(PYTEST_ARGS)

# The Pi's install and the pipeline on aarch64 under qemu user-mode emulation (tests/arm/check.py):
# the lock's aarch64 wheels, every shipped model vs this machine on 1,000 faces, the non-spawning
# tests. Rootfs, wheels and venv are cached in cache/arm/. ARM_ARGS=--skip-offline for CI.
.PHONY: arm-check
arm-check: $(STAMP)
	$(PY) tests/arm/check.py $(ARM_ARGS)

check-config: $(STAMP)
	$(PY) -m edge check-config $(ARGS)

# --- model toolchain (see models/MODEL_CARD.md); needs FER2013 in $(SHARED)/data/fer2013 ---
FER := $(SHARED)/data/fer2013
MASKED := cache/publictest_masked.npz
DARK := cache/publictest_masked_dark6.npz

$(MASKED): $(STAMP)
	$(PY) -m export mask --data $(FER)/fer2013_publictest.npz --out $@

$(DARK): $(MASKED)
	$(PY) -m export darken --data $(MASKED) --out $@ --light 0.06

masked-testset: $(MASKED) $(DARK)

# Two teachers (the width-16 and the 1.5x wider recipe), then the shipped width-16 student distilled
# from their ensemble. Each run checkpoints every epoch; add --resume by hand to continue one.
TEACHERS := cache/run7/fusion.pt cache/run8/fusion.pt
STUDENT := cache/run9/fusion.pt

cache/run7/fusion.pt: | $(TRAIN_STAMP)
	$(PY) -m export.train --epochs 32 --width 16 --out cache/run7

cache/run8/fusion.pt: | $(TRAIN_STAMP)
	$(PY) -m export.train --epochs 30 --width 24 --out cache/run8

$(STUDENT): $(TEACHERS)
	$(PY) -m export.train --epochs 48 --width 16 --teachers $(TEACHERS) --out cache/run9

train: $(STUDENT)

# GPU teachers (export/teachers.py, docs/gpu-teachers.md): the prepared views as carry-sized lossless
# chunks for a lent GPU machine. The run itself happens there; `export.teachers targets` brings it back.
PREPARED := $(firstword $(wildcard cache/prepared.*.npz))
.PHONY: gpu-pack
gpu-pack: | $(TRAIN_STAMP)
	test -n "$(PREPARED)" || $(PY) -c "from pathlib import Path; from export.dataset import prepare, SHARED_FER; prepare(SHARED_FER / 'fer2013_train.npz', Path('cache'))"
	$(PY) -m export.teachers pack --prepared $$(ls cache/prepared.*.npz | head -1) --out cache/gpu-pack

build: $(TRAIN_STAMP) $(MASKED) $(DARK)
	$(PY) -m export build --checkpoint $(STUDENT)

evaluate: $(STAMP) $(MASKED) $(DARK)
	$(PY) -m export evaluate --data $(FER)/fer2013_publictest.npz --json
	$(PY) -m export evaluate --data $(MASKED) --json
	$(PY) -m export evaluate --data $(DARK) --json --lowlight auto

clean-venv:
	rm -rf $(VENV)
