"""The SPSC ring (csrc/ring.c) under its C stress test, plain and under TSan.

csrc/tests/test_ring.c runs single-thread API checks, then a producer and a
consumer thread over the eventfd sleep protocol, and fails on any lost,
duplicated, reordered or corrupted record and on any lost wake-up.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.sanitize

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
CC = shutil.which("gcc") or shutil.which("cc") or "cc"
WARN = [
    "-std=c11",
    "-D_GNU_SOURCE",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wshadow",
    "-Wno-sign-conversion",
]
PLAIN = [
    "-O2",
    "-fstack-protector-strong",
    "-D_FORTIFY_SOURCE=2",
    "-fvisibility=hidden",
]
# TSan does not model atomic_thread_fence and GCC says so (-Wtsan); the fence
# only orders the wake-up flag, the records' acquire/release it does see.
TSAN = ["-O2", "-g", "-fsanitize=thread", "-Wno-tsan"]

# 10 M records take about 3 s plain and 20 s under TSan on two cores.
RECORDS = 10_000_000
SUMMARY = re.compile(r"^test_ring: (PASS|FAIL) records=(\d+) .*$", re.M)


def build(tmp_path: Path, name: str, flags: list[str]) -> Path:
    exe = tmp_path / name
    cmd = [
        CC,
        *WARN,
        *flags,
        str(CSRC / "tests" / "test_ring.c"),
        str(CSRC / "ring.c"),
        "-o",
        str(exe),
        "-pthread",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"compile failed: {' '.join(cmd)}\n{res.stderr}"
    return exe


@pytest.mark.parametrize(
    ("variant", "flags", "records"),
    [("plain", PLAIN, RECORDS), ("tsan", TSAN, RECORDS)],
)
def test_ring_stress(
    tmp_path: Path, variant: str, flags: list[str], records: int
) -> None:
    exe = build(tmp_path, f"test_ring_{variant}", flags)
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
