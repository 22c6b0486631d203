# Two entry points for a fresh clone:  `make run` (main job on its default)  and  `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU torch where no CUDA driver is present: `torch==2.13.0` resolves to a local CPU wheel on
# our dev/CI machines, while any unpinned spec would pull GBs of CUDA packages.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)

.PHONY: install run test test-fast clean

$(BIN)/dexrl: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(BIN)/dexrl

run: install
	$(BIN)/dexrl train  # a new run directory each time: runs/quickstart-YYYYMMDD-HHMMSS

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) *.egg-info out
