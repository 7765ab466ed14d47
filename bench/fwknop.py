"""Drive the stock Debian fwknop 2.6.10 (``fwknop`` and ``fwknopd``) for benchmarks.

Everything the benchmark suite needs from the reference system lives here:

* :func:`gen_keys` and :func:`gen_knocks` make keys and valid knocks with the
  stock client (the datagrams are caught on a loopback socket, never sent out);
* :func:`write_digest_cache` pre-seeds fwknopd's replay cache file and
  :func:`check_digest_cache` proves that fwknopd loads it and detects a replay;
* :func:`run_offline` times fwknopd over a pcap file (``--pcap-file``, test mode);
* :class:`LiveFwknopd` runs fwknopd for real (it adds iptables rules) inside a
  network namespace the caller created.

fwknopd traps handled here (PROTOCOL-FWKNOP.md sections 2.3, 3.1, 3.2):

* In ``--pcap-file`` mode fwknopd does not exit at the end of the file; it
  keeps calling ``pcap_dispatch`` until killed. ``-C N`` (packet limit) is the
  only clean way out, and N counts packets that passed the BPF filter
  (``opts->packet_ctr += pcap_dispatch(...)``). :func:`run_offline` therefore
  counts those packets itself with libpcap and the same filter and refuses a
  mismatching ``n_packets``; a watchdog kills fwknopd after ``timeout``.
* The limit is only checked between ``pcap_dispatch`` batches, so a big
  ``PCAP_DISPATCH_COUNT`` overshoots to the end of the batch. With N equal to
  the number of matching packets the last batch ends at end of file, so there is
  nothing to overshoot into: exactly N packets are processed.
* ``--test`` skips the replay-cache insert (a replayed knock is accepted again)
  and touches no firewall. A pre-seeded cache is still loaded and scanned.
* Packet aging (``ENABLE_SPA_PACKET_AGING``) defaults to N in pcap-file mode;
  the offline config also sets it to N explicitly, so old knocks still pass.
* ``PCAP_DISPATCH_COUNT 0`` is rejected (range 1..8388608). The defaults
  (100 packets per dispatch, then ``usleep(100000)``) cap fwknopd at about
  1000 packets/s; "tuned" uses 1000000 per dispatch and a 1 us sleep offline.
* fwknopd wants absolute paths for its run directory and files, and warns when
  its config, access or digest files are not mode 0600.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import logging
import os
import re
import select
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

FWKNOP = "/usr/bin/fwknop"
FWKNOPD = "/usr/sbin/fwknopd"
GNU_TIME = "/usr/bin/time"
SPA_PORT = 62201
PCAP_FILTER = f"udp port {SPA_PORT}"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# fwknopd's own limits on an SPA payload (MIN_SPA_DATA_SIZE, MAX_SPA_PACKET_LEN).
MIN_SPA_LEN = 140
MAX_SPA_LEN = 1500

# Logged once per accepted knock in --test mode (one line per stanza that
# accepts it; the configs written here have exactly one stanza).
ACCEPT_TEST_LINE = "--test mode enabled, skipping firewall manipulation"
# Logged once per packet that reached the per-stanza loop (source matched).
PROCESSED_LINE = "received with access source match"
# Logged once per granted tcp port in real mode; group 1 = the port.
GRANT_LOG_RE = re.compile(
    r"Added access rule to FWKNOP_INPUT for \S+ -> \S+ tcp/(\d+)\b"
)
# An `nft monitor` line for a fwknopd grant (iptables-nft backend); group 1 =
# the port. Checked against real output, e.g.
#   add rule ip filter FWKNOP_INPUT ip saddr 10.201.77.2 tcp dport 20001  counter
#   packets 0 bytes 0 accept
# (one line; iptables-nft does not show the _exp_ comment there).
GRANT_MONITOR_RE = re.compile(
    r"^add rule ip filter FWKNOP_INPUT\b.*?\btcp dport (\d+)\b.*\baccept\b"
)
_READY_LINE = b"Starting fwknopd main event loop"
_CACHE_COUNT_RE = re.compile(rb"Using Digest Cache: '[^']*' \(entry count = (\d+)\)")
_REPLAY_LINE = b"Replay detected from source IP"

_B64_RE = re.compile(rb"[A-Za-z0-9+/]+")
_ACCESS_RE = re.compile(r"(tcp|udp)/\d{1,5}")
_SAFE_NETS = (
    ipaddress.IPv4Network("127.0.0.0/8"),
    ipaddress.IPv4Network("10.201.0.0/16"),
)

# Offline pcap-mode overrides: dispatch everything at once, sleep 1 us.
TUNED_OFFLINE = {"PCAP_DISPATCH_COUNT": "1000000", "PCAP_LOOP_SLEEP": "1"}
# Live tuned loop sleep: 1000 us, as in the lab (bench_fwknopd.sh live_tuned),
# so results stay comparable. One pcap_dispatch drains every ready TPACKET_V3
# block (up to the dispatch count), so 1 ms between dispatches costs throughput
# only if the ring fills within 1 ms. 1 us would busy-loop: measured idle CPU
# (no traffic, 2 s) was 0.5 % untuned, 3.5 % with 1000 us, 13 % with 1 us.
TUNED_LIVE_LOOP_SLEEP_US = 1000


# ------------------------------------------------------------------ keys/knocks
def gen_keys(fwknop: str = FWKNOP) -> tuple[str, str]:
    """(KEY_BASE64, HMAC_KEY_BASE64) from ``fwknop --key-gen`` (HMAC-SHA256)."""
    r = subprocess.run(
        [fwknop, "--key-gen"], capture_output=True, text=True, timeout=30, check=False
    )
    if r.returncode != 0:
        raise RuntimeError(f"fwknop --key-gen exited {r.returncode}: {r.stderr}")
    found: dict[str, str] = {}
    for line in r.stdout.splitlines():
        name, _, value = line.partition(":")
        found[name.strip()] = value.strip()
    key, hmac_key = found.get("KEY_BASE64", ""), found.get("HMAC_KEY_BASE64", "")
    if len(base64.b64decode(key)) != 32 or len(base64.b64decode(hmac_key)) != 64:
        raise RuntimeError("unexpected fwknop --key-gen output")
    return key, hmac_key


def _check_local_addr(addr: str) -> None:
    a = ipaddress.IPv4Address(addr)
    if not any(a in net for net in _SAFE_NETS):
        raise ValueError(f"{addr}: only 127.0.0.0/8 or 10.201.0.0/16 is allowed")


def _one_knock(
    access: str,
    key_b64: str,
    hmac_b64: str,
    server: str,
    allow_ip: str,
    fwknop: str,
    timeout: float,
) -> bytes:
    """Run the client once against a fresh socket on ``server``; the datagram."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((server, 0))
        sock.settimeout(timeout)
        port = sock.getsockname()[1]
        cmd = [
            fwknop,
            "--no-rc-file",
            "--no-save-args",
            "-A",
            access,
            "-a",
            allow_ip,
            "-D",
            server,
            "--server-port",
            str(port),
            "--use-hmac",
            "--key-base64-rijndael",
            key_b64,
            "--key-base64-hmac",
            hmac_b64,
            "--hmac-digest-type",
            "sha256",
        ]
        r = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=False
        )
        if r.returncode != 0:  # keys stay out of the message
            msg = (r.stderr or r.stdout).strip()
            raise RuntimeError(f"fwknop ({access}) exited {r.returncode}: {msg}")
        data, peer = sock.recvfrom(65535)
    if peer[0] != server:
        raise RuntimeError(f"datagram from unexpected peer {peer}")
    if not MIN_SPA_LEN <= len(data) <= MAX_SPA_LEN or not _B64_RE.fullmatch(data):
        raise RuntimeError(f"not an SPA datagram ({len(data)} bytes): {data[:60]!r}")
    return data


