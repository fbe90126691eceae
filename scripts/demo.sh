#!/usr/bin/env bash
# The whole job on the local lab: publish two versions of the example service
# to the lab index, bake each into an image, push both, and show the registry.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export DOCKSHIP_CONFIG=${DOCKSHIP_CONFIG:-$($PY -c 'import json,subprocess,sys; print(json.loads(subprocess.run([sys.executable,"-m","dockship","lab","status","--json"],check=True,capture_output=True,text=True).stdout)["config"])')}
step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

step "publish hello-svc 1.0.0 and 1.1.0 to the lab index"
$PY examples/publish.py 1.0.0 1.1.0

step "dockship build hello-svc 1.0.0"
$PY -m dockship build hello-svc 1.0.0

step "dockship build hello-svc   (no version: the newest final release)"
$PY -m dockship build hello-svc

step "dockship build hello-svc 1.0.0 again: same inputs, nothing to do"
$PY -m dockship build hello-svc 1.0.0 --json

step "tags in the registry"
$PY - <<'PYEOF'
import json, subprocess, sys
from dockship.registry import RegistryClient
status = json.loads(subprocess.run([sys.executable, "-m", "dockship", "lab", "status", "--json"],
                                   check=True, capture_output=True, text=True).stdout)
reg = RegistryClient(status["registry"])
for tag in reg.tags("hello"):
    print(f"{status['registry']}/hello:{tag}  {reg.manifest_digest('hello', tag)}")
PYEOF
