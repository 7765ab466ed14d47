"""``spad --pcap-file``: capture files through the CLI, end to end.

Each test writes a server config (mode 0600) and a pcap file, runs the
installed ``spad`` console script on it and reads the summary it prints.
The kernel filter (build_filter in csrc/core.c) is applied to files too, so
garbage that fails it never reaches the core: only outcomes that the filter
cannot hide are asserted exactly (knocks accepted, granted or refused by
policy, replays, knocks with a bad tag or an unknown id).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from spa import protocol as P
from spa.core import COUNTER_NAMES
from tests import frames as fr
from tests.pcapfile import write_pcap

ROOT = Path(__file__).resolve().parents[2]
PORT = 62201
SRC4, DST4, OTHER4 = "192.0.2.10", "198.51.100.20", "198.51.100.200"
SRC6, DST6, OTHER6 = "2001:db8::10", "2001:db8:ffff::20", "2001:db8:ffff::200"
SUMMARY_KEYS = {
    *COUNTER_NAMES, "granted", "refused", "malformed",
    "capture_seconds", "capture_cpu_seconds",
}
HOUR_US = 3600 * 1_000_000


def spad_command() -> list[str]:
    """``python -m spa`` if the package is runnable, else the console script."""
    if (ROOT / "spa" / "__main__.py").exists():
        return [sys.executable, "-m", "spa"]
    script = Path(sys.executable).with_name("spad")
    assert script.exists(), f"spad console script not found next to {sys.executable}"
    return [str(script)]


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class Server:
    config: Path
    cred_id: bytes
    secret: bytes

    def knock(
        self,
        dst: str,
        *,
        ts_us: int | None = None,
        cred_id: bytes | None = None,
        secret: bytes | None = None,
    ) -> bytes:
        """A fresh knock for tcp/22 naming ``dst`` as its destination."""
        req = P.Request(
            ports=(("tcp", 22),), open_for=30, destination=ipaddress.ip_address(dst)
        )
        return P.encode_packet(
            cred_id or self.cred_id,
            secret or self.secret,
            req,
            timestamp_us=now_us() if ts_us is None else ts_us,
        )


def write_config(tmp_path: Path, mode: int = 0o600) -> Server:
    rng = random.Random(4242)
    cred_id, secret = rng.randbytes(8), rng.randbytes(32)
    path = tmp_path / "spad.toml"
    path.write_text(
        "[server]\n"
        'interface = "lo"\n'
        f"port = {PORT}\n"
        'firewall = "none"\n'
        f'state_dir = "{tmp_path / "state"}"\n'
        "\n"
        "[[credential]]\n"
        'name = "alice"\n'
        f'id = "{cred_id.hex()}"\n'
        f'secret = "{base64.b64encode(secret).decode()}"\n'
        'allow = ["tcp/22"]\n'
    )
    path.chmod(mode)
    return Server(path, cred_id, secret)


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return write_config(tmp_path)


def spad(
    server: Server, pcap: Path, *args: str, as_json: bool = True
) -> subprocess.CompletedProcess[str]:
    cmd = [
        *spad_command(),
        "--config",
        str(server.config),
        "--pcap-file",
        str(pcap),
        *(["--json"] if as_json else []),
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def summary(res: subprocess.CompletedProcess[str]) -> dict[str, int]:
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert set(out) == SUMMARY_KEYS
    return {k: int(v) for k, v in out.items()}


def udp(
    version: int,
    payload: bytes,
    *,
    dport: int = PORT,
    options: bytes = b"",
    ext: tuple[int, ...] = (),
) -> bytes:
    """An IP/UDP packet from the source to the server's own address."""
    if version == 4:
        return fr.udp4(SRC4, DST4, 40000, dport, payload, options)
    return fr.udp6(SRC6, DST6, 40000, dport, payload, ext=ext)


# ---- one capture per link type ----


@dataclass(frozen=True)
class Capture:
    """A link type to write a capture in, and the knocks it can carry."""

    name: str
    dlt: int
    versions: tuple[int, ...] = (4, 6)
    vlans: tuple[tuple[int | tuple[int, int], ...], ...] = ()
    families6: tuple[int, ...] = ()  # more AF_INET6 values (NULL, LOOP)


