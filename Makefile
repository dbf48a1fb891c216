# Suara: `make train-all` runs the whole pipeline locally on the embedded defaults;
# `make test` runs the tests. `make help` lists every target.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.suara-setup
CLOUD  ?=
RUN    ?= $(or $(SUARA_RUN_ID),local)
PHASE  ?= 3
TO     ?= adapters/$(RUN)/phase$(PHASE)
IMAGE  ?= suara
TAG    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo dev)
REGISTRY ?=
RAW_INPUT ?=
AUDIO_HOURS ?= 20
SPEAKERS ?= 2
# The local run reads configs/local.yaml unless SUARA_CONFIG names another file.
LOCAL_CONFIG ?= $(or $(SUARA_CONFIG),configs/local.yaml)

export SKYPILOT_DISABLE_USAGE_COLLECTION := 1

.PHONY: help setup test test-slow test-browser bench bench-gpu eval-text validate-prosody lint train-all train-local train-cloud smoke pull-adapters image push lock gpu-lock clean

help:
	@echo "make setup          build $(VENV) from requirements/lock.txt (pinned)"
	@echo "make test           run the test suite (what CI runs)"
	@echo "make test-slow      the slow tests (more preemption trials)"
	@echo "make test-browser   the listening test in headless chromium (installs Debian's chromium if missing)"
	@echo "make validate-prosody   the particle classifier's accuracy per shape on synthetic particles"
	@echo "make bench [REAL=1] benchmarks: one table of ratios (REAL=1 adds the full-size random CSM-1B; minutes)"
	@echo "make bench-gpu      the trainer on a GPU: backends x batch x LoRA rank x depth ratio -> docs/perf/"
	@echo "make eval-text      text frontend vs a lingua baseline on the labelled sets; the Malay lexicon"
	@echo "make lint           ruff + hadolint"
	@echo "make train-all      preprocess + phases 1-4 locally on the embedded defaults"
	@echo "make train-all CLOUD=1 [RAW_INPUT=s3://...] [AUDIO_HOURS=20]   cost check, then SkyPilot managed jobs"
	@echo "make pull-adapters RUN=... PHASE=3 [TO=dir]   download + verify an adapter"
	@echo "make smoke [CLOUD=1]  the smoke run: here on CPU + local S3, or on the cheapest cloud GPU (cents)"
	@echo "make image | make push REGISTRY=...   build | build + push; push prints SUARA_IMAGE"
	@echo "make gpu-lock       re-resolve requirements/gpu-lock.txt (the image's pins) from lock.txt + gpu.txt"

setup: $(STAMP)

$(STAMP): requirements/lock.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements/lock.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

# Debian's chromium and its driver (never a downloaded browser); apt needs root, as in CI containers.
test-browser: setup
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		apt-get update -qq && apt-get install -y -qq chromium chromium-driver; \
	fi
	$(BIN)/python -m pytest -q -m browser -rs

validate-prosody: setup
	$(BIN)/python -m preprocess.prosody validate

bench: setup
	$(BIN)/python -m pytest -q -m bench -s $(if $(REAL),--real-shape)

# Refuses (exit 2) where CUDA is not available.
bench-gpu: setup
	$(BIN)/python -m trainer.gpu_bench

eval-text: setup
	$(BIN)/python -m preprocess.text eval data/text/dev.tsv data/text/check.tsv data/text/chat.tsv data/text/chat-check.tsv data/text/chat-blind.tsv
	$(BIN)/python -m preprocess.text eval-lexicon data/text/lexicon.tsv

lint: setup
	$(BIN)/ruff check infra preprocess trainer tests data
	$(BIN)/hadolint Dockerfile

ifeq ($(CLOUD),1)
train-all: train-cloud
else
train-all: train-local
endif

train-local: setup
	SUARA_CONFIG=$(LOCAL_CONFIG) $(BIN)/python -m preprocess run
	SUARA_CONFIG=$(LOCAL_CONFIG) $(BIN)/python -m preprocess report
	@for phase in 1 2 3 4; do \
		SUARA_CONFIG=$(LOCAL_CONFIG) $(BIN)/python -m trainer train --phase $$phase || exit $$?; \
	done
	@SUARA_CONFIG=$(LOCAL_CONFIG) $(BIN)/python -m trainer adapters

# Estimates the cost (refusing over SUARA_BUDGET__MAX_COST_USD), then launches the managed pipeline.
train-cloud: setup
	$(BIN)/python -m infra launch sky/pipeline.yaml $(if $(RAW_INPUT),--raw-input $(RAW_INPUT)) \
		--audio-hours $(AUDIO_HOURS) --speakers $(SPEAKERS)

ifeq ($(CLOUD),1)
smoke: setup
	$(BIN)/python -m infra launch sky/smoke.yaml
else
smoke: setup
	SUARA_RUN_ID=$(or $(SUARA_RUN_ID),smoke) $(BIN)/python -m trainer smoke --local-s3
endif

pull-adapters: setup
	$(BIN)/python -m trainer --run-id $(RUN) pull --phase $(PHASE) --to $(TO)

image:
	docker build -t $(IMAGE):$(TAG) .

# The one place the image is set: push prints the SUARA_IMAGE line the cloud launcher reads.
push: image
	@test -n "$(REGISTRY)" || { echo "set REGISTRY, e.g. make push REGISTRY=ghcr.io/you"; exit 2; }
	docker tag $(IMAGE):$(TAG) $(REGISTRY)/$(IMAGE):$(TAG)
	docker push $(REGISTRY)/$(IMAGE):$(TAG)
	@echo "pushed; now: export SUARA_IMAGE=$(REGISTRY)/$(IMAGE):$(TAG)"

# Re-resolve the pins after changing pyproject.toml: a fresh venv, then freeze it.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -e '.[dev]'
	{ echo '# Every package of the CPU/CI environment, pinned (generated by `make lock` from pyproject.toml).'; \
	  echo '# torch 2.14.1 here is the CUDA build from PyPI; it runs on CPU too.'; \
	  .lock-venv/bin/pip freeze --all --exclude-editable | grep -v -E '^(suara|pip)=='; } > requirements/lock.txt
	rm -rf .lock-venv

# The GPU image's pins: the runtime dependencies of pyproject.toml (no dev tools) plus
# requirements/gpu.txt, resolved with lock.txt as constraints, so no locked version can move
# (tests/test_gpu_lock.py checks the committed report against the lock).
gpu-lock:
	$(BIN)/pip install --quiet --dry-run --ignore-installed --report /tmp/suara-gpu-report.json \
		-c requirements/lock.txt -r requirements/gpu.txt .
	$(BIN)/python -c "import json,sys; r=json.load(open('/tmp/suara-gpu-report.json')); \
		json.dump({'install': [{'metadata': {k: i['metadata'][k] for k in ('name','version')}} for i in r['install']]}, \
		open('requirements/gpu-report.json','w'), indent=1)"
	$(BIN)/python -m infra gpu-lock requirements/gpu-report.json > requirements/gpu-lock.txt

clean:
	rm -rf .suara adapters wandb .pytest_cache
