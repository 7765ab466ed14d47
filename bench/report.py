"""REPORT.md, summary.json and the plots, from one run's results."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

GOAL_OFFLINE_VS_FWKNOPD = 10.0
GOAL_OFFLINE_VS_BARE = 0.80
GOAL_LIVE_ACCEPTED_PCT = 99.0
GOAL_LIVE_P99_MS = 50.0
GOAL_RSS_KB = 64 * 1024


def _fmt(v: Any, digits: int = 0) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float) and digits:
        return f"{v:,.{digits}f}"
    if isinstance(v, int | float):
        return f"{round(v):,}"
    return str(v)


def _mib(kb: Any) -> str:
    return f"{kb / 1024:,.1f} MiB" if kb else "n/a"


def _yes(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**yes**" if ok else "**no**")


def goals(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal with its measured figure and whether it is met."""
    rows: list[dict[str, Any]] = []
    off = r.get("offline")
    if off:
        spa, bare, fk = off["spa"], off["bare"], off["fwknopd_tuned"]
        ratio = spa["pps"] / fk["pps"] if fk.get("pps") else None
        rows.append({
            "goal": f"offline: at least {GOAL_OFFLINE_VS_FWKNOPD:.0f}x fwknopd's "
                    "tuned packets per second",
            "measured": f"spa {_fmt(spa['pps'])} pps vs fwknopd {_fmt(fk['pps'])} pps"
                        f" = {ratio:,.1f}x" if ratio else "n/a",
            "met": ratio is not None and ratio >= GOAL_OFFLINE_VS_FWKNOPD,
            "value": ratio,
        })  # fmt: skip
        frac = spa["pps"] / bare["pps"] if bare.get("pps") else None
        rows.append({
            "goal": "offline: within 80 % of a bare libpcap loop",
            "measured": f"{_fmt(spa['pps'])} of {_fmt(bare['pps'])} pps = "
                        f"{100 * frac:.0f} %" if frac else "n/a",
            "met": frac is not None and frac >= GOAL_OFFLINE_VS_BARE,
            "value": frac,
        })  # fmt: skip
        n = off["pcap"]["spa_knocks"]
        rows.append({
            "goal": "offline: every valid knock accepted",
            "measured": f"spa {spa['accepted']}/{n}; fwknopd tuned "
                        f"{fk['accepted']}/{off['pcap']['fwknop_knocks']}",
            "met": spa["accepted"] == n,
            "value": spa["accepted"],
        })  # fmt: skip
        full = off["spa_replay_full"]
        change = full["pps"] / spa["pps"] - 1
        fk_full = off["fwknopd_replay_full"]
        rows.append({
            "goal": f"offline: speed independent of a replay state of "
                    f"{_fmt(full['replay_entries'])} entries",
            "measured": f"spa {_fmt(full['pps'])} pps ({100 * change:+.0f} %); "
                        f"fwknopd {_fmt(fk_full['pps'])} pps "
                        f"({100 * (fk_full['pps'] / fk['pps'] - 1):+.0f} %)",
            "met": abs(change) <= 0.15,
            "value": change,
        })  # fmt: skip
    lv = r.get("live")
    if lv:
        spa_runs = [x for x in lv["runs"] if x["daemon"] == "spad"]
        if spa_runs:
            top = max(spa_runs, key=lambda x: x["flood_pps"] or 0)
            rows.append({
                "goal": "live: at the highest flood rate, at least 99 % of valid "
                        "knocks accepted",
                "measured": f"{top['accepted_pct']} % at {_fmt(top['flood_pps'])} pps",
                "met": top["accepted_pct"] >= GOAL_LIVE_ACCEPTED_PCT,
                "value": top["accepted_pct"],
            })  # fmt: skip
            p99 = top["latency_ms_p99"]
            rows.append({
                "goal": "live: knock-to-firewall p99 under 50 ms at that rate",
                "measured": f"p99 {_fmt(p99, 1)} ms (p50 "
                            f"{_fmt(top['latency_ms_p50'], 1)} ms)",
                "met": p99 is not None and p99 < GOAL_LIVE_P99_MS,
                "value": p99,
            })  # fmt: skip
        rss = lv.get("spad_peak_rss_kb") or 0
        rows.append({
            "goal": "memory: spad RSS under 64 MiB with a full replay window",
            "measured": f"peak {rss / 1024:.1f} MiB",
            "met": 0 < rss < GOAL_RSS_KB,
            "value": rss,
        })  # fmt: skip
    gr = r.get("grants")
    if gr:
        cost = gr["pktcost"]
        flat = cost.get("spa_flat_ratio")
        rows.append({
            "goal": f"{_fmt(r['sizes']['grants'])} live grants with constant "
                    "per-packet firewall cost",
            "measured": cost.get("summary", "n/a"),
            "met": flat is not None and flat <= 1.25,
            "value": flat,
        })  # fmt: skip
    return rows


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    out = [
        "# spa benchmark report",
        "",
        f"Run {m['date_utc']} on {m['cores']} cores ({m['cpu']}), kernel "
        f"{m['kernel']}, Python {m['python']}, {m['fwknopd']}. "
        + ("**Quick mode** (smoke-test sizes; figures not comparable with a "
           "full run). " if r.get("quick") else "")
        + f"Whole run: {r.get('elapsed_s')} s. Every figure below was measured in "
        "this run; spa and fwknopd saw the same inputs.",
        "",
        "## Goals",
        "",
        "| goal | measured | met |",
        "|---|---|---|",
    ]  # fmt: skip
    for g in goals(r):
        out.append(f"| {g['goal']} | {g['measured']} | {_yes(g['met'])} |")
    if "offline" in r:
        out += _offline_md(r["offline"])
    if "live" in r:
        out += _live_md(r["live"])
    if "grants" in r:
        out += _grants_md(r["grants"])
    if r.get("limits"):
        out += ["", "## What limits the figures", "", *r["limits"]]
    out.append("")
    return "\n".join(out)


