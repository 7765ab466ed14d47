"""Rate-limited logging: a flood of messages yields a bounded number of lines."""

from __future__ import annotations

import logging
import re
import time

import pytest

from spa.ratelimit import LogLimiter

LOGGER = "spa.test.ratelimit"
SUPPRESSED = re.compile(r" \((\d+) similar messages suppressed\)$")


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> logging.Logger:
    caplog.set_level(logging.INFO, logger=LOGGER)
    return logging.getLogger(LOGGER)


def test_flood_is_bounded_then_reported(
    log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    rate, burst, flood = 5.0, 20, 10_000
    limiter = LogLimiter(log, rate=rate, burst=burst)
    start = time.monotonic()
    for i in range(flood):
        limiter.log(logging.WARNING, "bad_mac", "bad tag from %s (%d)", "192.0.2.7", i)
    elapsed = time.monotonic() - start
    logged = [r.getMessage() for r in caplog.records]
    assert burst <= len(logged) <= burst + rate * elapsed
    assert logged[:burst] == [f"bad tag from 192.0.2.7 ({i})" for i in range(burst)]

    caplog.clear()
    time.sleep(1.5 / rate)  # one token back
    limiter.log(logging.WARNING, "bad_mac", "bad tag from %s (%d)", "192.0.2.7", flood)
    (line,) = [r.getMessage() for r in caplog.records]
    m = SUPPRESSED.search(line)
    assert m is not None
    assert line.startswith(f"bad tag from 192.0.2.7 ({flood})")
    suppressed = int(m.group(1))
    assert suppressed == flood - len(logged)

    caplog.clear()
    time.sleep(1.5 / rate)
    limiter.log(logging.WARNING, "bad_mac", "once more")
    assert [r.getMessage() for r in caplog.records] == ["once more"]


def test_kinds_have_their_own_buckets(
    log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = LogLimiter(log, rate=1.0, burst=3)
    for _ in range(100):
        limiter.log(logging.WARNING, "replay", "replay")
    limiter.log(logging.INFO, "granted", "granted alice")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["replay"] * 3 + ["granted alice"]
    assert [r.levelno for r in caplog.records][-1] == logging.INFO


def test_disabled_level_neither_logs_nor_counts(
    log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = LogLimiter(log, rate=1.0, burst=2)
    for _ in range(50):
        limiter.log(logging.DEBUG, "malformed", "debug detail")
    limiter.log(logging.WARNING, "malformed", "first")
    limiter.log(logging.WARNING, "malformed", "second")
    assert [r.getMessage() for r in caplog.records] == ["first", "second"]
