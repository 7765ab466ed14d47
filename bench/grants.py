"""Grants at scale: spa's nftables sets against fwknopd's iptables rules.

DESIGN section 7 asks for "10,000 live authorizations with constant
per-packet firewall cost (nftables sets)".  Three measurements, each in
network namespaces of its own (named ``gr-*``, addresses in 10.201.0.0/16),
removed again on the way out, failure included:

* :func:`spa_grant_time`: the real pipeline.  ``spad --pcap-file`` reads a
  capture of n valid knocks from n distinct sources and writes n elements
  into its ``allow4`` set; the same capture with ``--firewall none`` gives
  the firewall's share of the time.
* :func:`iptables_grant_time`: fwknopd's way, the four ``iptables`` process
  spawns it makes per grant (chain check ``-L``, jump check ``-C``, rule
  check ``-C``, then ``-A``), run against a chain that keeps growing.
* :func:`per_packet_cost`: what one packet pays to pass the input hook with
  no firewall, with spa's table holding 100 or n elements, and with n
  fwknopd-shaped iptables rules, the packet's own rule last.  The sender is
  ``bench/pktcost.c``; see :func:`per_packet_cost` for why its CPU time is
  the figure to compare.

Every function returns a dict of measured figures and reports progress only
through its ``progress`` callback.  ``python -m bench.grants`` runs all
three with bounded sizes and prints the results as JSON.  Needs root.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import itertools
import json
import os
import secrets
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from spa import protocol as P
from tests import frames as fr
from tests.pcapfile import write_pcap

Progress = Callable[[str], None]

ROOT: Final = Path(__file__).resolve().parents[1]
PKTCOST_SRC: Final = Path(__file__).resolve().with_name("pktcost.c")
CFLAGS: Final = ("-std=c11", "-D_GNU_SOURCE", "-O2", "-Wall", "-Wextra", "-Werror")

SPA_PORT: Final = 62201
SINK_PORT: Final = 5001
SERVER4: Final = "10.201.0.1"
CLIENT4: Final = "10.201.0.2"
PREFIX_LEN: Final = 24
# Grantees: 32,766 host addresses, none of them the client's.
GRANTEES: Final = ipaddress.IPv4Network("10.201.128.0/17")
SERVER_MAC: Final = "02:c9:00:00:00:01"
CLIENT_MAC: Final = "02:c9:00:00:00:02"
OPEN_FOR: Final = 1800
CMD_TIMEOUT: Final = 120.0

# fwknopd's chain, jumped to from INPUT (PROTOCOL-FWKNOP.md section 2.8)
FWKNOP_CHAIN: Final = "FWKNOP_INPUT"

_serial = itertools.count()


def _quiet(_: str) -> None:
    pass


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


# ---------------------------------------------------------------------------
# Namespaces and processes


def _run(
    cmd: Sequence[str],
    *,
    ns: str | None = None,
    input: str | None = None,
    timeout: float = CMD_TIMEOUT,
    check: bool = True,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    full = [*(["ip", "netns", "exec", ns] if ns else []), *cmd]
    res = subprocess.run(
        full,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env=env,
    )
    if check and res.returncode != 0:
        raise RuntimeError(
            f"{' '.join(full[:12])}{' ...' if len(full) > 12 else ''} "
            f"failed ({res.returncode}): {res.stderr.strip()[:2000]}"
        )
    return res


class Lab:
    """Namespaces and processes made here; all removed by :meth:`close`.

    Processes are ended by their own pid, namespaces deleted by name; both
    also when a measurement fails half way.
    """

    def __init__(self) -> None:
        self.tag = f"{os.getpid() % 100000:x}{next(_serial)}"
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[str]] = []

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def netns(self, role: str) -> str:
        name = f"gr-{role}-{self.tag}"
        _run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        _run(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    def veth(self, srv: str, cli: str) -> tuple[str, str]:
        """A veth pair, SERVER4 on the server's end, CLIENT4 on the client's.

        The client gets a permanent neighbour entry for the server, so no
        packet waits for ARP.
        """
        s_if, c_if = f"gr{self.tag}s", f"gr{self.tag}c"
        _run(
            [
                "ip", "link", "add", s_if, "address", SERVER_MAC, "netns", srv,
                "type", "veth", "peer", "name", c_if, "address", CLIENT_MAC,
                "netns", cli,
            ]
        )
        for ns, ifname, addr in ((srv, s_if, SERVER4), (cli, c_if, CLIENT4)):
            _run(["ip", "-n", ns, "addr", "add", f"{addr}/{PREFIX_LEN}", "dev", ifname])
            _run(["ip", "-n", ns, "link", "set", ifname, "up"])
        _run(
            [
                "ip", "-n", cli, "neigh", "replace", SERVER4, "lladdr", SERVER_MAC,
                "dev", c_if, "nud", "permanent",
            ]
        )
        return s_if, c_if

    def spawn(
        self, ns: str, cmd: Sequence[str], *, cwd: Path | None = None
    ) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *cmd],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
        )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(3)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(3)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self.procs.clear()
        for ns in reversed(self.namespaces):
            _run(["ip", "netns", "del", ns], check=False)
        self.namespaces.clear()


def _python_env() -> dict[str, str]:
    """Environment for helper interpreters: this repository importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p
    )
    return env


