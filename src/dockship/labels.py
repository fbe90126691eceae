"""Every `io.dockship.*` label name, in one place.

Labels are dockship's state on the engines: a container says which service,
tag and digest it runs and what ran before it, an image says which inputs it
was built from, a lock or ledger says whose it is. Scripts of operators
filter on these names (`docker ps --filter label=io.dockship.service=hello`),
so they are part of the interface and are spelled once.
"""

from __future__ import annotations

ROOT = "io.dockship"

# A service's container on a node (container.py).
SERVICE = f"{ROOT}.service"
ENV = f"{ROOT}.env"
TAG = f"{ROOT}.tag"
DIGEST = f"{ROOT}.digest"
DEPLOY_ID = f"{ROOT}.deploy-id"
PREVIOUS_TAG = f"{ROOT}.previous-tag"
PREVIOUS_DIGEST = f"{ROOT}.previous-digest"
SETTINGS = f"{ROOT}.settings"        # salted per-key hashes of its runtime settings (runtime.py)
DEPLOYED_AT = f"{ROOT}.deployed-at"

# An image's build inputs and provenance (build.py): same inputs, same tag (design §4).
PACKAGE = f"{ROOT}.package"
VERSION = f"{ROOT}.version"
INDEX = f"{ROOT}.index"
PACKAGE_SHA256 = f"{ROOT}.package.sha256"
PINS_SHA256 = f"{ROOT}.pins.sha256"          # sha256 of /opt/dockship/pins.txt: the pinned set
DOCKERFILE_SHA256 = f"{ROOT}.dockerfile.sha256"
BASE_IMAGE = f"{ROOT}.base.image"
BASE_DIGEST = f"{ROOT}.base.digest"
PIP_FREEZE = f"{ROOT}.pip-freeze"
BUILDER = f"{ROOT}.builder"

# State containers kept on the nodes (stateimage.py): the deploy lock and the history ledger.
STATE = f"{ROOT}.state"              # on the state image, so on every state container
STATE_KIND = f"{ROOT}.state.kind"    # "lock" or "ledger"
LOCK = f"{ROOT}.lock."               # prefix: io.dockship.lock.env, .holder, ...
LEDGER = f"{ROOT}.ledger."           # prefix: io.dockship.ledger.env, .service
