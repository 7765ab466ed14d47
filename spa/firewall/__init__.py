"""Firewall backends: ``make_firewall(name, **kw)`` picks one by name."""

from __future__ import annotations

from typing import Any

from spa.firewall.base import Firewall, FirewallError, Grant

__all__ = ["BACKENDS", "Firewall", "FirewallError", "Grant", "make_firewall"]

BACKENDS = ("nftables", "none")


def make_firewall(name: str, **kw: Any) -> Firewall:
    """The backend called ``name``, built with keyword arguments ``kw``.

    Both backends take ``table`` (nftables table name), ``spa_port`` (the
    UDP port knocks arrive on) and ``protected`` (PortSpecs to drop unless
    granted).
    """
    if name == "nftables":
        from spa.firewall.nftables import NftablesFirewall

        return NftablesFirewall(**kw)
    if name == "none":
        from spa.firewall.none import NoneFirewall

        return NoneFirewall(**kw)
    if name == "iptables":
        raise FirewallError('the "iptables" firewall backend is not available yet')
    raise FirewallError(
        f"unknown firewall backend {name!r}; expected one of: {', '.join(BACKENDS)}"
    )