def _spad() -> str:
    here = Path(sys.executable).with_name("spad")
    if here.exists():
        return str(here)
    found = shutil.which("spad")
    if found is None:
        raise RuntimeError("spad not found next to this interpreter or on PATH")
    return found


def _grantee(i: int) -> ipaddress.IPv4Address:
    """The i-th grantee address (0-based), never the client's."""
    if not 0 <= i < GRANTEES.num_addresses - 2:
        raise ValueError(f"at most {GRANTEES.num_addresses - 2} grantees")
    return GRANTEES.network_address + 1 + i


# ---------------------------------------------------------------------------
# 1. spa: the real pipeline


def _write_server(workdir: Path, n: int, table: str) -> tuple[Path, bytes, bytes]:
    cred_id, secret = secrets.token_bytes(P.ID_LEN), secrets.token_bytes(32)
    capacity = 65536
    while capacity < 4 * n:
        capacity *= 2
    path = workdir / "spad.toml"
    path.write_text(
        "[server]\n"
        f"port = {SPA_PORT}\n"
        'firewall = "nftables"\n'
        f'nft_table = "{table}"\n'
        f'state_dir = "{workdir / "state"}"\n'
        "window = 3600\n"
        f"replay_capacity = {capacity}\n"
        'protected = ["tcp/22"]\n'
        'on_exit = "keep"\n'
        "\n"
        "[[credential]]\n"
        'name = "bench"\n'
        f'id = "{cred_id.hex()}"\n'
        f'secret = "{base64.b64encode(secret).decode()}"\n'
        'allow = ["tcp/22"]\n'
        "max_open = 3600\n"
        "allow_other_address = false\n"
    )
    path.chmod(0o600)
    return path, cred_id, secret


def _write_knocks(
    path: Path, n: int, cred_id: bytes, secret: bytes, dst: str = SERVER4
) -> int:
    """n knocks for tcp/22 at ``dst``, each from its own source address."""
    req = P.Request(
        ports=(("tcp", 22),), open_for=OPEN_FOR, destination=ipaddress.ip_address(dst)
    )
    now_us = time.time_ns() // 1000

    def frames() -> Iterator[tuple[int, bytes]]:
        for i in range(n):
            knock = P.encode_packet(cred_id, secret, req, timestamp_us=now_us + i)
            packet = fr.udp4(str(_grantee(i)), dst, 40000 + i % 20000, SPA_PORT, knock)
            yield now_us + i, fr.link(fr.DLT_EN10MB, packet)

    return write_pcap(path, fr.DLT_EN10MB, frames())


def _spad_run(
    ns: str, cfg: Path, pcap: Path, firewall: str
) -> tuple[float, dict[str, Any]]:
    cmd = [
        _spad(), "--config", str(cfg), "--pcap-file", str(pcap),
        "--firewall", firewall, "--clock", "pcap", "--json",
    ]
    t0 = time.perf_counter()
    res = _run(cmd, ns=ns, timeout=600, cwd=ROOT, env=_python_env())
    wall = time.perf_counter() - t0
    summary: dict[str, Any] = json.loads(res.stdout)
    return wall, summary


def _set_elements(ns: str, table: str, name: str = "allow4") -> int:
    res = _run(["nft", "-j", "list", "set", "inet", table, name], ns=ns)
    for obj in json.loads(res.stdout).get("nftables", []):
        if isinstance(obj, dict) and isinstance(obj.get("set"), dict):
            return len(obj["set"].get("elem", []) or [])
    raise RuntimeError(f"no set {name} in table inet {table}")


def _delete_table(ns: str, table: str) -> None:
    _run(["nft", "delete", "table", "inet", table], ns=ns, check=False)


def _grant_runs(
    ns: str, cfg: Path, pcap: Path, empty: Path, table: str, say: Progress
) -> dict[str, Any]:
    """Empty capture, --firewall none, --firewall nftables; table removed after."""
    startup, _ = _spad_run(ns, cfg, empty, "nftables")
    _delete_table(ns, table)
    none_wall, none_sum = _spad_run(ns, cfg, pcap, "none")
    say(f"spa: firewall none {none_wall:.2f}s, {none_sum['granted']} granted")
    wall, summ = _spad_run(ns, cfg, pcap, "nftables")
    elements = _set_elements(ns, table)
    _delete_table(ns, table)
    say(f"spa: nftables {wall:.2f}s, {elements} elements in allow4")
    return {
        "startup": startup,
        "none_wall": none_wall,
        "none_sum": none_sum,
        "wall": wall,
        "sum": summ,
        "elements": elements,
    }


