"""What a verified request may open: the credential's policy, applied.

The native core has already checked the tag, the time window and the replay
set; what reaches this module is authentic. Policy decides whether it is
also allowed, and turns it into firewall grants.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from spa.config import Credential, IPNetwork, ServerConfig
from spa.firewall.base import Grant
from spa.protocol import IPAddress, Request, server_id_digest


@dataclass(frozen=True)
class Decision:
    """``reason`` is a short fixed phrase (used as a counter key) when refused."""

    grants: tuple[Grant, ...]
    reason: str = ""
    target: IPAddress | None = None

    @property
    def accepted(self) -> bool:
        return not self.reason


def _unmap(addr: IPAddress) -> IPAddress:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return addr.ipv4_mapped
    return addr


def _inside(addr: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(addr in net for net in networks if net.version == addr.version)


class Policy:
    """Decisions for one server configuration."""

    REFUSALS = (
        "wrong destination",
        "source not allowed",
        "other address not allowed",
        "address outside sources",
        "port not allowed",
        "forwarding not enabled",
    )

    def __init__(self, cfg: ServerConfig) -> None:
        self._cfg = cfg
        self._ids = frozenset(server_id_digest(n) for n in cfg.server_ids)
        self._addresses = frozenset(_unmap(a) for a in cfg.addresses)

    def destination_ok(self, dest: IPAddress | bytes, packet_dst: IPAddress) -> bool:
        if isinstance(dest, bytes):
            return dest in self._ids
        dest = _unmap(dest)
        return dest == _unmap(packet_dst) or dest in self._addresses

    def decide(
        self, cred: Credential, req: Request, src: IPAddress, dst: IPAddress
    ) -> Decision:
        src = _unmap(src)
        if not self.destination_ok(req.destination, dst):
            return Decision((), "wrong destination")
        if not _inside(src, cred.sources):
            return Decision((), "source not allowed")
        target = src if req.allow is None else _unmap(req.allow)
        if target != src:
            if not cred.allow_other_address:
                return Decision((), "other address not allowed", target)
            if not _inside(target, cred.sources):
                return Decision((), "address outside sources", target)
        allowed = {(p.proto, p.port) for p in cred.allow}
        if any(port not in allowed for port in req.ports):
            return Decision((), "port not allowed", target)
        if req.forward is not None:
            return Decision((), "forwarding not enabled", target)
        seconds = float(min(req.open_for, cred.max_open))
        return Decision(
            tuple(Grant(target, proto, port, seconds) for proto, port in req.ports),
            target=target,
        )


def describe_ports(ports: Iterable[tuple[str, int]]) -> str:
    return ",".join(f"{proto}/{port}" for proto, port in ports)


def describe_asked(req: Request, decision: Decision) -> str:
    """What the request asked for that its refusal is about, for the log.

    A server id is on the wire only as a digest: its first hex digits are
    shown, enough to tell two knocks apart, not to recover the name.
    """
    reason = decision.reason
    if reason == "wrong destination":
        dest = req.destination
        if isinstance(dest, bytes):
            return f"server id digest {dest.hex()[:8]}"
        return str(_unmap(dest))
    if reason in ("other address not allowed", "address outside sources"):
        return str(decision.target if decision.target is not None else req.allow)
    if reason == "forwarding not enabled" and req.forward is not None:
        addr, port = req.forward
        return f"forward to {addr} port {port}"
    return describe_ports(req.ports)
