# dockship — the two commands a newcomer runs: `make demo` and `make test`.
# Everything runs on the local lab (real engines, registry, index, Chef server).

PY      := .venv/bin/python
DOCKSHIP := $(PY) -m dockship
NODES   ?= 3

.PHONY: deps lab lab-down demo test unit

deps:
	@bash scripts/install-deps.sh

lab: deps
	$(DOCKSHIP) lab up --nodes $(NODES)

lab-down: deps
	$(DOCKSHIP) lab down

demo: lab
	@bash scripts/demo.sh

unit: deps
	$(PY) -m pytest -q tests/unit

test: deps
	$(PY) -m pytest -q -ra tests