def spa_grant_time(
    workdir: str | Path, n: int = 10_000, *, progress: Progress | None = None
) -> dict[str, Any]:
    """Time ``spad --pcap-file`` turning n knocks into n nftables elements.

    The capture is run three ways in one namespace: empty (the fixed cost of
    starting spad and creating its table), with ``--firewall none`` and with
    ``--firewall nftables``; the table is deleted between runs so each starts
    from nothing.  ``grants_per_s`` divides by the whole wall time;
    ``grants_per_s_net`` first takes the empty run's time off.
    """
    say = progress or _quiet
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    table = f"grbench{os.getpid() % 100000}"
    cfg, cred_id, secret = _write_server(work, n, table)

    t0 = time.perf_counter()
    pcap = work / "knocks.pcap"
    _write_knocks(pcap, n, cred_id, secret)
    empty = work / "empty.pcap"
    write_pcap(empty, fr.DLT_EN10MB, [])
    say(f"spa: wrote {n} knocks in {time.perf_counter() - t0:.1f}s")

    with Lab() as lab:
        ns = lab.netns("g")
        best = _grant_runs(ns, cfg, pcap, empty, table, say)

    summ = best["sum"]
    wall, none_wall, startup = best["wall"], best["none_wall"], best["startup"]
    granted = int(summ.get("granted", 0))
    share = wall - none_wall
    return {
        "knocks": n,
        "grants": granted,
        "elements": best["elements"],
        "all_granted": granted == n == best["elements"],
        "pipeline": "spad --pcap-file --firewall nftables",
        "wall_s": round(wall, 3),
        "grants_per_s": round(granted / wall, 1),
        "startup_s": round(startup, 3),
        "grants_per_s_net": round(granted / max(wall - startup, 1e-9), 1),
        "none_wall_s": round(none_wall, 3),
        "firewall_share_s": round(share, 3),
        "firewall_share_pct": round(100 * share / wall, 1),
        "firewall_us_per_grant": round(1e6 * share / max(granted, 1), 1),
        "capture_seconds": summ.get("capture_seconds"),
        "summary": summ,
        "summary_none": best["none_sum"],
    }


# ---------------------------------------------------------------------------
# 2. fwknopd's way: four iptables processes per grant


def _fwknopd_rule(addr: str, expires: int) -> list[str]:
    """fwknopd's IPT_RULE_ARGS for tcp/22, as its iptables backend writes it."""
    return [
        "-p", "6", "-s", addr, "-d", "0.0.0.0/0", "--dport", "22",
        "-m", "comment", "--comment", f"_exp_{expires}", "-j", "ACCEPT",
    ]


def _iptables_worker() -> None:
    """Runs inside the namespace: grants one by one, as fwknopd does.

    Reads {"ipt", "n", "measure", "budget_s", "hard_s"} as JSON on stdin and
    writes one JSON line per 100 grants, then a final line with all
    per-grant times in ms.  After ``measure`` grants it predicts the time
    for n from a straight-line fit of per-grant cost against the rule count
    and carries on to n only if that is within ``budget_s``.
    """
    args = json.loads(sys.stdin.read())
    ipt, n, measure = str(args["ipt"]), int(args["n"]), int(args["measure"])
    budget, hard = float(args["budget_s"]), float(args["hard_s"])
    base = [ipt, "-t", "filter"]
    for cmd in ([*base, "-N", FWKNOP_CHAIN], [*base, "-I", "INPUT", "1", "-j",
                                              FWKNOP_CHAIN]):
        subprocess.run(cmd, check=True, capture_output=True)

    def spawn(cmd: list[str]) -> int:
        return subprocess.run(cmd, capture_output=True, check=False).returncode

    times: list[float] = []
    odd = 0
    limit = n
    start = time.perf_counter()
    for i in range(n):
        rule = _fwknopd_rule(str(_grantee(i)), int(time.time()) + 3600)
        t0 = time.perf_counter()
        rcs = (
            spawn([*base, "-L", FWKNOP_CHAIN, "-n"]),
            spawn([*base, "-C", "INPUT", "-j", FWKNOP_CHAIN]),
            spawn([*base, "-C", FWKNOP_CHAIN, *rule]),
            spawn([*base, "-A", FWKNOP_CHAIN, *rule]),
        )
        times.append((time.perf_counter() - t0) * 1000)
        if rcs != (0, 0, 1, 0):
            odd += 1
        done = i + 1
        if done % 100 == 0:
            _emit({"done": done, "ms": round(times[-1], 2)})
        if done == measure and n > measure:
            a, b = _line_fit(times)
            if _predict_ms(a, b, n) / 1000 > budget:
                limit = done
        if done >= limit or time.perf_counter() - start > hard:
            break
    listed = subprocess.run(
        [*base, "-S", FWKNOP_CHAIN], capture_output=True, text=True, check=False
    ).stdout
    rules = sum(1 for line in listed.splitlines() if line.startswith("-A "))
    _emit({"times_ms": times, "odd": odd, "rules": rules})


def _emit(msg: dict[str, Any]) -> None:
    """One JSON line to the parent (the worker's only channel)."""
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def _line_fit(ys: Sequence[float]) -> tuple[float, float]:
    """Least squares y = a + b*i over i = 0..len-1."""
    k = len(ys)
    if k < 2:
        return (ys[0] if ys else 0.0), 0.0
    mx = (k - 1) / 2
    my = sum(ys) / k
    sxx = sum((i - mx) ** 2 for i in range(k))
    sxy = sum((i - mx) * (y - my) for i, y in enumerate(ys))
    b = sxy / sxx
    return my - b * mx, b


