"""What every firewall backend offers the daemon.

A grant opens one protocol/port for one source address for a bounded time.
Backends never make a grant permanent: the time is capped here, and the
nftables backend hands it to the kernel so it lapses even if spad dies.
"""

from __future__ import annotations

import abc
import builtins
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import ClassVar, Final, Literal

Proto = Literal["tcp", "udp"]
GrantKey = tuple[IPv4Address | IPv6Address, Proto, int]

MAX_GRANT_SECONDS: Final = 86400.0


class FirewallError(RuntimeError):
    """The firewall refused a change or could not be reached."""


@dataclass(frozen=True)
class Grant:
    """Open ``proto``/``port`` for ``address``.

    For ``allow()`` ``seconds`` is the requested time; for ``list()`` and the
    grants adopted by ``start()`` it is the time left.
    """

    address: IPv4Address | IPv6Address
    proto: Proto
    port: int
    seconds: float

    @property
    def key(self) -> GrantKey:
        return (self.address, self.proto, self.port)


def check_grant(grant: Grant) -> Grant:
    """Refuse a grant whose fields are not what their types promise.

    Backends build firewall commands from these fields, so the check is done
    at run time as well, whatever the caller's type checker said.
    """
    if not isinstance(grant, Grant):
        raise FirewallError(f"expected a Grant, got {type(grant).__name__}")
    if not isinstance(grant.address, IPv4Address | IPv6Address):
        raise FirewallError(f"grant address is not an IP address: {grant.address!r}")
    if grant.proto not in ("tcp", "udp"):
        raise FirewallError(f"grant protocol is not tcp or udp: {grant.proto!r}")
    if type(grant.port) is not int or not 1 <= grant.port <= 65535:
        raise FirewallError(f"grant port is not 1..65535: {grant.port!r}")
    seconds = grant.seconds
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or not 0 < seconds <= MAX_GRANT_SECONDS
    ):
        raise FirewallError(
            f"grant time is not in (0, {MAX_GRANT_SECONDS:.0f}] seconds: {seconds!r}"
        )
    return grant


def merge_grants(grants: Iterable[Grant]) -> dict[GrantKey, float]:
    """Checked grants, one per key, with the longest time asked for."""
    merged: dict[GrantKey, float] = {}
    for grant in grants:
        check_grant(grant)
        merged[grant.key] = max(merged.get(grant.key, 0.0), float(grant.seconds))
    return merged


class Firewall(abc.ABC):
    """A backend that opens ports for addresses, each for a bounded time."""

    name: ClassVar[str]

    @abc.abstractmethod
    def start(self) -> builtins.list[Grant]:
        """Install or reconcile the state this backend owns.

        Returns the grants adopted from a previous run (time left), if any.
        """

    @abc.abstractmethod
    def allow(self, grants: Sequence[Grant]) -> None:
        """Open every grant, as one batch.

        A grant for an address/protocol/port that is already open extends it
        to the new time if that is later; it is never duplicated and never
        shortened.
        """

    @abc.abstractmethod
    def list(self) -> builtins.list[Grant]:
        """The grants open now, with the time each has left."""

    @abc.abstractmethod
    def stop(self, keep: bool) -> None:
        """Remove everything owned by this backend, unless ``keep``.

        With ``keep`` the open grants stay until their time runs out.
        """

    @abc.abstractmethod
    def check(self) -> builtins.list[str]:
        """Problems found in the host's firewall, one line each."""

    def repair(self) -> bool:
        """Restore the state this backend owns if something removed it.

        Called every second by the daemon; cheap when nothing is wrong.
        Returns True if it had to repair (and logged it), False otherwise.
        """
        return False