def _offline_md(off: dict[str, Any]) -> list[str]:
    p = off["pcap"]
    lines = [
        "",
        "## Offline: one capture, read by each",
        "",
        f"{_fmt(p['frames'])} frames ({p['mix']} flood, plus {p['spa_knocks']} spa "
        f"and {p['fwknop_knocks']} fwknop knocks made by the stock client, spread "
        "evenly); spa judges packet age by capture time (`--clock pcap`), fwknopd "
        "has aging off in pcap mode. spa's rate is the capture thread's own time "
        "(the process total, Python start-up included, is shown too); the bare "
        "loop times its dispatch loop; fwknopd is timed as a process.",
        "",
        "| reader | packets | seconds | packets/s | CPU s | knocks accepted | "
        "vs bare loop | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    bare = off["bare"]["pps"]

    def row(name: str, x: dict[str, Any], secs: float, cpu: float, acc: str) -> None:
        lines.append(
            f"| {name} | {_fmt(x['packets'])} | {secs:.3f} | {_fmt(x['pps'])} | "
            f"{cpu:.2f} | {acc} | {100 * x['pps'] / bare:.0f} % | "
            f"{_mib(x.get('max_rss_kb'))} |"
        )

    b = off["bare"]
    row("bare libpcap loop", b, b["seconds"], b["cpu_s"], "-")
    for key, name in (("spa", "spa core"),
                      ("spa_replay_full", "spa core, replay state loaded")):
        x = off[key]
        row(name, x, x["capture_s"], x["capture_cpu_s"],
            f"{x['accepted']}/{p['spa_knocks']}")
        lines.append(
            f"| ↳ whole spad process | {_fmt(x['packets'])} | "
            f"{x['process_wall_s']:.3f} | {_fmt(x['process_pps'])} | "
            f"{x['cpu_s']:.2f} | | {100 * x['process_pps'] / bare:.0f} % | |"
        )
    for key, name in (("fwknopd_tuned", "fwknopd tuned"),
                      ("fwknopd_default", "fwknopd defaults"),
                      ("fwknopd_replay_full", "fwknopd tuned, digest cache loaded")):
        x = off[key]
        row(name, x, x["wall_s"], x["cpu_s"], f"{x['accepted']}/{x['knocks']}")
    kinds = off.get("kinds")
    if kinds:
        lines += [
            "",
            "Cost per packet by kind of flood (one file per kind, same reader "
            "settings; wall time per packet, spa's capture-thread CPU in "
            "brackets):",
            "",
            "| kind | bare loop ns | spa ns | spa over bare | where they end |",
            "|---|---:|---:|---:|---|",
        ]  # fmt: skip
        for kind, k in kinds.items():
            ends = ", ".join(f"{c[5:]} {_fmt(v)}" for c, v in k["counters"].items())
            lines.append(
                f"| {kind} | {k['bare_ns']} | {k['spa_ns']} ({k['spa_cpu_ns']}) | "
                f"{k['spa_ns'] - k['bare_ns']:+d} | {ends or 'kernel filter'} |"
            )
    runs = [f"{k} {x['runs']}" for k, x in off.items()
            if isinstance(x, dict) and "runs" in x]  # fmt: skip
    lines += ["", "Runs (packets/s): " + "; ".join(runs)]
    return lines


def _live_md(lv: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Live: veth lab under flood",
        "",
        f"Flood {lv['mix']} for {lv['flood_seconds']} s per run from the client "
        "namespace; valid knocks (each for its own port) spread through it. "
        "Latency: from the knock leaving the client to the grant appearing in "
        "the kernel's ruleset (`nft monitor`). 'delivered' counts flood packets "
        "that reached the server's IP layer.",
        "",
        "![accepted](live_accepted.png) ![p99](live_p99.png)",
        "",
        "| daemon | target pps | flood pps | delivered | accepted | p50 ms | "
        "p99 ms | max ms | daemon CPU | kernel drops | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for x in lv["runs"]:
        pc = x.get("pcap") or {}
        drops = pc.get("dropped")
        lines.append(
            f"| {x['daemon']} | {_fmt(x['rate_target']) if x['rate_target'] else 'max'}"
            f" | {_fmt(x['flood_pps'])} | {_fmt(x['delivered'])} | "
            f"{x['accepted']}/{x['knocks']} | {_fmt(x['latency_ms_p50'], 1)} | "
            f"{_fmt(x['latency_ms_p99'], 1)} | {_fmt(x['latency_ms_max'], 1)} | "
            f"{x['cpu_pct']} % | {_fmt(drops)} | "
            f"{_mib(x.get('peak_rss_kb'))} |"
        )
    return lines


def _grants_md(gr: dict[str, Any]) -> list[str]:
    spa, ipt, cost = gr["spa"], gr["iptables"], gr["pktcost"]
    note = (f" (extrapolated from {_fmt(ipt.get('measured'))})"
            if ipt.get("extrapolated") else "")  # fmt: skip
    lines = [
        "",
        "## Grants at scale",
        "",
        "| what | spa (nftables set) | fwknopd style (iptables rules) |",
        "|---|---:|---:|",
        f"| time to grant {_fmt(spa.get('grants'))} distinct sources | "
        f"{_fmt(spa.get('wall_s'), 2)} s ({_fmt(spa.get('grants_per_s'))}/s) | "
        f"{_fmt(ipt.get('total_s'), 1)} s ({_fmt(ipt.get('grants_per_s'))}/s)"
        f"{note} |",
    ]  # fmt: skip
    for row in cost.get("rows", []):
        lines.append(f"| {row['what']} | {row['spa']} | {row['iptables']} |")
    if cost.get("summary"):
        lines += ["", cost["summary"]]
    if cost.get("method"):
        lines += ["", cost["method"]]
    return lines


def plots(r: dict[str, Any], out: Path) -> list[Path]:
    lv = r.get("live")
    if not lv:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for x in lv["runs"]:
        series[x["daemon"]].append(x)
    paths = []
    for key, ylabel, name, logy in (
        ("accepted_pct", "valid knocks accepted (%)", "live_accepted.png", False),
        ("latency_ms_p99", "knock-to-firewall p99 (ms)", "live_p99.png", True),
    ):
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
        for daemon, runs in sorted(series.items()):
            pts = sorted((x["flood_pps"] or 0, x[key]) for x in runs
                         if x[key] is not None)  # fmt: skip
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                        label=daemon)  # fmt: skip
        ax.set_xlabel("flood rate reached (packets/s)")
        ax.set_ylabel(ylabel)
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
            ax.axhline(GOAL_LIVE_P99_MS, color="grey", ls="--", lw=0.8,
                       label="goal 50 ms")  # fmt: skip
        else:
            ax.set_ylim(-5, 105)
            ax.axhline(GOAL_LIVE_ACCEPTED_PCT, color="grey", ls="--", lw=0.8,
                       label="goal 99 %")  # fmt: skip
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out / name
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def write(r: dict[str, Any], out: Path) -> list[Path]:
    r = dict(r)
    r["goals"] = goals(r)
    summary = out / "summary.json"
    summary.write_text(json.dumps(r, indent=2, sort_keys=True, default=str))
    written = [summary, *plots(r, out)]
    md = out / "REPORT.md"
    md.write_text(markdown(r))
    return [md, *written]
