"""The log-only backend: decisions are logged, nothing is opened.

For benchmarks and dry runs.  Grants are remembered in memory with their
expiry so that ``list()`` shows what would be open.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Callable, Iterable, Sequence

from spa.config import PortSpec
from spa.firewall.base import Firewall, Grant, GrantKey, merge_grants

log = logging.getLogger(__name__)


class NoneFirewall(Firewall):
    """Log-only backend; keyword arguments match the other backends."""

    name = "none"

    def __init__(
        self,
        *,
        table: str = "spa",
        spa_port: int = 62201,
        protected: Iterable[PortSpec] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = table
        self.spa_port = spa_port
        self.protected = tuple(protected)
        self._clock = clock
        self._deadlines: dict[GrantKey, float] = {}

    def start(self) -> builtins.list[Grant]:
        log.info(
            "firewall none: nothing is opened or dropped (protected would be %s)",
            ", ".join(str(p) for p in self.protected) or "none",
        )
        return []

    def allow(self, grants: Sequence[Grant]) -> None:
        now = self._clock()
        for key, seconds in merge_grants(grants).items():
            deadline = max(self._deadlines.get(key, now), now + seconds)
            self._deadlines[key] = deadline
            log.debug(
                "firewall none: would allow %s %s/%d for %.0fs",
                key[0],
                key[1],
                key[2],
                deadline - now,
            )

    def list(self) -> builtins.list[Grant]:
        now = self._clock()
        self._deadlines = {k: d for k, d in self._deadlines.items() if d > now}
        return [
            Grant(addr, proto, port, deadline - now)
            for (addr, proto, port), deadline in self._deadlines.items()
        ]

    def stop(self, keep: bool) -> None:
        if not keep:
            self._deadlines.clear()
        log.info("firewall none: stopped")

    def check(self) -> builtins.list[str]:
        return []
