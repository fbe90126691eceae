"""The lab's private network: one host bridge that every node's veth joins.

The host keeps `paths.host_address` on the bridge, so host <-> node traffic is
plain L2 on one segment: no routing, no NAT and no `ip_forward` change (this
also means nodes reach nothing but the lab /24, which is what we want).

Node <-> node traffic is also bridged, but with `br_netfilter` loaded bridged
frames still traverse the iptables FORWARD chain, whose policy the build
engine's dockerd sets to DROP; one accept rule for the bridge restores it
without turning bridge netfilter off for the whole machine (design §5).

Several labs (the real one and a test lab on another subnet) may share the
bridge: each adds its own host address and its own name-tagged veths, and the
bridge goes away with the last lab's address.
"""

from __future__ import annotations

import json
from typing import Any

from dockship_lab.paths import BRIDGE, PREFIX, LabPaths
from dockship_lab.process import LabError, run

# Bridged traffic between two ports of the lab bridge.
ACCEPT_RULE = ["-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"]
# A bridge without a set MAC takes its lowest port's, so it would change as
# nodes come and go, leaving the nodes' ARP entries for the host pointing at
# a MAC nobody has until they time out (seconds of lost registry traffic).
BRIDGE_MAC = "02:d5:00:00:00:01"


def mac_for(address: str) -> str:
    """A fixed, locally administered MAC for an IPv4 address.

    A node re-created with a fresh random MAC is unreachable until the host's
    still-"REACHABLE" neighbour entry for its address expires (seen: >15 s);
    the same address always getting the same MAC avoids that.
    """
    return "02:d5:" + ":".join(f"{int(octet):02x}" for octet in address.split("."))


def name_prefix(paths: LabPaths) -> str:
    """Prefix of this lab's netns and veth names.

    The default lab (subnet x.y.0) uses the plain `dslab-`; a lab on another
    subnet carries the third octet (`dslab9-`) so a test lab never touches
    the real lab's nodes. Names stay within the kernel's 15-character limit.
    """
    octet = paths.subnet.rsplit(".", 1)[-1]
    return f"{PREFIX}-" if octet == "0" else f"{PREFIX}{octet}-"


def netns_name(paths: LabPaths, index: int) -> str:
    return f"{name_prefix(paths)}node{index}"


def veth_name(paths: LabPaths, index: int) -> str:
    """Host end of node `index`'s veth pair (the node end is `eth0` in its netns)."""
    name = f"{name_prefix(paths)}n{index}h"
    if len(name) > 15:
        raise LabError(f"interface name {name} is longer than 15 characters; use fewer nodes")
    return name


def network_up(paths: LabPaths) -> None:
    """Create (or repair) the bridge with this lab's host address, and the accept rule."""
    _ensure_bridge(f"{paths.host_address}/24")
    _ensure_accept_rule()


def network_down(paths: LabPaths) -> None:
    """Remove this lab's veths and host address; the bridge and rule go with the last lab."""
    for link in links(kind="veth"):
        if link["ifname"].startswith(name_prefix(paths)):
            delete_link(link["ifname"])
    if not link_exists(BRIDGE):
        _delete_accept_rules()
        return
    mine = f"{paths.host_address}/24"
    if mine in ipv4_addresses(BRIDGE):
        run(["ip", "addr", "del", mine, "dev", BRIDGE])
    if ipv4_addresses(BRIDGE):
        return  # another lab still uses the bridge
    for link in links(kind="veth"):
        if link["ifname"].startswith(PREFIX):
            delete_link(link["ifname"])
    delete_link(BRIDGE)
    _delete_accept_rules()


# -- links ------------------------------------------------------------------


def links(kind: str | None = None, netns: str | None = None) -> list[dict[str, Any]]:
    """`ip -j link show` as data, optionally only links of one type or in a netns."""
    argv = ["ip", "-j"] + (["-n", netns] if netns else []) + ["link", "show"]
    if kind:
        argv += ["type", kind]
    out = run(argv).stdout.strip()
    return json.loads(out) if out else []


def link_exists(name: str, netns: str | None = None) -> bool:
    argv = ["ip"] + (["-n", netns] if netns else []) + ["link", "show", "dev", name]
    return run(argv, check=False).returncode == 0


def delete_link(name: str) -> None:
    """Delete a link; gone already (e.g. its veth peer was deleted) is fine."""
    proc = run(["ip", "link", "del", "dev", name], check=False)
    if proc.returncode != 0 and link_exists(name):
        raise LabError(f"cannot delete network link {name}: {proc.stderr.strip()}; "
                       f"remove it with: ip link del {name}")


def ipv4_addresses(dev: str, netns: str | None = None) -> set[str]:
    """The device's IPv4 addresses as "a.b.c.d/len"."""
    argv = ["ip", "-j"] + (["-n", netns] if netns else []) + ["-4", "addr", "show", "dev", dev]
    out = run(argv).stdout.strip()
    return {f"{a['local']}/{a['prefixlen']}"
            for link in (json.loads(out) if out else []) for a in link.get("addr_info", [])}


def _ensure_bridge(address: str) -> None:
    if not link_exists(BRIDGE):
        run(["ip", "link", "add", BRIDGE, "address", BRIDGE_MAC, "type", "bridge"])
    bridge = next((link for link in links(kind="bridge") if link["ifname"] == BRIDGE), None)
    if bridge is None:
        raise LabError(f"network link {BRIDGE} exists but is not a bridge; "
                       f"remove it with: ip link del {BRIDGE}")
    if bridge["address"] != BRIDGE_MAC:
        run(["ip", "link", "set", BRIDGE, "address", BRIDGE_MAC])
    if address not in ipv4_addresses(BRIDGE):
        run(["ip", "addr", "add", address, "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])


# -- firewall ---------------------------------------------------------------


def _chain_exists(chain: str) -> bool:
    return run(["iptables", "-S", chain], check=False).returncode == 0


def _rule_exists(chain: str) -> bool:
    return run(["iptables", "-C", chain, *ACCEPT_RULE], check=False).returncode == 0


def _ensure_accept_rule() -> None:
    """Accept bridged node <-> node traffic ahead of any DROP.

    DOCKER-USER is where dockerd expects users' rules, and it ends in
    `-j RETURN`, so the rule is inserted at the top (appending would put it
    after the RETURN, where it never matches). Without a dockerd (no
    DOCKER-USER chain) the rule goes to the top of FORWARD instead, which a
    later dockerd leaves in place.
    """
    chain = "DOCKER-USER" if _chain_exists("DOCKER-USER") else "FORWARD"
    if not _rule_exists(chain):
        run(["iptables", "-I", chain, "1", *ACCEPT_RULE])


def _delete_accept_rules() -> None:
    for chain in ("DOCKER-USER", "FORWARD"):
        if not _chain_exists(chain):
            continue
        while _rule_exists(chain):
            run(["iptables", "-D", chain, *ACCEPT_RULE])
