# Two commands set everything up on a fresh machine:
#   make demo   the main job on embedded defaults (offline, CPU, no key)
#   make test   installs what the tests need and runs them (what CI runs)
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
LS_VENV ?= .venv-ls
LS_STAMP := $(LS_VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export DS_BUILD_OPS := 0

# Browser tests drive Label Studio's UI in the system's Chromium (Playwright cannot download browsers here).
# Installed where missing when we may (root with apt-get); otherwise the browser tests are skipped and say so.
CHROMIUM := $(shell command -v chromium || command -v chromium-browser)

.PHONY: gpu-wheels gpu-check install browser demo test train-smoke boxflow-smoke lint style bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch pinned on the same line: an unpinned resolve pulls a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0 -e ".[dev]"
	touch $(STAMP)

# Label Studio (the annotation server) in its own environment: it pins its own Django stack.
$(LS_STAMP):
	test -x $(LS_VENV)/bin/python || $(PY) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install -q --upgrade pip
	$(LS_VENV)/bin/python -m pip install -q label-studio==1.23.2
	touch $(LS_STAMP)

install: $(STAMP) $(LS_STAMP)

demo: $(STAMP)
	bash scripts/demo.sh

train-smoke: $(STAMP)
	bash scripts/train_smoke.sh

# BoxFlow-GRPO end to end on a tiny FLUX with loopback judge and detector: outputs/boxflow-smoke/summary.json
boxflow-smoke: $(STAMP)
	$(BIN)/python scripts/boxflow_smoke.py

browser: $(STAMP)
ifeq ($(CHROMIUM),)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Chromium for the browser tests (apt-get install -y chromium)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "could not install Chromium: the browser tests will be skipped"; \
	else echo "no Chromium and no root apt-get: the browser tests will be skipped (install chromium to run them)"; fi
endif

test: $(STAMP) $(LS_STAMP) browser
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

style: $(STAMP)
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

bench: $(STAMP) $(LS_STAMP)
	$(BIN)/python bench/bench_reward.py
	$(BIN)/python bench/bench_eval.py
	$(BIN)/python bench/bench_ap_order.py
	$(BIN)/python bench/bench_distill.py
	$(BIN)/python bench/bench_build.py
	$(BIN)/python bench/bench_build_real.py
	$(BIN)/python bench/bench_generate.py
	$(BIN)/python bench/bench_memory.py
	$(BIN)/python bench/bench_annotate.py
	$(BIN)/python bench/bench_team.py
	$(BIN)/python bench/bench_quality.py
	$(BIN)/python bench/bench_boxflow.py

# The GPU check (bench/gpu_check.py, about 41 MB of wheels): the device machine has Python 3.12 with torch,
# transformers, accelerate and peft, and reaches no package index, so what it lacks is downloaded here first and
# travels with the tree (.gpu-wheels/, ignored). On the device: make gpu-check (installs with --no-index, then runs).
GPU_WHEELS := .gpu-wheels
GPU_PKGS := diffusers==0.42.1 orjson==3.13.0 isal==1.9.1 scipy==1.17.1

gpu-wheels: $(STAMP)
	$(BIN)/python -m pip download -q --only-binary=:all: --python-version 3.12 --no-deps -d $(GPU_WHEELS) \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 $(GPU_PKGS)

gpu-check:
	python3 -m pip install -q --no-index --no-deps --find-links $(GPU_WHEELS) $(GPU_PKGS)
	python3 bench/gpu_check.py --out $${OUT:-outputs}/gpu_check.json

clean:
	rm -rf outputs .pytest_cache .ruff_cache