def _predict_ms(a: float, b: float, n: int) -> float:
    """Sum of a + b*i for i in 0..n-1."""
    return a * n + b * n * (n - 1) / 2


def iptables_grant_time(
    workdir: str | Path,
    n: int = 10_000,
    measure: int = 1000,
    *,
    ipt: str = "iptables",
    budget_s: float = 60.0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Time fwknopd's per-grant ``iptables`` spawns in a fresh namespace.

    ``measure`` grants are always made; all n when the prediction for n is
    within ``budget_s``.  Otherwise the time for n is extrapolated twice: at
    the mean cost measured, and from a straight-line fit of per-grant cost
    against the number of rules already in the chain (each ``iptables``
    call reads the chain, so the cost grows with it).  The per-grant times
    are kept in ``workdir``.  ``ipt`` may be ``iptables-legacy`` to see the
    other backend.
    """
    say = progress or _quiet
    Path(workdir).mkdir(parents=True, exist_ok=True)
    measure = min(measure, n)
    hard = max(3 * budget_s, 120.0)
    with Lab() as lab:
        ns = lab.netns("i")
        code = "from bench.grants import _iptables_worker; _iptables_worker()"
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=_python_env(),
        )
        lab.procs.append(proc)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(
            json.dumps(
                {"ipt": ipt, "n": n, "measure": measure, "budget_s": budget_s,
                 "hard_s": hard}
            )
        )
        proc.stdin.close()
        final: dict[str, Any] | None = None
        deadline = time.monotonic() + hard + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 5.0)
            if not ready:
                continue
            line = proc.stdout.readline()
            if not line:
                break
            msg = json.loads(line)
            if "times_ms" in msg:
                final = msg
                break
            say(f"{ipt}: {msg['done']} grants, last {msg['ms']:.1f} ms")
        if final is None:
            err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
            raise RuntimeError(f"{ipt} worker gave no result: {err.strip()[:2000]}")

    times: list[float] = final["times_ms"]
    done = len(times)
    times_file = Path(workdir) / f"{ipt}_grant_ms.json"
    times_file.write_text(json.dumps([round(t, 3) for t in times]))
    total_ms = sum(times)
    a, b = _line_fit(times)
    out: dict[str, Any] = {
        "tool": ipt,
        "version": _run([ipt, "--version"], check=False).stdout.strip(),
        "spawns_per_grant": 4,
        "grants_done": done,
        "rules_in_chain": final["rules"],
        "unexpected_exit_codes": final["odd"],
        "measured_s": round(total_ms / 1000, 3),
        "ms_per_grant": round(total_ms / done, 2),
        "ms_per_spawn": round(total_ms / done / 4, 2),
        "ms_per_grant_first100": round(_mean(times[:100]), 2),
        "ms_per_grant_last100": round(_mean(times[-100:]), 2),
        "ms_growth_per_1000_rules": round(b * 1000, 3),
        "grants_per_s_measured": round(done / (total_ms / 1000), 1),
        "measured": done,
        "n": n,
        "times_file": str(times_file),
    }
    if done >= n:
        out.update(extrapolated=False, time_for_n_s=round(total_ms / 1000, 3))
    else:
        out.update(
            extrapolated=True,
            time_for_n_s_flat=round(total_ms / done * n / 1000, 1),
            time_for_n_s_linear_fit=round(_predict_ms(a, b, n) / 1000, 1),
            time_for_n_s=round(_predict_ms(a, b, n) / 1000, 1),
        )
    out["total_s"] = out["time_for_n_s"]
    out["grants_per_s"] = round(n / out["time_for_n_s"], 1)
    return out


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


# ---------------------------------------------------------------------------
# 3. per-packet cost


def build_pktcost(outdir: str | Path) -> Path:
    """Compile bench/pktcost.c into ``outdir``; returns the binary."""
    out = Path(outdir) / "pktcost"
    cc = os.environ.get("CC", "gcc")
    _run([cc, *CFLAGS, "-o", str(out), str(PKTCOST_SRC)])
    return out


_SINK: Final = """
import os, select, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
s.bind((sys.argv[1], int(sys.argv[2])))
s.setblocking(False)
n = 0
buf = bytearray(2048)
print("ready", flush=True)
p = select.poll()
p.register(s, select.POLLIN)
p.register(0, select.POLLIN)
while True:
    for fd, _ in p.poll():
        if fd == 0:
            data = os.read(0, 64)
            if not data:
                sys.exit(0)
            for _ in range(data.count(b"\\n")):
                print(n, flush=True)
            continue
        try:
            while True:
                s.recv_into(buf)
                n += 1
        except BlockingIOError:
            pass
"""

_NFT_LOADER: Final = """
import ipaddress, json, sys
from spa.config import PortSpec
from spa.firewall.base import Grant
from spa.firewall.nftables import NftablesFirewall
a = json.loads(sys.stdin.read())
fw = NftablesFirewall(
    table=a["table"], spa_port=a["spa_port"], protected=[PortSpec("udp", a["port"])]
)
fw.start()
fw.allow([Grant(ipaddress.ip_address(x), "udp", a["port"], 3600.0)
          for x in a["addrs"]])
fw.close()
"""

_CT_ONLY: Final = """table inet grct {
  chain input {
    type filter hook input priority filter - 10; policy accept;
    ct state established,related accept
  }
}
"""


class _Scenario:
    """One server namespace set up one way, its sink, and its runs."""

    def __init__(self, name: str, lab: Lab, srv: str, cli: str) -> None:
        self.name = name
        self.lab = lab
        self.srv = srv
        self.cli = cli
        self.sink: subprocess.Popen[str] | None = None
        self.runs: list[dict[str, Any]] = []
        self.info: dict[str, Any] = {}

    def start_sink(self, cpu: int | None) -> None:
        pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
        self.sink = self.lab.spawn(
            self.srv, [*pin, sys.executable, "-c", _SINK, SERVER4, str(SINK_PORT)]
        )
        assert self.sink.stdout is not None
        ready, _, _ = select.select([self.sink.stdout], [], [], 10.0)
        line = self.sink.stdout.readline() if ready else ""
        if line.strip() != "ready":
            raise RuntimeError(f"sink in {self.srv} did not start: {line!r}")

    def sink_count(self) -> int:
        """The sink's count once it has stopped growing (queue drained)."""
        assert self.sink is not None
        assert self.sink.stdin is not None and self.sink.stdout is not None
        last = -1
        for _ in range(50):
            self.sink.stdin.write("\n")
            self.sink.stdin.flush()
            ready, _, _ = select.select([self.sink.stdout], [], [], 5.0)
            if not ready:
                raise RuntimeError(f"sink in {self.srv} does not answer")
            count = int(self.sink.stdout.readline())
            if count == last:
                return count
            last = count
            time.sleep(0.05)
        return last

    def snmp(self) -> dict[str, dict[str, int]]:
        """/proc/net/snmp of the server namespace (read through the sink)."""
        assert self.sink is not None
        return _parse_snmp(Path(f"/proc/{self.sink.pid}/net/snmp").read_text())


def _parse_snmp(text: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    lines = text.splitlines()
    for head, vals in zip(lines[::2], lines[1::2], strict=False):
        proto, names = head.split(":", 1)
        _, values = vals.split(":", 1)
        out[proto] = {
            k: int(v) for k, v in zip(names.split(), values.split(), strict=False)
        }
    return out


def _cpu_ticks(cpu: int) -> tuple[int, int]:
    """(busy, all) jiffies of one CPU from /proc/stat; steal counts as neither."""
    with open("/proc/stat", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                user, nice, system, idle, iowait, irq, softirq = v[:7]
                busy = user + nice + system + irq + softirq
                return busy, busy + idle + iowait
    raise RuntimeError(f"cpu{cpu} not in /proc/stat")


def _ksoftirqd_pid(cpu: int) -> int | None:
    want = f"ksoftirqd/{cpu}"
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            comm = Path(f"/proc/{entry}/comm").read_text().strip()
        except OSError:
            continue
        if comm == want:
            return int(entry)
    return None


def _task_ticks(pid: int | None) -> int:
    if pid is None:
        return 0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime


def _cpus() -> tuple[int | None, int | None]:
    """(sender CPU, sink CPU): different CPUs when there are two or more."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return cpus[-1], cpus[0]


def _setup_iptables(sc: _Scenario, restore: str, n_rules: int) -> None:
    expires = int(time.time()) + 3600
    lines = [
        "*filter",
        ":INPUT ACCEPT [0:0]",
        ":FORWARD ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        f":{FWKNOP_CHAIN} - [0:0]",
        f"-A INPUT -j {FWKNOP_CHAIN}",
        # the admin's policy fwknopd relies on: closed unless a rule accepts
        f"-A INPUT -p udp -m udp --dport {SINK_PORT} -j DROP",
    ]
    addrs = [str(_grantee(i)) for i in range(n_rules - 1)] + [CLIENT4]
    lines += [
        f"-A {FWKNOP_CHAIN} -s {a}/32 -d 0.0.0.0/0 -p udp -m udp --dport {SINK_PORT}"
        f" -m comment --comment _exp_{expires} -j ACCEPT"
        for a in addrs
    ]
    lines.append("COMMIT")
    t0 = time.perf_counter()
    _run([restore], ns=sc.srv, input="\n".join(lines) + "\n")
    sc.info["load_s"] = round(time.perf_counter() - t0, 3)
    ipt = restore.removesuffix("-restore")
    listed = _run([ipt, "-t", "filter", "-S", FWKNOP_CHAIN], ns=sc.srv).stdout
    rules = [x for x in listed.splitlines() if x.startswith("-A ")]
    sc.info["rules"] = len(rules)
    sc.info["last_rule"] = rules[-1] if rules else ""
    sc.info["tool"] = _run([ipt, "--version"], check=False).stdout.strip()


def _setup_spa(sc: _Scenario, n_elements: int, with_client: bool) -> None:
    table = f"grspa{os.getpid() % 100000}"
    others = [str(_grantee(i)) for i in range(n_elements - (1 if with_client else 0))]
    addrs = [*others, CLIENT4] if with_client else others
    doc = {"table": table, "spa_port": SPA_PORT, "port": SINK_PORT, "addrs": addrs}
    t0 = time.perf_counter()
    _run(
        [sys.executable, "-c", _NFT_LOADER],
        ns=sc.srv,
        input=json.dumps(doc),
        cwd=ROOT,
        env=_python_env(),
    )
    sc.info["load_s"] = round(time.perf_counter() - t0, 3)
    sc.info["elements"] = _set_elements(sc.srv, table)
    sc.info["client_in_set"] = with_client


def _measure(
    sc: _Scenario,
    pktcost: Path,
    packets: int,
    max_seconds: float,
    cpu: int | None,
    ksoftirqd: int | None,
) -> dict[str, Any]:
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    cmd = [
        *pin, str(pktcost), SERVER4, str(SINK_PORT), str(packets), CLIENT4,
        str(max_seconds),
    ]
    got0 = sc.sink_count()
    snmp0 = sc.snmp()
    ticks0 = _cpu_ticks(cpu) if cpu is not None else (0, 0)
    ksi0 = _task_ticks(ksoftirqd)
    res = _run(cmd, ns=sc.cli, timeout=max_seconds + 60)
    ticks1 = _cpu_ticks(cpu) if cpu is not None else (0, 0)
    ksi1 = _task_ticks(ksoftirqd)
    got1 = sc.sink_count()
    snmp1 = sc.snmp()
    out: dict[str, Any] = json.loads(res.stdout)
    sent = int(out["sent"])
    hz = os.sysconf("SC_CLK_TCK")
    passed = snmp1["Ip"]["InDelivers"] - snmp0["Ip"]["InDelivers"]
    out.update(
        passed_firewall=passed,
        received=got1 - got0,
        rcvbuf_drops=snmp1["Udp"]["RcvbufErrors"] - snmp0["Udp"]["RcvbufErrors"],
        lost_before_socket=sent - passed,
        cpu_busy_ns_per_packet=round(
            (ticks1[0] - ticks0[0]) / hz / max(sent, 1) * 1e9, 1
        ),
        cpu_busy_pct=round(
            100 * (ticks1[0] - ticks0[0]) / max(ticks1[1] - ticks0[1], 1), 1
        ),
        ksoftirqd_ns_per_packet=round((ksi1 - ksi0) / hz / max(sent, 1) * 1e9, 1),
    )
    return out


def per_packet_cost(
    workdir: str | Path,
    n_rules: int = 10_000,
    packets: int = 300_000,
    *,
    repeats: int = 3,
    max_seconds: float = 5.0,
    legacy: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """CPU ns per packet to pass the input hook, per firewall shape.

    Each scenario has its own pair of namespaces joined by a veth pair; a
    UDP sink listens on SERVER4:SINK_PORT and the client sends from
    CLIENT4 with ``pktcost`` pinned to one CPU, the sink pinned to another.
    On veth the receive path (IP input, netfilter, UDP enqueue) runs as a
    softirq on the sending CPU when the transmit path re-enables bottom
    halves, and this kernel charges it to the sender (no IRQ time
    accounting), so the sender's CPU time per packet carries the firewall's
    cost.  Two cross-checks are recorded per run: the busy time of the
    sender's CPU from /proc/stat, and ksoftirqd's time on that CPU (which
    would show the receive path leaving the sender's context).

    Every scenario ends with a rule that drops the sink port (spa's
    ``protected`` set holds udp/SINK_PORT; the iptables chain is followed
    by a DROP), so a packet reaches the socket only if the grant under test
    accepted it: the server's Ip InDelivers count must equal what was sent.
    One datagram 5-tuple is used throughout: conntrack (loaded by spa's
    ``ct state`` rule) sees the flow but never a reply, so it stays NEW and
    ``ct state established`` never short-cuts the set lookup; the
    "spa_nft_client_absent" control (the client not in the set) must then
    deliver nothing.

    Scenarios run interleaved (every scenario once per round, every other
    round in reverse order), and the median of ``repeats`` rounds is
    reported, to spread out the drift of a shared machine.  A run stops
    after ``max_seconds`` whatever its count.
    """
    say = progress or _quiet
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    pktcost = build_pktcost(work)
    send_cpu, sink_cpu = _cpus()
    ksoftirqd = _ksoftirqd_pid(send_cpu) if send_cpu is not None else None
    small = min(100, n_rules)

    plan: list[tuple[str, Callable[[_Scenario], None]]] = [
        ("none", lambda sc: None),
        ("conntrack_only", lambda sc: _setup_ct_only(sc)),
        (f"spa_nft_{small}", lambda sc: _setup_spa(sc, small, True)),
        (f"spa_nft_{n_rules}", lambda sc: _setup_spa(sc, n_rules, True)),
        (f"iptables_nft_{small}", lambda sc: _setup_iptables(
            sc, "iptables-nft-restore", small)),
        (f"iptables_nft_{n_rules}", lambda sc: _setup_iptables(
            sc, "iptables-nft-restore", n_rules)),
    ]
    if legacy and shutil.which("iptables-legacy-restore"):
        plan.append(
            (f"iptables_legacy_{n_rules}", lambda sc: _setup_iptables(
                sc, "iptables-legacy-restore", n_rules))
        )
    plan = list(dict(plan).items())  # n_rules == small: no duplicates
    control = "spa_nft_client_absent"

    results: dict[str, Any] = {}
    with Lab() as lab:
        scenarios: list[_Scenario] = []
        for i, (name, setup) in enumerate([
            *plan, (control, lambda sc: _setup_spa(sc, n_rules, False))
        ]):
            srv, cli = lab.netns(f"s{i}"), lab.netns(f"c{i}")
            lab.veth(srv, cli)
            sc = _Scenario(name, lab, srv, cli)
            setup(sc)
            sc.start_sink(sink_cpu)
            # warm-up: caches, conntrack entry, page faults
            _measure(sc, pktcost, 2000, 2.0, send_cpu, None)
            scenarios.append(sc)
            say(f"pktcost: set up {name} {sc.info}")
        measured, ctl = scenarios[:-1], scenarios[-1]
        for r in range(repeats):
            # every other round backwards, so no scenario always follows another
            for sc in measured if r % 2 == 0 else measured[::-1]:
                run = _measure(sc, pktcost, packets, max_seconds, send_cpu, ksoftirqd)
                sc.runs.append(run)
                say(
                    f"pktcost: round {r + 1} {sc.name}: {run['ns_per_packet']:.0f}"
                    f" ns/pkt ({run['sent']} sent, {run['passed_firewall']} passed)"
                )
        ctl.runs.append(
            _measure(ctl, pktcost, min(packets, 50_000), max_seconds, send_cpu,
                     ksoftirqd)
        )
        for sc in measured:
            if sc.name.startswith("iptables"):
                ipt = "iptables-legacy" if "legacy" in sc.name else "iptables-nft"
                listing = _run(
                    [ipt, "-t", "filter", "-L", FWKNOP_CHAIN, "-v", "-x", "-n"],
                    ns=sc.srv,
                ).stdout.splitlines()
                sc.info["last_rule_packets"] = int(listing[-1].split()[0])

    base = _median([r["ns_per_packet"] for r in scenarios[0].runs])
    for sc in measured:
        ns_pp = _median([r["ns_per_packet"] for r in sc.runs])
        results[sc.name] = {
            "ns_per_packet": round(ns_pp, 1),
            "extra_ns_over_none": round(ns_pp - base, 1),
            "cpu_busy_ns_per_packet": round(
                _median([r["cpu_busy_ns_per_packet"] for r in sc.runs]), 1
            ),
            "ksoftirqd_ns_per_packet": round(
                _median([r["ksoftirqd_ns_per_packet"] for r in sc.runs]), 1
            ),
            "sent": [r["sent"] for r in sc.runs],
            "passed_firewall": [r["passed_firewall"] for r in sc.runs],
            "received": [r["received"] for r in sc.runs],
            "rcvbuf_drops": [r["rcvbuf_drops"] for r in sc.runs],
            "lost_before_socket": sum(r["lost_before_socket"] for r in sc.runs),
            "runs_ns_per_packet": [r["ns_per_packet"] for r in sc.runs],
            "timed_out": any(r["timed_out"] for r in sc.runs),
            **sc.info,
        }
    c = ctl.runs[0]
    results[control] = {
        "sent": c["sent"],
        "passed_firewall": c["passed_firewall"],
        "ok": c["passed_firewall"] == 0,
        **ctl.info,
    }
    by_name = {sc.name: sc for sc in measured}
    out: dict[str, Any] = {
        "n_rules": n_rules,
        "packets_per_run": packets,
        "repeats": repeats,
        "max_seconds_per_run": max_seconds,
        "sender_cpu": send_cpu,
        "sink_cpu": sink_cpu,
        "scenarios": results,
        "spa_flat": _flatness(by_name, f"spa_nft_{small}", f"spa_nft_{n_rules}"),
        "iptables_growth": _flatness(
            by_name, f"iptables_nft_{small}", f"iptables_nft_{n_rules}"
        ),
    }
    # the whole per-packet cost: a ratio of the firewall's share alone (a few
    # hundred ns here) swings with the machine's noise
    out["spa_flat_ratio"] = out["spa_flat"]["ratio"]
    out.update(_report_text(out, small))
    return out


def _flatness(by_name: dict[str, _Scenario], a: str, b: str) -> dict[str, Any]:
    """How much scenario b costs over scenario a, per packet.

    ``paired_ns`` are the per-round differences (b and a ran back to back,
    so the drift of a shared machine largely cancels); ``ratio`` is the
    ratio of the medians of the whole per-packet cost.  ``firewall_ns_*``
    is the firewall's share (the cost over scenario "none"), the large one
    taken as the small one plus the paired median, and ``firewall_ratio``
    their ratio: the figure least disturbed by the machine's drift.
    """
    ra = [r["ns_per_packet"] for r in by_name[a].runs]
    rb = [r["ns_per_packet"] for r in by_name[b].runs]
    base = _median([r["ns_per_packet"] for r in by_name["none"].runs])
    paired = [y - x for x, y in zip(ra, rb, strict=True)]
    share_a = _median(ra) - base
    share_b = share_a + _median(paired)
    return {
        "small": a,
        "large": b,
        "ns_per_packet_small": round(_median(ra), 1),
        "ns_per_packet_large": round(_median(rb), 1),
        "difference_ns": round(_median(rb) - _median(ra), 1),
        "paired_ns": [round(d, 1) for d in paired],
        "paired_median_ns": round(_median(paired), 1),
        "spread_small_ns": round(max(ra) - min(ra), 1),
        "ratio": round(_median(rb) / _median(ra), 3),
        "firewall_ns_small": round(share_a, 1),
        "firewall_ns_large": round(share_b, 1),
        "firewall_ratio": round(share_b / share_a, 3) if share_a > 0 else None,
    }


def _report_text(r: dict[str, Any], small: int) -> dict[str, Any]:
    """Rows, a one-line summary and the method, for bench/report.py."""
    sc, n = r["scenarios"], r["n_rules"]

    def us(name: str, key: str = "ns_per_packet") -> str:
        x = sc.get(name)
        return "n/a" if x is None else f"{x[key] / 1000:,.2f} µs"

    rows = [
        {
            "what": "CPU per packet, no firewall",
            "spa": us("none"),
            "iptables": us("none"),
        },
        {
            "what": f"CPU per packet, {small:,} grants",
            "spa": us(f"spa_nft_{small}"),
            "iptables": us(f"iptables_nft_{small}"),
        },
        {
            "what": f"CPU per packet, {n:,} grants",
            "spa": us(f"spa_nft_{n}"),
            "iptables": us(f"iptables_nft_{n}")
            + (
                f" (legacy: {us(f'iptables_legacy_{n}')})"
                if f"iptables_legacy_{n}" in sc
                else ""
            ),
        },
        {
            "what": f"firewall's share per packet, {n:,} grants",
            "spa": us(f"spa_nft_{n}", "extra_ns_over_none")
            + f" (conntrack alone {us('conntrack_only', 'extra_ns_over_none')})",
            "iptables": us(f"iptables_nft_{n}", "extra_ns_over_none"),
        },
    ]
    flat, grow = r["spa_flat"], r["iptables_growth"]
    summary = (
        f"Per-packet cost from {small:,} to {n:,} grants: spa's nftables set "
        f"{flat['difference_ns']:+,.0f} ns (firewall share "
        f"{flat['firewall_ns_small']:,.0f} -> {flat['firewall_ns_large']:,.0f} ns; "
        f"run-to-run spread {flat['spread_small_ns']:,.0f} ns); fwknopd-style "
        f"iptables rules {grow['difference_ns'] / 1000:+,.1f} µs per packet "
        f"(x{grow['firewall_ratio']})."
    )
    method = (
        "Method: two network namespaces per scenario joined by veth; a sender "
        "(bench/pktcost.c, sendmmsg, one connected UDP socket) pinned to one CPU "
        "sends to a sink pinned to another; on veth the receive path, netfilter "
        "included, runs in the sender's softirq context, so its CPU time per "
        "packet carries the firewall cost (ksoftirqd time and the CPU's "
        "/proc/stat busy time are recorded as checks).  The packet's own grant "
        "is the last iptables rule; every scenario drops the port unless the "
        "grant accepts, and all packets sent reached the socket.  The single "
        "flow never gets a reply, so conntrack keeps it NEW and spa's 'ct state "
        "established' rule never bypasses the set: with the client's element "
        "missing nothing arrives.  Scenarios are interleaved (alternate rounds "
        "reversed), median of "
        f"{r['repeats']} rounds."
    )
    return {"rows": rows, "summary": summary, "method": method}


def _setup_ct_only(sc: _Scenario) -> None:
    _run(["nft", "-f", "-"], ns=sc.srv, input=_CT_ONLY)


# ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.grants",
        description="Grants at scale: spa (nftables sets) vs fwknopd (iptables).",
    )
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("-n", type=int, default=10_000, help="grants (default 10000)")
    ap.add_argument("--measure", type=int, default=1000,
                    help="iptables grants to time before extrapolating")
    ap.add_argument("--packets", type=int, default=300_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=("spa", "iptables", "packets"), default=None)
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        ap.error("needs root (network namespaces, nftables, iptables)")

    def say(msg: str) -> None:
        if not args.quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="gr-bench-")
        work = Path(tmp.name)
    else:
        work = args.workdir
    out: dict[str, Any] = {}
    parts: dict[str, Callable[[], dict[str, Any]]] = {
        "spa": lambda: spa_grant_time(work / "spa", args.n, progress=say),
        "iptables": lambda: iptables_grant_time(
            work / "ipt", args.n, args.measure, progress=say
        ),
        "packets": lambda: per_packet_cost(
            work / "pkt", args.n, args.packets, repeats=args.repeats, progress=say
        ),
    }
    names = {
        "spa": "spa_grant_time",
        "iptables": "iptables_grant_time",
        "packets": "per_packet_cost",
    }
    try:
        for part, fn in parts.items():
            if args.only and part != args.only:
                continue
            t0 = time.perf_counter()
            key = names[part]
            out[key] = fn()
            out[key]["runtime_s"] = round(time.perf_counter() - t0, 1)
            say(f"{key} done in {out[key]['runtime_s']} s")
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