CAPTURES = [
    Capture(
        "en10mb",
        fr.DLT_EN10MB,
        vlans=((100,), ((fr.TPID_8021AD, 10), (fr.TPID_8021Q, 20))),
    ),
    Capture("linux-sll", fr.DLT_LINUX_SLL),
    Capture("linux-sll2", fr.DLT_LINUX_SLL2),
    Capture("raw12", fr.DLT_RAW),
    Capture("raw101", fr.LINKTYPE_RAW),
    Capture(
        "null",
        fr.DLT_NULL,
        families6=(fr.AF_INET6_FREEBSD, fr.AF_INET6_DARWIN),
    ),
    Capture(
        "loop",
        fr.DLT_LOOP,
        families6=(fr.AF_INET6_FREEBSD, fr.AF_INET6_DARWIN),
    ),
    Capture("ipv4", fr.DLT_IPV4, (4,)),
    Capture("ipv6", fr.DLT_IPV6, (6,)),
]


@dataclass
class Expect:
    accepted: int = 0
    granted: int = 0
    refused: int = 0
    drop_mac: int = 0
    drop_unknown_id: int = 0
    drop_replay: int = 0


def capture_frames(server: Server, cap: Capture) -> tuple[list[bytes], Expect]:
    """Knocks (granted and refused), garbage and one replay, in ``cap``."""
    rng = random.Random(cap.dlt)
    frames: list[bytes] = []
    want = Expect()

    def add(
        packet: bytes,
        family: int | None = None,
        vlan: tuple[int | tuple[int, int], ...] = (),
    ) -> None:
        frames.append(fr.link(cap.dlt, packet, family=family, vlan=vlan))

    for version in cap.versions:
        dst, other = (DST4, OTHER4) if version == 4 else (DST6, OTHER6)
        add(udp(version, server.knock(dst)))
        # IPv4 options, IPv6 extension headers
        add(
            udp(
                version,
                server.knock(dst),
                options=fr.ipv4_options(8),
                ext=(fr.IPPROTO_HOPOPTS, fr.IPPROTO_DSTOPTS),
            )
        )
        want.accepted += 2
        want.granted += 2
        # authentic, but naming another server: the policy refuses it
        add(udp(version, server.knock(other)))
        want.accepted += 1
        want.refused += 1
        # the wrong key: through the filter, dropped by the core; an unknown
        # id: the kernel filter, which carries the configured ids, drops it
        add(udp(version, server.knock(dst, secret=rng.randbytes(32))))
        want.drop_mac += 1
        add(udp(version, server.knock(dst, cred_id=rng.randbytes(8))))
        # garbage the filter or the parser throws away
        add(udp(version, server.knock(dst), dport=PORT + 1))
        add(udp(version, server.knock(dst)[:-1]))
        add(udp(version, rng.randbytes(rng.randrange(1, 300))))
        add(udp(version, server.knock(dst))[:60])
    for af in cap.families6:
        add(udp(6, server.knock(DST6)), family=af)
        want.accepted += 1
        want.granted += 1
    for tags in cap.vlans:
        for version in (4, 6):
            dst = DST4 if version == 4 else DST6
            add(udp(version, server.knock(dst)), vlan=tags)
            want.accepted += 1
            want.granted += 1
    frames.append(rng.randbytes(40))
    frames.append(b"")
    frames.append(frames[0])  # a replay of the first knock
    want.drop_replay += 1
    return frames, want


@pytest.mark.parametrize("cap", CAPTURES, ids=lambda c: c.name)
def test_every_link_type(server: Server, tmp_path: Path, cap: Capture) -> None:
    frames, want = capture_frames(server, cap)
    pcap = tmp_path / f"{cap.name}.pcap"
    t = now_us()
    write_pcap(pcap, cap.dlt, [(t + i, f) for i, f in enumerate(frames)])
    res = spad(server, pcap)
    got = summary(res)
    assert {k: got[k] for k in vars(want)} == vars(want)
    assert got["malformed"] == 0
    assert sum(got[k] for k in COUNTER_NAMES) <= len(frames)


def test_plain_summary_is_one_line_of_the_same_counts(
    server: Server, tmp_path: Path
) -> None:
    frames, want = capture_frames(server, CAPTURES[0])
    pcap = tmp_path / "en10mb.pcap"
    write_pcap(pcap, fr.DLT_EN10MB, [(now_us(), f) for f in frames])
    as_json = summary(spad(server, pcap))
    res = spad(server, pcap, as_json=False)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 1
    assert f"accepted={want.accepted}" in lines[0].split()
    pairs = dict(item.split("=", 1) for item in lines[0].split())
    timing = {"capture_seconds", "capture_cpu_seconds"}
    assert set(pairs) == set(as_json)
    assert {k: int(v) for k, v in pairs.items() if k not in timing} == {
        k: v for k, v in as_json.items() if k not in timing
    }


