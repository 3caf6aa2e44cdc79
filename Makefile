# The README's two set-up commands: `make demo` and `make test`.
# torch is installed first, pinned to the CPU build, so nothing pulls a CUDA build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
# Test processes: one per core of the 2-core CI machine (pytest-xdist; each gets its share of threads).
TEST_WORKERS ?= 2

.PHONY: demo test install clean-venv

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[notebooks,app,dev]" "$(TORCH)"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/haiku-kit demo

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup --durations=25

clean-venv:
	rm -rf $(VENV)
