# Every target installs what it needs first, so a fresh machine needs only `make demo` / `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch and torchvision must match (clip imports torchvision; a mismatch breaks transformers).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test lint format bench screenshots clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	@echo "==> installing owlvit and its dependencies into $(VENV) (torch, jax, transformers: a few GB, several minutes)"
	$(PY) -m pip install --progress-bar on $(TORCH_PINS) -e '.[dev]'
	@echo "==> compiling owlvit_cli to bytecode"
	# Bytecode up front: where PYTHONDONTWRITEBYTECODE is set, every start would recompile.
	$(PY) -m compileall -q owlvit_cli
	touch $(STAMP)
	@echo "==> installed: run $(VENV)/bin/owlvit --help, or 'source $(VENV)/bin/activate' to put owlvit on PATH"

demo: install
	$(PY) -m owlvit_cli.testing.demo

test: install
	$(PY) -m pytest -q -n auto

lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install
	$(PY) bench/bench.py

# docs/screen_*.svg: convert, verify and push of a full-size B/32 (random weights), as a
# 120-column terminal shows them; the push goes to the test Hub server on 127.0.0.1.
screenshots: install
	$(PY) docs/screenshots.py

clean:
	rm -rf $(VENV) demo bench/out .pytest_cache .ruff_cache