def gen_knocks(
    n: int,
    key_b64: str,
    hmac_b64: str,
    *,
    server: str = "127.0.0.1",
    allow_ip: str,
    ports: Sequence[str] | None = None,
    jobs: int = 4,
    fwknop: str = FWKNOP,
    timeout: float = 10.0,
) -> list[bytes]:
    """``n`` valid, unique knocks made by the stock client, in order.

    Knock ``i`` requests ``ports[i]`` (e.g. ``"tcp/20001"``), or ``tcp/22``
    when ``ports`` is None; ``allow_ip`` is the address inside the encrypted
    message (what fwknopd opens). ``server`` is where the client sends (``-D``)
    and where a UDP socket on an ephemeral port catches the datagram; it must
    be a local address in 127.0.0.0/8 or 10.201.0.0/16 (loopback by default:
    fwknopd never looks at it in pcap mode). Up to ``jobs`` clients run at once,
    each with its own socket. Each datagram is checked to be base64 text of
    140..1500 bytes, as fwknopd requires.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    ipaddress.IPv4Address(allow_ip)
    _check_local_addr(server)
    if ports is None:
        access = ["tcp/22"] * n
    else:
        if len(ports) < n:
            raise ValueError(f"{len(ports)} ports given for {n} knocks")
        access = [str(p) for p in ports[:n]]
    for a in access:
        if not _ACCESS_RE.fullmatch(a) or not 1 <= int(a.split("/")[1]) <= 65535:
            raise ValueError(f"bad access spec {a!r} (want tcp/PORT or udp/PORT)")
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        knocks = list(
            pool.map(
                lambda a: _one_knock(
                    a, key_b64, hmac_b64, server, allow_ip, fwknop, timeout
                ),
                access,
            )
        )
    if len(set(knocks)) != len(knocks):
        raise RuntimeError("the client produced duplicate knocks")
    log.info(
        "generated %d knocks with %s in %.2fs (%d jobs)",
        n,
        fwknop,
        time.monotonic() - t0,
        jobs,
    )
    return knocks


# ------------------------------------------------------------------ replay cache
def spa_digest(payload: bytes) -> str:
    """fwknopd's replay-cache key: unpadded base64 SHA-256 of the raw payload."""
    return base64.b64encode(hashlib.sha256(payload).digest()).decode().rstrip("=")


