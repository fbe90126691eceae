#!/usr/bin/env bash
# The whole job on the local lab: publish two versions of the example service
# to the lab index, bake each into an image and push it, roll the first onto
# the lab's three nodes, roll the second, and roll back to the first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
DOCKSHIP_CONFIG=${DOCKSHIP_CONFIG:-$($PY -m dockship lab status --json | $PY -c 'import json,sys; print(json.load(sys.stdin)["config"])')}
export DOCKSHIP_CONFIG
step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

step "publish hello-svc 1.0.0 and 1.1.0 to the lab index"
$PY examples/publish.py 1.0.0 1.1.0

step "dockship build hello-svc 1.0.0"
$PY -m dockship build hello-svc 1.0.0

step "dockship build hello-svc   (no version: the newest final release, 1.1.0)"
$PY -m dockship build hello-svc

step "dockship build hello-svc 1.0.0 again: same inputs, nothing to do"
$PY -m dockship build hello-svc 1.0.0

step "dockship versions hello   (the registry's tags, newest first, and where each runs)"
$PY -m dockship versions hello

step "dockship roll --env lab --tag 1.0.0 --dry-run"
$PY -m dockship roll --env lab --tag 1.0.0 --dry-run

step "dockship roll --env lab --tag 1.0.0"
$PY -m dockship roll --env lab --tag 1.0.0

step "dockship roll --env lab --tag 1.1.0"
$PY -m dockship roll --env lab --tag 1.1.0

step "dockship status --env lab"
$PY -m dockship status --env lab

step "dockship lock status --env lab   (no roll running: unlocked)"
$PY -m dockship lock status --env lab

step "dockship logs --env lab --tail 3"
$PY -m dockship logs --env lab --tail 3

step "make rollback TAG=1.0.0 ENV=lab"
make --no-print-directory rollback TAG=1.0.0 ENV=lab

step "dockship status --env lab"
$PY -m dockship status --env lab

step "dockship versions hello"
$PY -m dockship versions hello

step "dockship history --env lab"
$PY -m dockship history --env lab
