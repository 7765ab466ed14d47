"""make bench: spa and the stock fwknopd on the same inputs, in one run.

Three parts, every figure measured here and now:

* offline: one pcap of flood packets with valid knocks of both formats
  spread through it, read by a bare libpcap loop (the limit), by spa's core
  (``spad --pcap-file``) and by fwknopd in pcap-file test mode, defaults and
  tuned; then both again with a replay state of 100,000 entries;
* live: a veth lab, a flood at each rate from 10,000 pps up to the most this
  machine generates, valid knocks spread through it, once against spad and
  once against fwknopd: knocks accepted, knock-to-firewall latency (from the
  send to the change appearing in the kernel's ruleset), daemon CPU, drops;
* grants at scale: 10,000 grants, and the cost a packet pays to pass the
  firewall with 10,000 grants in nftables sets and in iptables rules.

Writes bench/results/REPORT.md, summary.json and the PNG plots.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import fwknop, report
from bench.lab import CLI4, CLK_TCK, SRV4, Lab, Monitor, cpu_ticks, lab, peak_rss_kb
from spa import protocol as P
from spa.replaystore import ReplayStore

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "bench" / "build"
BIN = Path(sys.executable).parent
SPAD = str(BIN / "spad")
SPA_PORT = 62201
MIX = "garbage=3,spaid=3,b64=3,replay=1"
KINDS = ("garbage", "spashape", "b64", "replay", "spaid")
KNOCK_PORT_BASE = 20001


@dataclass(frozen=True)
class Sizes:
    offline_packets: int
    offline_knocks: int
    offline_runs: int
    fwknopd_default_packets: int
    fwknopd_cache_packets: int
    kind_packets: int
    replay_entries: int
    rates: Sequence[int]  # 0 = as fast as the generator goes
    flood_seconds: float
    live_knocks: int
    fwknopd_live_modes: Sequence[str]
    grants: int
    grant_measure: int
    pktcost_packets: int


FULL = Sizes(
    offline_packets=1_000_000, offline_knocks=100, offline_runs=3,
    fwknopd_default_packets=10_000, fwknopd_cache_packets=4_000,
    kind_packets=200_000, replay_entries=100_000,
    rates=(10_000, 50_000, 100_000, 250_000, 0), flood_seconds=6.0,
    live_knocks=50, fwknopd_live_modes=("stock", "tuned"),
    grants=10_000, grant_measure=1_000, pktcost_packets=300_000,
)  # fmt: skip
QUICK = Sizes(
    offline_packets=50_000, offline_knocks=20, offline_runs=1,
    fwknopd_default_packets=1_000, fwknopd_cache_packets=300,
    kind_packets=20_000, replay_entries=10_000, rates=(10_000, 0),
    flood_seconds=2.0, live_knocks=10, fwknopd_live_modes=("stock",), grants=500,
    grant_measure=100, pktcost_packets=30_000,
)  # fmt: skip


class Progress:
    """One line per step on stderr, with the time since the start."""

    def __init__(self, total: int) -> None:
        self.t0 = time.monotonic()
        self.total = total
        self.step = 0

    def __call__(self, msg: str, *, advance: bool = True) -> None:
        if advance:
            self.step += 1
        t = time.monotonic() - self.t0
        head = f"[{int(t) // 60:02d}:{int(t) % 60:02d}] [{self.step}/{self.total}]"
        print(f"{head} {msg}", file=sys.stderr, flush=True)

    def note(self, msg: str) -> None:
        self(f"    {msg}", advance=False)


def run(argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    kw.setdefault("check", True)
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(list(argv), **kw)


def last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            data: dict[str, Any] = json.loads(line)
            return data
    raise ValueError(f"no JSON line in output: {text[-300:]!r}")


# -- spa side ----------------------------------------------------------------
@dataclass
class SpaCred:
    cred_id: bytes = field(default_factory=lambda: secrets.token_bytes(8))
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def knock(self, port: int = 22, open_for: int = 60) -> bytes:
        req = P.Request(
            ports=(("tcp", port),), open_for=open_for,
            destination=ipaddress.ip_address(SRV4),
        )
        return P.encode_packet(self.cred_id, self.secret, req)


def spa_config(
    path: Path, cred: SpaCred, *, interface: str = "lo", firewall: str = "none",
    state_dir: Path, replay_capacity: int = 65536, allow: Sequence[int] = (22,),
    table: str = "spa",
) -> Path:
    import base64

    ports = ", ".join(f'"tcp/{p}"' for p in allow)
    path.write_text(
        "[server]\n"
        f'interface = "{interface}"\n'
        f"port = {SPA_PORT}\n"
        f'firewall = "{firewall}"\n'
        f'state_dir = "{state_dir}"\n'
        f"replay_capacity = {replay_capacity}\n"
        f'nft_table = "{table}"\n'
        "\n[[credential]]\n"
        'name = "bench"\n'
        f'id = "{cred.cred_id.hex()}"\n'
        f'secret = "{base64.b64encode(cred.secret).decode()}"\n'
        f"allow = [{ports}]\n"
        "max_open = 300\n"
    )
    path.chmod(0o600)
    return path


def preload_journal(state_dir: Path, n: int, lifetime_s: float = 3600) -> None:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    expires = time.time_ns() // 1000 + int(lifetime_s * 1e6)
    store = ReplayStore(state_dir)
    store.append((secrets.token_bytes(16), expires) for _ in range(n))
    store.close()


def spad_offline(cfg: Path, pcap: Path, frames: int, state: Path) -> dict[str, Any]:
    # GNU time for the peak RSS: a fork of this (large) process would
    # otherwise lend its own high-water mark to the child's rusage
    rss_file = state.with_suffix(".rss")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["/usr/bin/time", "-f", "%M", "-o", str(rss_file),
         SPAD, "--config", str(cfg), "--pcap-file", str(pcap), "--json",
         "--clock", "pcap", "--state-dir", str(state), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _, status, rusage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"spad --pcap-file failed: {err.strip()[-400:]}")
    s = last_json(out)
    max_rss = int(rss_file.read_text().split()[-1])
    cap = float(s["capture_seconds"])
    return {
        "packets": frames,
        "capture_s": cap,
        "capture_cpu_s": float(s["capture_cpu_seconds"]),
        "pps": round(frames / cap),
        "process_wall_s": round(wall, 3),
        "process_pps": round(frames / wall),
        "cpu_s": round(rusage.ru_utime + rusage.ru_stime, 3),
        "max_rss_kb": max_rss,
        "accepted": int(s["accepted"]),
        "granted": int(s["granted"]),
        "summary": s,
    }


def bareloop(pcap: Path) -> dict[str, Any]:
    return last_json(run([str(BUILD / "bareloop"), str(pcap)]).stdout)


def make_pcap(
    path: Path, count: int, spa: SpaCred, knocks: Sequence[bytes], seed: int
) -> dict[str, Any]:
    knock_file = path.with_suffix(".knocks")
    knock_file.write_text("".join(f"{k.hex()} {CLI4}\n" for k in knocks))
    res = last_json(run([
        str(BUILD / "flood"), "--pcap", str(path), "--count", str(count),
        "--mix", MIX, "--spa-id", spa.cred_id.hex(),
        "--replay", spa.knock().hex() if not knocks else knocks[0].hex(),
        "--knocks", str(knock_file), "--src", "10.201.0.0/24", "--dst", SRV4,
        "--port", str(SPA_PORT), "--seed", str(seed),
    ]).stdout)  # fmt: skip
    res["frames"] = count + len(knocks)
    return res


def offline(work: Path, sz: Sizes, prog: Progress) -> dict[str, Any]:
    out: dict[str, Any] = {}
    spa = SpaCred()
    key, hmac = fwknop.gen_keys()
    prog(f"offline: {sz.offline_knocks} spa knocks and {sz.offline_knocks} "
         "fwknop knocks (stock client)")  # fmt: skip
    spa_knocks = [spa.knock() for _ in range(sz.offline_knocks)]
    fk_knocks = fwknop.gen_knocks(
        sz.offline_knocks, key, hmac, server="127.0.0.1", allow_ip=CLI4
    )
    prog(f"offline: writing a pcap of {sz.offline_packets:,} flood packets "
         f"({MIX}) with the knocks spread through it")  # fmt: skip
    pcap = work / "offline.pcap"
    gen = make_pcap(pcap, sz.offline_packets, spa, [*spa_knocks, *fk_knocks], 1)
    frames = gen["frames"]
    out["pcap"] = {"frames": frames, "mix": MIX, "spa_knocks": len(spa_knocks),
                   "fwknop_knocks": len(fk_knocks), "write_s": gen.get("seconds"),
                   "bytes": pcap.stat().st_size}  # fmt: skip

    prog("offline: bare libpcap loop (the limit)")
    bare = [bareloop(pcap) for _ in range(sz.offline_runs)]
    out["bare"] = _median_run(bare, "pps")
    prog.note(f"bare loop: {out['bare']['pps']:,} pps")

    prog("offline: spa core (spad --pcap-file)")
    cfg = spa_config(work / "spad-offline.toml", spa, state_dir=work / "st0",
                     replay_capacity=4 * sz.replay_entries)  # fmt: skip
    runs = []
    for i in range(sz.offline_runs):
        state = work / f"st-plain-{i}"
        runs.append(spad_offline(cfg, pcap, frames, state))
    out["spa"] = _median_run(runs, "pps")
    prog.note(f"spa: {out['spa']['pps']:,} pps, accepted "
              f"{out['spa']['accepted']}/{len(spa_knocks)}")  # fmt: skip

    prog(f"offline: spa with {sz.replay_entries:,} replay entries loaded")
    runs = []
    for i in range(sz.offline_runs):
        state = work / f"st-full-{i}"
        preload_journal(state, sz.replay_entries)
        runs.append(spad_offline(cfg, pcap, frames, state))
    out["spa_replay_full"] = _median_run(runs, "pps")
    out["spa_replay_full"]["replay_entries"] = sz.replay_entries
    prog.note(f"spa with replay state: {out['spa_replay_full']['pps']:,} pps")

    prog("offline: fwknopd tuned (PCAP_DISPATCH_COUNT 1000000, PCAP_LOOP_SLEEP 1)")
    out["fwknopd_tuned"] = fwknop.run_offline(
        pcap, frames, work / "fk-tuned", key_b64=key, hmac_b64=hmac, tuned=True
    )
    out["fwknopd_tuned"]["knocks"] = len(fk_knocks)
    prog.note(f"fwknopd tuned: {out['fwknopd_tuned']['pps']:,} pps, accepted "
              f"{out['fwknopd_tuned']['accepted']}/{len(fk_knocks)}")  # fmt: skip

    n_small = max(1, sz.offline_knocks // 10)
    prog(f"offline: fwknopd defaults on {sz.fwknopd_default_packets:,} packets "
         "(it sleeps 100 ms per 100 packets)")  # fmt: skip
    small = work / "offline-small.pcap"
    gen = make_pcap(small, sz.fwknopd_default_packets, spa,
                    [*spa_knocks[:n_small], *fk_knocks[:n_small]], 2)  # fmt: skip
    out["fwknopd_default"] = fwknop.run_offline(
        small, gen["frames"], work / "fk-default", key_b64=key, hmac_b64=hmac,
        tuned=False,
    )
    out["fwknopd_default"]["knocks"] = n_small
    prog.note(f"fwknopd defaults: {out['fwknopd_default']['pps']:,} pps")

    prog(f"offline: fwknopd tuned with {sz.replay_entries:,} digest-cache entries, "
         f"on {sz.fwknopd_cache_packets:,} packets (its lookup is a linear scan)")
    cache_pcap = work / "offline-cache.pcap"
    gen = make_pcap(cache_pcap, sz.fwknopd_cache_packets, spa,
                    [*spa_knocks[:n_small], *fk_knocks[:n_small]], 3)  # fmt: skip
    out["fwknopd_replay_full"] = fwknop.run_offline(
        cache_pcap, gen["frames"], work / "fk-cache", key_b64=key, hmac_b64=hmac,
        tuned=True, digest_entries=sz.replay_entries,
    )
    out["fwknopd_replay_full"]["replay_entries"] = sz.replay_entries
    out["fwknopd_replay_full"]["knocks"] = n_small
    prog.note(f"fwknopd with cache: {out['fwknopd_replay_full']['pps']:,} pps")
    for f in (pcap, small, cache_pcap):
        f.unlink(missing_ok=True)

    prog(f"offline: cost per packet by kind ({sz.kind_packets:,} packets each)")
    out["kinds"] = {}
    for kind in KINDS:
        f = work / f"kind-{kind}.pcap"
        last_json(run([
            str(BUILD / "flood"), "--pcap", str(f), "--count", str(sz.kind_packets),
            "--mix", f"{kind}=1", "--spa-id", spa.cred_id.hex(),
            "--replay", spa_knocks[0].hex(), "--dst", SRV4, "--seed", "7",
        ]).stdout)  # fmt: skip
        b = bareloop(f)
        x = spad_offline(cfg, f, sz.kind_packets, work / f"st-kind-{kind}")
        out["kinds"][kind] = {
            "bare_ns": round(1e9 * b["seconds"] / sz.kind_packets),
            "spa_ns": round(1e9 * x["capture_s"] / sz.kind_packets),
            "spa_cpu_ns": round(1e9 * x["capture_cpu_s"] / sz.kind_packets),
            "counters": {k: v for k, v in x["summary"].items()
                         if k.startswith("drop_") and v},
        }  # fmt: skip
        f.unlink()
        k = out["kinds"][kind]
        prog.note(f"{kind}: bare {k['bare_ns']} ns, spa {k['spa_ns']} ns per packet")
    return out


def _median_run(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r[key])
    med = dict(ordered[len(ordered) // 2])
    med["runs"] = [r[key] for r in runs]
    return med


# -- live --------------------------------------------------------------------
SPA_GRANT_RE = re.compile(
    r"add element inet spa allow4 \{ " + re.escape(CLI4) + r" \. tcp \. (\d+) "
)


@dataclass
class LiveDaemon:
    name: str
    pid: int
    grant_re: re.Pattern[str]
    knocks: list[tuple[int, bytes]]
    stop: Callable[[], None]
    stats: Callable[[], dict[str, Any]]


def _start_spad(lb: Lab, work: Path, sz: Sizes, spa: SpaCred) -> LiveDaemon:
    ports = [KNOCK_PORT_BASE + i for i in range(sz.live_knocks)]
    state = Path(tempfile.mkdtemp(prefix="spad-live-", dir=work))
    # a full replay window: half the set's capacity holds live entries
    preload_journal(state, 32_768 if sz is FULL else 2_048)
    cfg = spa_config(work / "spad-live.toml", spa, interface=lb.srv_if,
                     firewall="nftables", state_dir=state, allow=ports)  # fmt: skip
    log = open(work / "spad-live.log", "ab")  # noqa: SIM115
    proc = lb.popen(lb.srv, [SPAD, "--config", str(cfg), "-q"], stdout=log,
                    stderr=log)  # fmt: skip
    deadline = time.monotonic() + 15
    while not (state / "status.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            log.close()
            text = (work / "spad-live.log").read_text()[-2000:]
            raise RuntimeError(f"spad did not start:\n{text}")
        time.sleep(0.05)

    def stop() -> None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        log.close()

    def stats() -> dict[str, Any]:
        st: dict[str, Any] = json.loads((state / "status.json").read_text())
        return {"counters": st["counters"], "pcap": st["pcap"],
                "peak_rss_kb": peak_rss_kb(proc.pid)}  # fmt: skip

    knocks = [(p, spa.knock(p)) for p in ports]
    return LiveDaemon("spad", proc.pid, SPA_GRANT_RE, knocks, stop, stats)


def _start_fwknopd(
    lb: Lab, work: Path, sz: Sizes, mode: str, keys: tuple[str, str]
) -> LiveDaemon:
    ports = [KNOCK_PORT_BASE + i for i in range(sz.live_knocks)]
    packets = fwknop.gen_knocks(
        len(ports), keys[0], keys[1], server="127.0.0.1", allow_ip=CLI4,
        ports=[f"tcp/{p}" for p in ports],
    )
    d = fwknop.LiveFwknopd(
        lb.srv, lb.srv_if, work / f"fwknopd-{mode}", key_b64=keys[0],
        hmac_b64=keys[1], tuned=(mode == "tuned"),
    )
    d.__enter__()

    def stop() -> None:
        d.__exit__(None, None, None)

    def stats() -> dict[str, Any]:
        return {"peak_rss_kb": peak_rss_kb(d.pid)}

    return LiveDaemon(
        f"fwknopd ({mode})", d.pid, re.compile(fwknop.GRANT_MONITOR_RE),
        list(zip(ports, packets, strict=True)), stop, stats,
    )


def live_run(
    lb: Lab, daemon: LiveDaemon, rate: int, sz: Sizes, spa_id: bytes,
    replay: bytes,
) -> dict[str, Any]:
    mon = Monitor(lb, lb.srv)
    secs = sz.flood_seconds
    count = int(rate * secs) if rate else 50_000_000
    d0, c0, t0 = lb.delivered(), cpu_ticks(daemon.pid), time.monotonic()
    flood = lb.popen(lb.cli, [
        str(BUILD / "flood"), "--send", SRV4, "--port", str(SPA_PORT),
        "--count", str(count), "--seconds", str(secs), "--rate", str(rate),
        "--mix", MIX, "--spa-id", spa_id.hex(), "--replay", replay.hex(),
    ], stdout=subprocess.PIPE, text=True)  # fmt: skip
    spec = {
        "dst": SRV4, "port": SPA_PORT, "start_delay": 0.3,
        "interval": max(0.01, (secs - 0.6) / max(1, len(daemon.knocks))),
        "knocks": [[p, k.hex()] for p, k in daemon.knocks],
    }
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    knocker = lb.run(lb.cli, [sys.executable, "-m", "bench.knocker"],
                     input=json.dumps(spec), env=env, timeout=secs + 30)  # fmt: skip
    sent = {int(r["tag"]): float(r["sent"])
            for r in map(json.loads, knocker.stdout.splitlines())}  # fmt: skip
    fout, _ = flood.communicate(timeout=secs + 30)
    fl = last_json(fout)
    t1, c1, d1 = time.monotonic(), cpu_ticks(daemon.pid), lb.delivered()
    # grace: what is still queued may land; then stop looking
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        if len(mon.matches(daemon.grant_re)) >= len(sent):
            break
        time.sleep(0.1)
    seen = mon.matches(daemon.grant_re)
    mon.stop()
    lat = sorted(1000 * (seen[p] - sent[p]) for p in sent if p in seen)
    extra = daemon.stats()
    return {
        "daemon": daemon.name,
        "rate_target": rate,
        "flood_sent": fl.get("sent"),
        "flood_pps": fl.get("pps"),
        "delivered": d1 - d0,
        "knocks": len(sent),
        "accepted": len(lat),
        "accepted_pct": round(100.0 * len(lat) / len(sent), 1) if sent else 0.0,
        "latency_ms_p50": round(_pct(lat, 50), 2) if lat else None,
        "latency_ms_p99": round(_pct(lat, 99), 2) if lat else None,
        "latency_ms_max": round(lat[-1], 2) if lat else None,
        "cpu_pct": round(100.0 * (c1 - c0) / CLK_TCK / (t1 - t0), 1),
        **extra,
    }


def _pct(values: Sequence[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def live(work: Path, sz: Sizes, prog: Progress) -> dict[str, Any]:
    keys = fwknop.gen_keys()
    # one flood for both daemons: its known-id packets carry spad's real
    # credential id, its replays are a genuine spad knock (tcp/22, which the
    # policy refuses, so that the replayed copy that gets through opens
    # nothing the measurement looks at)
    spa = SpaCred()
    results: list[dict[str, Any]] = []
    peak_rss = 0
    with lab() as lb:
        for rate in sz.rates:
            label = f"{rate:,} pps" if rate else "max rate"
            prog(f"live: flood at {label}, {sz.live_knocks} knocks, spad")
            replay = spa.knock()
            d = _start_spad(lb, work, sz, spa)
            try:
                res = live_run(lb, d, rate, sz, spa.cred_id, replay)
            finally:
                d.stop()
            peak_rss = max(peak_rss, int(res.get("peak_rss_kb", 0)))
            results.append(res)
            prog.note(_live_line(res))
            for mode in sz.fwknopd_live_modes:
                prog(f"live: flood at {label}, {sz.live_knocks} knocks, "
                     f"fwknopd ({mode})")  # fmt: skip
                d = _start_fwknopd(lb, work, sz, mode, keys)
                try:
                    res = live_run(lb, d, rate, sz, spa.cred_id, replay)
                finally:
                    d.stop()
                results.append(res)
                prog.note(_live_line(res))
    return {"runs": results, "spad_peak_rss_kb": peak_rss,
            "flood_seconds": sz.flood_seconds, "mix": MIX}  # fmt: skip


def _live_line(r: dict[str, Any]) -> str:
    return (
        f"{r['daemon']}: flood {r['flood_pps']:,} pps, accepted "
        f"{r['accepted']}/{r['knocks']}, p50 {r['latency_ms_p50']} ms, "
        f"p99 {r['latency_ms_p99']} ms, cpu {r['cpu_pct']}%"
    )


# -- grants ------------------------------------------------------------------
def grants(work: Path, sz: Sizes, prog: Progress) -> dict[str, Any]:
    from bench import grants as grants_mod

    out: dict[str, Any] = {}
    quick = sz is QUICK
    prog(f"grants: {sz.grants:,} distinct sources through spad into nftables")
    out["spa"] = grants_mod.spa_grant_time(
        work / "gr-spa", n=sz.grants, progress=prog.note
    )
    prog.note(f"spa: {out['spa']['wall_s']} s for {sz.grants:,} grants")
    prog(f"grants: fwknopd's way, iptables processes per grant "
         f"({sz.grant_measure:,} measured)")  # fmt: skip
    out["iptables"] = grants_mod.iptables_grant_time(
        work / "gr-ipt", n=sz.grants, measure=sz.grant_measure,
        progress=prog.note,
    )
    prog("grants: per-packet firewall cost, nftables set vs iptables rules")
    out["pktcost"] = grants_mod.per_packet_cost(
        work / "gr-cost", n_rules=sz.grants, packets=sz.pktcost_packets,
        repeats=1 if quick else 3, max_seconds=2.0 if quick else 5.0,
        legacy=not quick, progress=prog.note,
    )
    return out


# -- what limits the figures -------------------------------------------------
def limits(r: dict[str, Any]) -> list[str]:
    """Plain statements, from this run's own measurements, of what bounds
    each figure, written whether or not its goal is met."""
    out: list[str] = []
    off = r.get("offline")
    if off and off.get("kinds"):
        kinds = off["kinds"]
        spa, bare = off["spa"], off["bare"]
        mix = dict(kv.split("=") for kv in MIX.split(","))
        total = sum(int(w) for w in mix.values())
        extra = {k: kinds[k]["spa_ns"] - kinds[k]["bare_ns"] for k in kinds}
        worst = max(extra, key=lambda k: extra[k])
        share = {k: int(w) / total for k, w in mix.items()}
        cost = sum(share[k] * extra[k] for k in share if k in extra)
        out.append(
            f"- Offline, spa read the mixed capture at {spa['pps']:,} packets/s, "
            f"{100 * spa['pps'] / bare['pps']:.0f} % of the bare loop's "
            f"{bare['pps']:,}. Per kind, spa adds "
            + ", ".join(f"{k} {v:+d} ns" for k, v in extra.items())
            + f" per packet over the bare loop on the same file. The costly kind is "
            f"'{worst}': a packet with a configured credential id and a current "
            "timestamp must pay one keyed BLAKE3 over 139 bytes before it can be "
            "refused, and no filter can tell it from a genuine knock without the "
            f"key. In this mix ({MIX}) the kinds' extra costs add up to about "
            f"{cost:.0f} ns per packet on average."
        )
    lv = r.get("live")
    if lv:
        spa_runs = [x for x in lv["runs"] if x["daemon"] == "spad"]
        if spa_runs:
            top = max(spa_runs, key=lambda x: x["flood_pps"] or 0)
            out.append(
                f"- Live, the highest flood rate this machine generated was "
                f"{top['flood_pps']:,} packets/s (flood tool and kernel send path "
                f"on one core); spad used {top['cpu_pct']} % of a core at that rate "
                f"and the kernel dropped {top.get('pcap', {}).get('dropped', 'n/a')} "
                "packets. The capture thread was not the bottleneck, so spreading "
                "capture over threads with PACKET_FANOUT would not change these "
                "figures; the offline per-kind costs above say at what rate one "
                "core would become the limit."
            )
        fk = [x for x in lv["runs"] if x["daemon"].startswith("fwknopd")]
        if fk:
            worst = min(fk, key=lambda x: x["accepted_pct"])
            out.append(
                f"- fwknopd: {worst['daemon']} accepted {worst['accepted_pct']} % at "
                f"{worst['flood_pps']:,} packets/s. Its loop handles "
                "PCAP_DISPATCH_COUNT packets and then sleeps PCAP_LOOP_SLEEP, "
                "logs every candidate, and scans its digest cache linearly."
            )
    return out


# -- main --------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f
                        if ln.startswith("model name")), "")  # fmt: skip
    except OSError:
        pass
    fk = run(["fwknopd", "--version"], check=False).stdout.strip().splitlines()
    return {
        "cores": os.cpu_count(), "kernel": platform.release(), "cpu": cpu,
        "python": platform.python_version(), "fwknopd": fk[0] if fk else "",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--parts", default="offline,live,grants")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench: run as root (namespaces, firewalls)", file=sys.stderr)
        return 1
    # SIGTERM unwinds like Ctrl-C, so the lab's namespaces and processes go
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sz = QUICK if args.quick else FULL
    parts = [p for p in args.parts.split(",") if p]
    steps = {"offline": 9, "live": len(sz.rates) * (1 + len(sz.fwknopd_live_modes)),
             "grants": 3}  # fmt: skip
    prog = Progress(1 + sum(steps[p] for p in parts))
    prog("building bench/build/flood and bareloop")
    run(["make", "-s", "-C", str(ROOT / "bench")])
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick,
                               "sizes": asdict(sz)}  # fmt: skip
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="spa-bench-") as tmp:
        work = Path(tmp)
        for part in parts:
            fn = {"offline": offline, "live": live, "grants": grants}[part]
            (work / part).mkdir()
            results[part] = fn(work / part, sz, prog)
    results["elapsed_s"] = round(time.monotonic() - t0, 1)
    results["limits"] = limits(results)
    args.out.mkdir(parents=True, exist_ok=True)
    paths = report.write(results, args.out)
    prog.note(f"done in {results['elapsed_s']} s: " + ", ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
