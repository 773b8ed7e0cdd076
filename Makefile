# Expression-aware glasses — the two commands: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TRAIN_STAMP := $(VENV)/.train-installed
SHARED ?= ../shared

.PHONY: setup train-setup run test check-config clean-venv masked-testset evaluate train build

# Idempotent: (re)creates .venv only when the lock changed. Every package is pinned; --no-deps so
# nothing unpinned (jax, opencv-contrib) is pulled in by mediapipe's declared dependencies.
$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip check || true
	touch $(STAMP)

setup: $(STAMP)

# Workstation only: torch, onnx and the TFLite converter for training/export. Never on the glasses.
$(TRAIN_STAMP): $(STAMP) requirements-train.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-train.txt
	touch $(TRAIN_STAMP)

train-setup: $(TRAIN_STAMP)

# The wearer loop: camera if one is present, else the demo face; WAV file when there is no sound card.
run: $(STAMP)
	$(PY) -m edge run $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

check-config: $(STAMP)
	$(PY) -m edge check-config $(ARGS)

# --- model toolchain (see models/MODEL_CARD.md) ---
masked-testset: $(STAMP)
	$(PY) -m export mask --data $(SHARED)/data/fer2013/fer2013_publictest.npz --out cache/publictest_masked.npz

train: $(TRAIN_STAMP)
	$(PY) -m export.train --epochs 16

build: $(TRAIN_STAMP)
	$(PY) -m export build

evaluate: $(STAMP) masked-testset
	$(PY) -m export evaluate --data $(SHARED)/data/fer2013/fer2013_publictest.npz --json --plot models/confusion_unmasked.png
	$(PY) -m export evaluate --data cache/publictest_masked.npz --json --plot models/confusion_masked.png

clean-venv:
	rm -rf $(VENV)