# ---- the clock ----


@pytest.mark.parametrize(
    ("args", "accepted", "stale"),
    [(("--clock", "pcap"), 1, 0), ((), 0, 1), (("--clock", "real"), 0, 1)],
    ids=["pcap", "default", "real"],
)
def test_pcap_clock_judges_age_by_capture_time(
    server: Server, tmp_path: Path, args: tuple[str, ...], accepted: int, stale: int
) -> None:
    """An hour-old capture of a knock is fresh by its own clock only."""
    then = now_us() - HOUR_US
    frame = udp(4, server.knock(DST4, ts_us=then))
    pcap = tmp_path / "old.pcap"
    write_pcap(pcap, fr.DLT_RAW, [(then + 2_000, frame)])
    got = summary(spad(server, pcap, *args))
    assert (got["accepted"], got["drop_stale"]) == (accepted, stale)
    assert got["granted"] == accepted


# ---- volume ----


def garbage(rng: random.Random, server: Server, i: int) -> bytes:
    """Ethernet garbage of many kinds, none of it an acceptable knock."""
    version = 4 if i % 2 else 6
    dst = DST4 if version == 4 else DST6
    kind = i % 8
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 400))
    if kind == 1:
        return fr.link(fr.DLT_EN10MB, rng.randbytes(200), ethertype=fr.ETHERTYPE_IPV4)
    if kind == 2:  # the right length and version byte, unknown id
        payload = b"\x01" + rng.randbytes(P.WIRE_LEN - 1)
        return fr.link(fr.DLT_EN10MB, udp(version, payload))
    if kind == 3:
        payload = rng.randbytes(rng.randrange(0, 400))
        return fr.link(fr.DLT_EN10MB, udp(version, payload))
    if kind == 4:
        payload = server.knock(dst, cred_id=rng.randbytes(8))
        dport = rng.randrange(1, PORT)
        return fr.link(fr.DLT_EN10MB, udp(version, payload, dport=dport))
    if kind == 5:  # a forged tag
        payload = server.knock(dst)[: P.OFF_TAG] + rng.randbytes(P.TAG_LEN)
        return fr.link(fr.DLT_EN10MB, udp(version, payload))
    if kind == 6:
        frame = fr.link(fr.DLT_EN10MB, udp(version, server.knock(dst)))
        return frame[: rng.randrange(len(frame))]
    return fr.link(fr.DLT_EN10MB, udp(version, server.knock(dst)[1:] + b"\x01"))


def test_knocks_found_among_garbage(server: Server, tmp_path: Path) -> None:
    rng = random.Random(99)
    frames = [garbage(rng, server, i) for i in range(20_000)]
    for n in range(50):
        version, dst = (4, DST4) if n % 2 else (6, DST6)
        tags: tuple[int, ...] = (n,) if n % 5 == 0 else ()
        knock = fr.link(fr.DLT_EN10MB, udp(version, server.knock(dst)), vlan=tags)
        frames.insert(rng.randrange(len(frames) + 1), knock)
    pcap = tmp_path / "flood.pcap"
    t = now_us()
    write_pcap(pcap, fr.DLT_EN10MB, [(t + i, f) for i, f in enumerate(frames)])
    got = summary(spad(server, pcap))
    assert (got["accepted"], got["granted"], got["drop_replay"]) == (50, 50, 0)
    assert got["drop_ring_full"] == got["drop_replay_full"] == 0
    assert sum(got[k] for k in COUNTER_NAMES) <= len(frames)


# ---- errors ----


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_missing_pcap_file(server: Server, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pcap"
    res = spad(server, missing)
    assert res.returncode == 1
    assert str(missing) in one_line(res.stderr)
    assert res.stdout == ""


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("empty", b""),
        ("truncated-header", bytes.fromhex("d4c3b2a1020004000000")),
        ("not-a-capture", b"this is not a capture file, just text\n" * 4),
    ],
)
def test_malformed_pcap_file(
    server: Server, tmp_path: Path, name: str, data: bytes
) -> None:
    pcap = tmp_path / f"{name}.pcap"
    pcap.write_bytes(data)
    res = spad(server, pcap)
    assert res.returncode != 0
    assert str(pcap) in one_line(res.stderr)
    assert res.stdout == ""


