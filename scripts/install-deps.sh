#!/usr/bin/env bash
# Install what dockship's lab, demo and tests need on Debian/Ubuntu (as root),
# and the project's virtualenv. Idempotent: prints what it installs, and is a
# no-op when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
# --python-only: just the virtualenv (what `make unit` needs: no root, no Debian packages).
PYTHON_ONLY=0
[[ "${1:-}" == "--python-only" ]] && PYTHON_ONLY=1

APT_PACKAGES=(
  docker.io          # build engine and node engines (dockerd, containerd, runc)
  docker-registry    # the lab registry (Distribution 2.8)
  mmdebstrap         # the lab's Python base image, built without Docker Hub
  openssh-server     # sshd on every lab node
  goiardi            # the lab Chef server
  haproxy            # the lab load balancer (drained through its runtime API)
  etcd-server        # the lab's etcd (node discovery, the etcd deploy lease) and etcd tests
  iproute2           # network namespaces and veths for the lab nodes
  iptables           # the bridge accept rule between lab nodes
  apache2-utils      # htpasswd for the lab's authenticated registry
  curl
  ca-certificates
  python3
  python3-venv
)

missing=()
((PYTHON_ONLY)) || for pkg in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing ${missing[*]}; run as root (the lab needs root anyway)" >&2
    exit 2
  fi
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d may forbid starting services from postinst; the lab starts its own.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
VENV=.venv
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "install-deps: creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
if [[ ! -e "$stamp" ]]; then
  echo "install-deps: installing dockship and its test tools into $VENV" >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q -e '.[test,lab]'
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
