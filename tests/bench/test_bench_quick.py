"""make bench-quick as a smoke test of the benchmark harness.

It asserts that the harness works end to end (both daemons run through every
part, the report, the JSON and the plots are written, knocks are counted),
not how fast anything is: speeds belong in the report, not in tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.netns.conftest import require_root

pytestmark = [pytest.mark.bench, pytest.mark.netns]
ROOT = Path(__file__).resolve().parents[2]


def test_bench_quick_produces_a_complete_report(tmp_path: Path) -> None:
    require_root()
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[" in proc.stderr and "done in" in proc.stderr  # progress display

    summary = json.loads((out / "summary.json").read_text())
    report = (out / "REPORT.md").read_text()
    for png in ("live_accepted.png", "live_p99.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    off = summary["offline"]
    knocks = off["pcap"]["spa_knocks"]
    assert off["spa"]["accepted"] == knocks
    assert off["spa_replay_full"]["accepted"] == knocks
    assert off["fwknopd_tuned"]["accepted"] == off["pcap"]["fwknop_knocks"]
    for key in ("bare", "spa", "fwknopd_tuned", "fwknopd_default",
                "fwknopd_replay_full"):  # fmt: skip
        assert off[key]["pps"] > 0, key

    daemons = {r["daemon"] for r in summary["live"]["runs"]}
    assert daemons == {"spad", "fwknopd (stock)"}
    for run in summary["live"]["runs"]:
        assert run["flood_sent"] > 0
        assert 0 <= run["accepted"] <= run["knocks"]
    assert any(r["accepted"] > 0 for r in summary["live"]["runs"]
               if r["daemon"] == "spad")  # fmt: skip
    assert summary["live"]["spad_peak_rss_kb"] > 0

    gr = summary["grants"]
    assert gr["spa"]["elements"] == gr["spa"]["grants"]
    assert summary["goals"] and all("met" in g for g in summary["goals"])
    assert "## Goals" in report and "fwknopd" in report
    assert str(summary["machine"]["cores"]) in report