def test_truncated_last_record_is_an_error_after_the_rest(
    server: Server, tmp_path: Path
) -> None:
    """Frames before the damage count; the run still fails."""
    frames = [udp(4, server.knock(DST4)) for _ in range(3)]
    pcap = tmp_path / "cut.pcap"
    write_pcap(pcap, fr.DLT_RAW, [(now_us(), f) for f in frames])
    pcap.write_bytes(pcap.read_bytes()[:-50])
    res = spad(server, pcap)
    assert res.returncode == 1
    got = json.loads(res.stdout)
    assert (got["accepted"], got["granted"]) == (2, 2)
    assert "capture stopped" in one_line(res.stderr)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_config_with_a_readable_secret_is_refused(tmp_path: Path, mode: int) -> None:
    server = write_config(tmp_path, mode)
    pcap = tmp_path / "k.pcap"
    write_pcap(pcap, fr.DLT_RAW, [(now_us(), udp(4, server.knock(DST4)))])
    res = spad(server, pcap)
    assert res.returncode == 1
    line = one_line(res.stderr)
    assert str(server.config) in line
    assert f"chmod 600 {server.config}" in line
    assert res.stdout == ""
    assert os.stat(server.config).st_mode & 0o777 == mode  # left as it was


# ---- what the log says ----


def test_decision_log_names_what_was_asked(server: Server, tmp_path: Path) -> None:
    """Refusals say what was asked; a capped grant says what it asked for."""

    def knock(**kw: object) -> bytes:
        req = P.Request(**{  # type: ignore[arg-type]
            "ports": (("tcp", 22),), "open_for": 30,
            "destination": ipaddress.ip_address(DST4), **kw,
        })
        return udp(4, P.encode_packet(server.cred_id, server.secret, req,
                                      timestamp_us=now_us()))

    frames = [
        knock(open_for=1000),
        knock(open_for=300),
        knock(destination=ipaddress.ip_address(OTHER4)),
        knock(destination=P.server_id_digest("elsewhere.example")),
        knock(allow=ipaddress.ip_address("192.0.2.1")),
        knock(ports=(("tcp", 22), ("tcp", 23))),
    ]
    pcap = tmp_path / "decisions.pcap"
    write_pcap(pcap, fr.DLT_RAW, [(now_us() + i, f) for i, f in enumerate(frames)])
    res = spad(server, pcap, "-v")
    got = summary(res)
    assert (got["granted"], got["refused"]) == (2, 4)
    log = res.stderr
    digest = P.server_id_digest("elsewhere.example").hex()[:8]
    for line in (
        f"granted alice: {SRC4} tcp/22 for 300s (asked 1000s) (knock from {SRC4})",
        f"granted alice: {SRC4} tcp/22 for 300s (knock from {SRC4})",
        f"refused alice from {SRC4}: wrong destination (asked {OTHER4})",
        f"refused alice from {SRC4}: wrong destination "
        f"(asked server id digest {digest})",
        f"refused alice from {SRC4}: other address not allowed (asked 192.0.2.1)",
        f"refused alice from {SRC4}: port not allowed (asked tcp/22,tcp/23)",
    ):
        assert sum(x.endswith(line) for x in log.splitlines()) == 1, (line, log)


# ---- the replay state ----


def test_large_replay_state_is_restored_and_enforced(
    server: Server, tmp_path: Path
) -> None:
    """More journal entries than replay_capacity: the set grows to hold them
    all (a forgotten key could be replayed), and a journalled knock is
    refused."""
    from spa.replaystore import ReplayStore

    knock = server.knock(DST4)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    store = ReplayStore(state)
    expires = now_us() + 60_000_000
    store.append((random.randbytes(16), expires) for _ in range(40_000))
    store.append([(knock[P.OFF_TAG : P.OFF_TAG + 16], expires)])
    store.close()
    pcap = tmp_path / "one.pcap"
    write_pcap(pcap, fr.DLT_EN10MB, [(now_us(), fr.link(fr.DLT_EN10MB,
                                                        udp(4, knock)))])  # fmt: skip
    res = spad(server, pcap, "--state-dir", str(state), "-v")
    got = summary(res)
    assert (got["accepted"], got["drop_replay"]) == (0, 1)
    assert "40001 live entries restored" in res.stderr
