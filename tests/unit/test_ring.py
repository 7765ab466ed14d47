"""The SPSC ring (csrc/ring.c) under its C stress test, plain and under TSan.

csrc/tests/test_ring.c runs single-thread API checks, then a producer and a
consumer thread over the eventfd sleep protocol, and fails on any lost,
duplicated, reordered or corrupted record and on any lost wake-up.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests import cbuild

pytestmark = pytest.mark.sanitize

# 10 M records take about 3 s plain and 20 s under TSan on two cores.
RECORDS = 10_000_000
SUMMARY = re.compile(r"^test_ring: (PASS|FAIL) records=(\d+) .*$", re.M)


@pytest.mark.parametrize(
    ("variant", "sanitize", "records"),
    [("plain", None, RECORDS), ("tsan", "thread", RECORDS)],
)
def test_ring_stress(
    tmp_path: Path, variant: str, sanitize: cbuild.Sanitize, records: int
) -> None:
    exe = cbuild.build(
        [cbuild.CTESTS / "test_ring.c", cbuild.CSRC / "ring.c"],
        tmp_path / f"test_ring_{variant}",
        sanitize=sanitize,
        extra=["-pthread"],
    )
    env = {**os.environ, "TSAN_OPTIONS": "halt_on_error=1 exitcode=66"}
    res = subprocess.run(
        [str(exe), str(records)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    out = f"{res.stdout}\n{res.stderr[-4000:]}"
    assert res.returncode == 0, out
    assert "ThreadSanitizer" not in res.stderr, out
    m = SUMMARY.search(res.stdout)
    assert m, out
    assert m.group(1) == "PASS", out
    assert int(m.group(2)) == records, out