_CACHE_HEADER = "# <digest> <proto> <src_ip> <src_port> <dst_ip> <dst_port> <time>\n"


def write_digest_cache(
    path: str | Path, n: int, *, include: Sequence[bytes] = ()
) -> int:
    """Write a fwknopd digest cache file with ``n`` filler entries.

    The format is the one fwknopd writes and reads back at startup
    (``replay_file_cache_init``): a comment header, then one line per entry
    ``digest proto src_ip src_port dst_ip dst_port time`` with the digest as
    43 characters of unpadded base64 SHA-256. Filler digests hash a private
    counter, so they never match a real packet. The real digests of the
    ``include`` payloads are written first; fwknopd prepends each line to a
    linked list, so those end up last in its linear scan (the worst case).
    The file is mode 0600 (fwknopd warns otherwise). Returns the entry count.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    p = Path(path)
    now = int(time.time())
    lines = [_CACHE_HEADER]
    for i, payload in enumerate(include):
        lines.append(
            f"{spa_digest(payload)} 17 10.201.0.2 {40000 + i} 10.201.0.1 "
            f"{SPA_PORT} {now}\n"
        )
    for i in range(n):
        d = spa_digest(b"spa-bench digest-cache filler %d" % i)
        src = f"10.201.{(i >> 8) & 0xFF}.{i & 0xFF}"
        lines.append(f"{d} 17 {src} {1024 + i % 60000} 10.201.0.1 {SPA_PORT} {now}\n")
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(lines)
    os.chmod(p, 0o600)
    return n + len(include)


# ------------------------------------------------------------------ configs
def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def _write_configs(
    workdir: Path,
    settings: dict[str, str],
    key_b64: str,
    hmac_b64: str,
    fw_access_timeout: int | None = None,
) -> list[str]:
    """fwknopd.conf + access.conf in workdir; returns the path arguments."""
    run = workdir.resolve()
    conf = {
        "FWKNOP_RUN_DIR": str(run),
        "FWKNOP_PID_FILE": str(run / "fwknopd.pid"),
        "DIGEST_FILE": str(run / "digest.cache"),
        "DIGEST_DB_FILE": str(run / "digest_db.cache"),
        **settings,
    }
    _write_private(
        run / "fwknopd.conf",
        "# written by bench/fwknop.py, benchmark only\n"
        + "".join(f"{k:<28}{v};\n" for k, v in conf.items()),
    )
    access = [
        "SOURCE              ANY",
        f"KEY_BASE64          {key_b64}",
        f"HMAC_KEY_BASE64     {hmac_b64}",
        "HMAC_DIGEST_TYPE    sha256",
    ]
    if fw_access_timeout is not None:
        access.append(f"FW_ACCESS_TIMEOUT   {fw_access_timeout}")
    _write_private(run / "access.conf", "\n".join(access) + "\n")
    return [
        "-c",
        str(run / "fwknopd.conf"),
        "-a",
        str(run / "access.conf"),
        "-d",
        conf["DIGEST_FILE"],
        "-p",
        conf["FWKNOP_PID_FILE"],
        "-r",
        str(run),
    ]


def count_filtered(pcap: str | Path, bpf: str = PCAP_FILTER) -> int:
    """Packets of ``pcap`` that pass ``bpf``, counted by libpcap (as fwknopd)."""
    import pcapy  # the project's libpcap binding (pcapy-ng)

    reader = pcapy.open_offline(str(pcap))
    reader.setfilter(bpf)
    n = 0
    while True:
        hdr, _data = reader.next()
        if hdr is None:
            return n
        n += 1


def _write_tiny_pcap(path: Path, payloads: Sequence[bytes]) -> None:
    """Ethernet/IPv4/UDP frames 10.201.0.2 -> 10.201.0.1:62201 (UDP csum 0)."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i, payload in enumerate(payloads):
        ulen = 8 + len(payload)
        src, dst = socket.inet_aton("10.201.0.2"), socket.inet_aton("10.201.0.1")
        hdr = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, i, 0, 64, 17, 0, src, dst
        )
        s = sum(struct.unpack("!10H", hdr))
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        hdr = hdr[:10] + struct.pack("!H", ~s & 0xFFFF) + hdr[12:]
        udp = struct.pack("!HHHH", 40000 + i, SPA_PORT, ulen, 0)
        frame = bytes.fromhex("020000000001020000000002") + b"\x08\x00"
        frame += hdr + udp + payload
        out.append(struct.pack("<IIII", 1_700_000_000 + i, 0, len(frame), len(frame)))
        out.append(frame)
    path.write_bytes(b"".join(out))


