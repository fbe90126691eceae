"""A container's runtime settings, and the label that lets a later roll see they changed.

What a service's container is started with beyond its image: environment
variables (literal `env` and `secrets`), the command, the container port
and where the node publishes it. A roll that finds a node already on the
target digest still replaces its container when these differ from the
config (settings drift, design §11), as compose recreates a container whose
config hash label differs.

The label (`io.dockship.settings`) holds one short hash per key rather than
one hash of everything, so `--dry-run` can name what changed
(`env.LOG_LEVEL`, `secret.DATABASE_URL`, `port`, `publish`, `command`)
without ever holding a value:

    {"v":1,"salt":"<32 hex>","keys":{"command":"<16 hex>","env.LOG_LEVEL":"…","secret.X":"…"}}

Labels travel further than the container's environment (`docker ps`
output, monitoring exporters), so a label must not let anyone test a guessed
secret value cheaply: every label has its own random salt, and a secret's
hash is scrypt (memory-hard, ~30 ms a guess) of the salted value, cut to 64
bits. Non-secret keys, whose values are in the config anyway, use a salted
HMAC. One salt serves a whole roll, so comparing a fleet costs one scrypt per
secret per distinct salt, not per node.

A container without the label (started by a dockship before settings were
recorded) counts as drifted, with the key `settings`: nothing proves it runs
what the config says, and the price is one health-gated redeploy of the same
digest, after which the label decides.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets as random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from dockship.config import Publish, Service

VERSION = 1
UNRECORDED = "settings"          # the key a container without a readable label reports
_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1, "maxmem": 64 * 1024 * 1024}
_HASH_BYTES = 8


@dataclass(frozen=True)
class Runtime:
    """What one service's containers are started with in one roll. Secret values are held
    here and in the container's environment only: never in repr, labels or JSON."""

    env: Mapping[str, str]
    secrets: Mapping[str, str] = field(repr=False)
    command: tuple[str, ...]
    port: int
    publish: Publish
    salt: str = field(default_factory=lambda: random.token_hex(16), repr=False)
    _memo: dict = field(default_factory=dict, repr=False, compare=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def of(cls, service: Service, secrets: Mapping[str, str] | None = None) -> Runtime:
        return cls(MappingProxyType(dict(service.env)), MappingProxyType(dict(secrets or {})),
                   service.command, service.port, service.publish)

    @property
    def host_port(self) -> int:
        return self.publish.port or self.port

    def environment(self) -> dict[str, str]:
        """The container's environment: literal values and secrets."""
        return {**self.env, **self.secrets}

    def _values(self) -> dict[str, tuple[str, bool]]:
        """Each key as text, and whether it is secret."""
        out = {f"env.{k}": (v, False) for k, v in self.env.items()}
        out.update({f"secret.{k}": (v, True) for k, v in self.secrets.items()})
        out["command"] = (json.dumps(list(self.command)), False)
        out["port"] = (str(self.port), False)
        out["publish"] = (f"{self.publish.address or ''}|{self.host_port}", False)
        return out

    def digests(self, salt: str) -> dict[str, str]:
        """Every key's hash under `salt` (computed once per salt)."""
        with self._guard:
            if salt not in self._memo:
                self._memo[salt] = {k: _digest(salt, k, v, secret)
                                    for k, (v, secret) in sorted(self._values().items())}
            return self._memo[salt]

    def label(self) -> str:
        """The settings label of a container started with these settings."""
        return json.dumps({"v": VERSION, "salt": self.salt, "keys": self.digests(self.salt)},
                          separators=(",", ":"), sort_keys=True)

    def changed(self, label: str | None) -> tuple[str, ...]:
        """The keys whose setting differs from what `label` records (added, removed or
        changed), sorted; `("settings",)` if the label is missing or unreadable."""
        recorded = parse_label(label)
        if recorded is None:
            return (UNRECORDED,)
        salt, keys = recorded
        wanted = self.digests(salt)
        return tuple(sorted(k for k in wanted.keys() | keys.keys()
                            if wanted.get(k) != keys.get(k)))


def parse_label(label: str | None) -> tuple[str, dict[str, str]] | None:
    """(salt, {key: hash}) of a settings label, or None if it is not one this version reads."""
    if not label:
        return None
    try:
        data = json.loads(label)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("v") != VERSION:
        return None
    salt, keys = data.get("salt"), data.get("keys")
    if not isinstance(salt, str) or not salt or not isinstance(keys, dict) \
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in keys.items()):
        return None
    return salt, keys


def _digest(salt: str, key: str, value: str, secret: bool) -> str:
    message = f"{key}\0{value}".encode()
    if secret:
        return hashlib.scrypt(message, salt=salt.encode(), dklen=_HASH_BYTES, **_SCRYPT).hex()
    return hmac.new(salt.encode(), message, hashlib.sha256).hexdigest()[:2 * _HASH_BYTES]
