# dockship — the two commands a newcomer runs: `make demo` and `make test`.
# Everything runs on the local lab (real engines, registry, index, Chef server).

PY      := .venv/bin/python
DOCKSHIP := $(PY) -m dockship
NODES   ?= 3

ENV     ?= stage
# Handed to recipes through the environment and quoted there: a value never becomes shell code.
export ENV TAG SERVICE

RUNS    ?= 5

.PHONY: deps lab lab-down demo test unit rollback bench

deps:
	@bash scripts/install-deps.sh

# `make lab` also forms the nodes' swarm (environment labswarm) for the Swarm tests;
# the demo needs only the plain lab.
LAB_UP  = $(DOCKSHIP) lab up --nodes $(NODES)

lab: deps
	$(LAB_UP) --swarm

lab-down: deps
	$(DOCKSHIP) lab down

demo: deps
	$(LAB_UP)
	@bash scripts/demo.sh

# The roll's state machine, the lease, planning and every pure rule: seconds, no root, no lab.
unit:
	@bash scripts/install-deps.sh --python-only
	$(PY) -m pytest -q tests/unit

test: deps
	$(PY) -m pytest -q -ra tests

# make rollback TAG=1.3.0 [ENV=stage] [SERVICE=hello]  ==  dockship roll --env $(ENV) --tag $(TAG)
# Honours DOCKSHIP_CONFIG (default ./dockship.toml). Installs nothing: it runs the project's
# .venv if there is one, else the `dockship` on PATH (a CI agent's own install).
rollback:
	@if [ -z "$$TAG" ]; then echo "usage: make rollback TAG=1.3.0 [ENV=stage] [SERVICE=name]" >&2; exit 2; fi
	@if [ -x $(PY) ]; then run="$(PY) -m dockship"; \
	elif command -v dockship >/dev/null; then run=dockship; \
	else echo "make rollback: no .venv and no dockship on PATH; pip install dockship (or make deps)" >&2; exit 2; fi; \
	$$run roll --env "$$ENV" --tag "$$TAG" $${SERVICE:+--service "$$SERVICE"}

# Figures measured side by side on the lab (bench/README.md); not part of `make test`.
bench: lab
	$(PY) bench/run.py --runs $(RUNS)