# ------------------------------------------------------------------ offline
@dataclass
class _Measured:
    rc: int
    wall_s: float
    cpu_s: float
    max_rss_kb: int | None
    timed_out: bool


def _kill_children(pid: int) -> None:
    """SIGKILL the direct children of ``pid`` (a process we started).

    They cannot have been reaped (and their PIDs reused) while ``pid`` is
    alive and has not waited for them, which is the case when we get here.
    """
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return
    for kid in kids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(kid), signal.SIGKILL)


def _run_measured(
    cmd: list[str], log_path: Path, time_path: Path, timeout: float
) -> _Measured:
    """Run ``cmd`` with output to ``log_path``; wall, CPU and peak RSS.

    CPU comes from ``os.wait4`` (microsecond resolution). Peak RSS does not: a
    child forked from this Python process inherits Python's RSS high-water
    mark through fork+exec (Linux keeps ``signal->maxrss`` across exec), so
    ``ru_maxrss`` would never drop below ~30 MB. GNU time (/usr/bin/time, as
    the lab used) forks fwknopd from its own small image and reports it
    cleanly; without it ``max_rss_kb`` is None. A pidfd wakes us the moment
    the child exits (no polling); after ``timeout`` fwknopd is SIGKILLed.
    """
    use_time = os.access(GNU_TIME, os.X_OK)
    if use_time:
        time_path.unlink(missing_ok=True)
        cmd = [GNU_TIME, "-f", "maxrss_kb=%M", "-o", str(time_path), *cmd]
    else:
        log.warning("%s missing: max RSS is not measured", GNU_TIME)
    timed_out = False
    with open(log_path, "wb") as logf:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT
        )
        pidfd = os.pidfd_open(proc.pid)
        try:
            if not select.select([pidfd], [], [], timeout)[0]:
                timed_out = True
                if use_time:
                    _kill_children(proc.pid)  # fwknopd; GNU time then exits
                if not select.select([pidfd], [], [], 5.0)[0]:
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            _, status, ru = os.wait4(proc.pid, 0)
        finally:
            os.close(pidfd)
        wall = time.monotonic() - t0
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc  # reaped here; Popen must not wait for it again
    rss: int | None = None
    if use_time and time_path.exists():
        # GNU time: "Command terminated by signal N" / "... non-zero status N"
        for line in time_path.read_text().splitlines():
            if line.startswith("maxrss_kb="):
                rss = int(line.split("=", 1)[1])
            elif line.startswith("Command terminated by signal "):
                rc = -int(line.rsplit(" ", 1)[1])
    return _Measured(rc, wall, ru.ru_utime + ru.ru_stime, rss, timed_out)


