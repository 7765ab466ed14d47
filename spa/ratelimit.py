"""Rate limits for log lines an attacker can trigger.

Each kind of message has a token bucket. A message that finds its bucket
empty is counted, not logged; the next one that gets through says how many
were held back, so the log shows a flood without being one.
"""

from __future__ import annotations

import logging
import time


class LogLimiter:
    def __init__(self, logger: logging.Logger, rate: float = 5.0, burst: int = 20):
        self._log = logger
        self._rate = rate
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._held: dict[str, int] = {}

    def _take(self, kind: str) -> bool:
        now = time.monotonic()
        tokens, last = self._buckets.get(kind, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens < 1.0:
            self._buckets[kind] = (tokens, now)
            self._held[kind] = self._held.get(kind, 0) + 1
            return False
        self._buckets[kind] = (tokens - 1.0, now)
        return True

    def log(self, level: int, kind: str, msg: str, *args: object) -> None:
        if not self._log.isEnabledFor(level) or not self._take(kind):
            return
        held = self._held.pop(kind, 0)
        if held:
            msg += " (%d similar messages suppressed)"
            args = (*args, held)
        self._log.log(level, msg, *args)
