# The two commands:   make run    (install, then the end-to-end job on the embedded default)
#                     make test   (install, then the test suite)
# VENV may point outside the clone (CI caches it keyed by the lock file's hash; see .ci/run).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
LOCK_HASH := $(shell cat requirements.lock requirements-nodeps.lock pyproject.toml Makefile | sha256sum | cut -c1-16)
STAMP := $(VENV)/.mtmusicldm-$(LOCK_HASH)
export PATH := $(abspath $(VENV))/bin:$(PATH)
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: install run test bench clean-outputs

$(STAMP): requirements.lock requirements-nodeps.lock pyproject.toml
	python3 -m venv $(VENV)
	# torch first, in one command with its pinned companions, so nothing later swaps it for another build.
	$(PIP) install --quiet torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.0 numpy==1.26.4
	$(PIP) install --quiet -r requirements.lock
	# wheels whose declared dependencies are never used here (see the file's comment); never torch or numpy
	$(PIP) install --quiet --no-deps -r requirements-nodeps.lock
	$(PY) scripts/check_env.py
	rm -f $(VENV)/.mtmusicldm-*
	touch $(STAMP)

install: $(STAMP)
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	$(PY) scripts/check_env.py

run: install
	$(PY) -m flows.end_to_end

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/prepare_throughput.py

clean-outputs:
	rm -rf data models outputs metrics reports