def run_offline(
    pcap: Path,
    n_packets: int,
    workdir: Path,
    *,
    key_b64: str,
    hmac_b64: str,
    tuned: bool,
    digest_entries: int = 0,
    timeout: float = 600,
    fwknopd: str = FWKNOPD,
) -> dict[str, Any]:
    """Time ``fwknopd --test --pcap-file pcap -C n_packets`` over a pcap file.

    Config: ``PCAP_INTF lo``, ``PCAP_FILTER udp port 62201``, aging off (the
    pcap-file default; also set explicitly), ``ENABLE_DIGEST_PERSISTENCE Y``,
    one ``SOURCE ANY`` stanza with the keys and HMAC-SHA256. ``tuned`` adds
    ``PCAP_DISPATCH_COUNT 1000000`` and ``PCAP_LOOP_SLEEP 1``; otherwise
    fwknopd's defaults (100 per dispatch, 100 ms sleep: about 1000 pps).

    ``n_packets`` must equal the number of packets passing the filter
    (checked with libpcap, ValueError otherwise): a larger -C never exits (no
    exit at end of file) and a smaller one overshoots to the end of a dispatch
    batch. As a last resort fwknopd is killed after ``timeout`` seconds
    (``rc`` is then -9). ``digest_entries`` > 0 pre-seeds the replay cache with
    that many entries, each scanned for every base64 packet; a short ``-v``
    run first checks that fwknopd loads all of them (RuntimeError otherwise).
    Otherwise the cache starts empty (test mode never adds to it).

    ``wall_s`` (time.monotonic) runs from spawn to reap, so it includes
    startup and cache loading; ``pps`` = packets / wall_s. ``cpu_s`` is
    user+system from ``os.wait4`` (fwknopd plus ~1 ms of GNU time);
    ``max_rss_kb`` is fwknopd's peak RSS as GNU time reports it (see
    :func:`_run_measured` for why not ``ru_maxrss``). ``accepted`` counts the
    line fwknopd logs in test mode for an accepted knock (:data:`ACCEPT_TEST_LINE`).
    fwknopd's output goes to ``workdir/fwknopd.log``, not to the terminal.
    """
    pcap = Path(pcap).resolve()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    matching = count_filtered(pcap, PCAP_FILTER)
    if n_packets != matching:
        raise ValueError(
            f"{pcap.name}: {matching} packets pass {PCAP_FILTER!r}, not {n_packets}; "
            "fwknopd -C must be exactly that (no exit at EOF, overshoot by batch)"
        )
    settings = {
        "PCAP_INTF": "lo",
        "PCAP_FILTER": PCAP_FILTER,
        "ENABLE_SPA_PACKET_AGING": "N",
        "ENABLE_DIGEST_PERSISTENCE": "Y",
        **(TUNED_OFFLINE if tuned else {}),
    }
    args = _write_configs(workdir, settings, key_b64, hmac_b64)
    cache = workdir / "digest.cache"
    cache.unlink(missing_ok=True)
    if digest_entries > 0:
        write_digest_cache(cache, digest_entries)
        loaded = _loaded_cache_entries(workdir, args, fwknopd, timeout)
        if loaded != digest_entries:
            raise RuntimeError(
                f"fwknopd loaded {loaded} of {digest_entries} digest cache entries"
            )
    log_path = workdir / "fwknopd.log"
    cmd = [fwknopd, "-f", "-t", *args, "--pcap-file", str(pcap), "-C", str(n_packets)]
    log.info(
        "fwknopd offline: %s, %d packets, tuned=%s, digest cache %d",
        pcap.name,
        n_packets,
        tuned,
        digest_entries,
    )
    m = _run_measured(cmd, log_path, workdir / "time.txt", timeout)
    wall, rc = m.wall_s, m.rc
    text = log_path.read_bytes()
    if m.timed_out:
        log.error("fwknopd killed after %.0fs (see %s)", timeout, log_path)
    elif b"Packet count limit (%d) reached" % n_packets not in text:
        log.warning("fwknopd rc=%d without reaching -C (see %s)", rc, log_path)
    res: dict[str, Any] = {
        "packets": n_packets,
        "wall_s": round(wall, 4),
        "cpu_s": round(m.cpu_s, 4),
        "pps": round(n_packets / wall) if wall > 0 and not m.timed_out else None,
        "accepted": text.count(ACCEPT_TEST_LINE.encode()),
        "max_rss_kb": m.max_rss_kb,
        "rc": rc,
    }
    log.info("fwknopd offline result: %s", res)
    return res


def _run_probe(
    workdir: Path,
    args: list[str],
    payloads: Sequence[bytes],
    fwknopd: str,
    timeout: float,
) -> bytes:
    """fwknopd -v -t over a small pcap of ``payloads``; its log text."""
    probe = workdir / "probe.pcap"
    _write_tiny_pcap(probe, payloads)
    cmd = [
        fwknopd,
        "-f",
        "-t",
        "-v",
        *args,
        "--pcap-file",
        str(probe),
        "-C",
        str(len(payloads)),
    ]
    r = subprocess.run(
        cmd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    probe.unlink()
    (workdir / "fwknopd-probe.log").write_bytes(r.stdout + r.stderr)
    return r.stdout + r.stderr


def _loaded_cache_entries(
    workdir: Path, args: list[str], fwknopd: str, timeout: float
) -> int:
    """Entry count fwknopd -v reports for the digest cache named in ``args``."""
    junk = base64.b64encode(os.urandom(180)).rstrip(b"=")
    m = _CACHE_COUNT_RE.search(_run_probe(workdir, args, [junk], fwknopd, timeout))
    return int(m.group(1)) if m else -1


def check_digest_cache(
    workdir: Path,
    key_b64: str,
    hmac_b64: str,
    knock: bytes,
    entries: int,
    *,
    fwknopd: str = FWKNOPD,
    timeout: float = 120,
) -> dict[str, Any]:
    """Prove fwknopd loads a pre-seeded cache and that a cached knock replays.

    Writes ``entries`` filler digests plus the real digest of ``knock`` (last
    in fwknopd's scan), runs fwknopd -v -t over a pcap holding that knock and
    returns {"entries_loaded", "replay_detected", "accepted"}: expect
    entries + 1, True and 0.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    settings = {
        "PCAP_INTF": "lo",
        "PCAP_FILTER": PCAP_FILTER,
        "ENABLE_SPA_PACKET_AGING": "N",
        "ENABLE_DIGEST_PERSISTENCE": "Y",
    }
    args = _write_configs(workdir, settings, key_b64, hmac_b64)
    write_digest_cache(workdir / "digest.cache", entries, include=[knock])
    text = _run_probe(workdir, args, [knock], fwknopd, timeout)
    m = _CACHE_COUNT_RE.search(text)
    return {
        "entries_loaded": int(m.group(1)) if m else -1,
        "replay_detected": _REPLAY_LINE in text,
        "accepted": text.count(ACCEPT_TEST_LINE.encode()),
    }


# ------------------------------------------------------------------ live
def _netns_exists(ns: str) -> bool:
    r = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=False
    )
    return ns in {line.split()[0] for line in r.stdout.splitlines() if line.strip()}


def iptables_rule_count(ns: str, allow_ip: str) -> int:
    """ACCEPT rules for ``allow_ip`` in FWKNOP_INPUT of namespace ``ns``."""
    r = subprocess.run(
        ["ip", "netns", "exec", ns, "iptables", "-S", "FWKNOP_INPUT"],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:  # no chain (not started yet, or already flushed)
        return 0
    want = f"-s {allow_ip}/32 "
    return sum(
        1
        for line in r.stdout.splitlines()
        if line.startswith("-A FWKNOP_INPUT ") and want in line and "-j ACCEPT" in line
    )


class LiveFwknopd:
    """fwknopd in real mode, sniffing ``iface`` inside network namespace ``ns``.

    Runs ``ip netns exec NS fwknopd -f -i IFACE ...`` (``ip`` execs fwknopd, so
    :attr:`pid` is fwknopd's own PID). Config: ``PCAP_INTF IFACE``,
    ``PCAP_FILTER udp port 62201``, aging on (``MAX_SPA_PACKET_AGE 120``),
    digest persistence on, ``FLUSH_IPT_AT_INIT Y`` and ``FLUSH_IPT_AT_EXIT Y``;
    one ``SOURCE ANY`` stanza with ``FW_ACCESS_TIMEOUT 60`` and no
    ``OPEN_PORTS`` (any requested tcp/udp port is granted). ``tuned`` sets
    ``PCAP_DISPATCH_COUNT 1000000`` and ``PCAP_LOOP_SLEEP`` =
    ``loop_sleep_us`` (default :data:`TUNED_LIVE_LOOP_SLEEP_US`, 1000 us as in
    the lab); untuned keeps fwknopd's defaults (100, 100000 us). Every grant
    is a fork/exec of iptables (iptables-nft here) inside the namespace.

    Use as a context manager (start on enter, :meth:`stop` on exit). The
    digest cache starts empty unless ``digest_entries`` > 0.
    """

    def __init__(
        self,
        ns: str,
        iface: str,
        workdir: Path,
        *,
        key_b64: str,
        hmac_b64: str,
        tuned: bool = False,
        loop_sleep_us: int | None = None,
        fw_access_timeout: int = 60,
        digest_entries: int = 0,
        start_timeout: float = 15.0,
        fwknopd: str = FWKNOPD,
    ) -> None:
        self.ns = ns
        self.iface = iface
        self.workdir = Path(workdir).resolve()
        self.tuned = tuned
        self._key = key_b64
        self._hmac = hmac_b64
        self._loop_sleep = loop_sleep_us
        self._fw_timeout = fw_access_timeout
        self._digest_entries = digest_entries
        self._start_timeout = start_timeout
        self._fwknopd = fwknopd
        self._proc: subprocess.Popen[bytes] | None = None
        self._scan_pos = 0
        self._ports: list[int] = []
        self._processed = 0

    # -- lifecycle
    def start(self) -> LiveFwknopd:
        if self._proc is not None:
            raise RuntimeError("already started")
        if not self.ns or not _netns_exists(self.ns):
            raise ValueError(f"network namespace {self.ns!r} does not exist")
        self.workdir.mkdir(parents=True, exist_ok=True)
        settings = {
            "PCAP_INTF": self.iface,
            "PCAP_FILTER": PCAP_FILTER,
            "ENABLE_SPA_PACKET_AGING": "Y",
            "MAX_SPA_PACKET_AGE": "120",
            "ENABLE_DIGEST_PERSISTENCE": "Y",
            "FLUSH_IPT_AT_INIT": "Y",
            "FLUSH_IPT_AT_EXIT": "Y",
        }
        if self.tuned:
            sleep_us = self._loop_sleep or TUNED_LIVE_LOOP_SLEEP_US
            settings["PCAP_DISPATCH_COUNT"] = "1000000"
            settings["PCAP_LOOP_SLEEP"] = str(sleep_us)
        elif self._loop_sleep is not None:
            settings["PCAP_LOOP_SLEEP"] = str(self._loop_sleep)
        args = _write_configs(
            self.workdir, settings, self._key, self._hmac, self._fw_timeout
        )
        cache = self.workdir / "digest.cache"
        cache.unlink(missing_ok=True)
        if self._digest_entries > 0:
            write_digest_cache(cache, self._digest_entries)
        cmd = [
            "ip",
            "netns",
            "exec",
            self.ns,
            self._fwknopd,
            "-f",
            "-i",
            self.iface,
            *args,
        ]
        with open(self.log_path, "wb") as logf:  # the child keeps its own fd
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        log.info(
            "fwknopd live in %s on %s (pid %d, tuned=%s)",
            self.ns,
            self.iface,
            self._proc.pid,
            self.tuned,
        )
        deadline = time.monotonic() + self._start_timeout
        while True:
            if _READY_LINE in self.log_path.read_bytes():
                break
            if self._proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"fwknopd did not start in {self.ns}:\n{tail}")
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (fwknopd then flushes its chains), wait, SIGKILL if needed."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("fwknopd pid %d ignored SIGTERM; killing", proc.pid)
                proc.kill()
                proc.wait()
        log.info("fwknopd pid %d stopped, rc=%s", proc.pid, proc.returncode)
        return proc.returncode

    def __enter__(self) -> LiveFwknopd:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- observation
    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("not started")
        return self._proc.pid

    @property
    def log_path(self) -> Path:
        return self.workdir / "fwknopd.log"

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _scan(self) -> None:
        """Consume complete new log lines (incremental: floods make big logs)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._scan_pos)
                chunk = f.read()
        except FileNotFoundError:
            return
        cut = chunk.rfind(b"\n") + 1
        if not cut:
            return
        text = chunk[:cut].decode(errors="replace")
        self._scan_pos += cut
        self._ports.extend(int(m.group(1)) for m in GRANT_LOG_RE.finditer(text))
        self._processed += text.count(PROCESSED_LINE)

    def granted_ports(self) -> set[int]:
        """tcp ports of every "Added access rule ... tcp/PORT" line so far."""
        self._scan()
        return set(self._ports)

    def grant_count(self) -> int:
        """Number of grant log lines so far (a repeated port counts again)."""
        self._scan()
        return len(self._ports)

    def processed_count(self) -> int:
        """Packets that reached the stanza loop (one log line each)."""
        self._scan()
        return self._processed

    def rule_count(self, ns: str | None, allow_ip: str) -> int:
        """ACCEPT rules for ``allow_ip`` in FWKNOP_INPUT (``ns`` None: ours)."""
        return iptables_rule_count(ns or self.ns, allow_ip)

    def cpu_ticks(self) -> int:
        """utime + stime of fwknopd in clock ticks (:data:`CLK_TCK` per second)."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except FileNotFoundError:
            return 0
        fields = stat[stat.rindex(")") + 2 :].split()
        return int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat
