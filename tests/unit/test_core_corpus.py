"""The whole packet path (spa_core_process) against the Python oracle.

The C runner (csrc/tests/core_corpus.c) links every core source under
ASan/UBSan and feeds a generated corpus through one core: each frame sits in
a heap buffer of exactly its length, and after each frame the runner checks
the counters and drains the ring.  The corpus holds

* a fresh, valid knock for every link type x IPv4/IPv6 packet shape (IPv4
  options, IPv6 extension headers, 802.1Q, 802.1ad, QinQ, cooked captures,
  BSD loopback with every AF_INET6), each of which must be accepted with the
  oracle's decrypted request and replay key;
* every truncation of every valid frame, and every valid frame with one bit
  flipped at each byte of its UDP payload;
* replays, wrong ports, payloads one byte short or long, timestamps on and
  just past both edges of the window, unknown credential ids, wrong keys,
  fragments and other protocols carrying a knock;
* seeded random mutations of fresh knocks, where any outcome goes but an
  acceptance must still decrypt to the knock it came from.

Every expected outcome is computed exactly: the parse-level ones from the
frame's construction, the rest by :class:`Corpus.judge`, a Python model of
the core's checks from the payload length on, run in corpus order so that
it knows which knocks have been accepted before.
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
import random
import re
import struct
import subprocess
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import blake3
import pytest

from spa import protocol as P
from tests import cbuild
from tests import frames as fr

pytestmark = pytest.mark.sanitize


class Outcome(enum.IntEnum):
    """enum spa_counter (csrc/spa.h); ANY accepts every outcome."""

    ACCEPTED = 0
    DROP_LINK = 1
    DROP_NET = 2
    DROP_FRAGMENT = 3
    DROP_TRANSPORT = 4
    DROP_PORT = 5
    DROP_LENGTH = 6
    DROP_VERSION = 7
    DROP_UNKNOWN_ID = 8
    DROP_MAC = 9
    DROP_STALE = 10
    DROP_REPLAY = 11
    DROP_REPLAY_FULL = 12
    DROP_RING_FULL = 13
    ANY = 255


NCOUNTERS = 14
WINDOW_US = 30_000_000
NOW_US = 1_700_000_000_123_456
SRC4, DST4 = "192.0.2.10", "198.51.100.20"
SRC6, DST6 = "2001:db8::10", "2001:db8:ffff::20"
SPORT, DPORT = 40123, 62201
N_MUTANTS = 3000
MAX_IPV6_EXT = 8  # SPA_MAX_IPV6_EXT in csrc/parse.h
# Flipping this packet offset (an id byte) turns CREDS[0]'s id into
# CREDS[1]'s, so some flipped ids are known and fail on the tag instead.
ID_FLIP_OFFSET = 5


def flip_mask(offset: int) -> int:
    """The bit flipped at a payload offset by the bit-flip corpus."""
    return 1 << (offset % 8)


def make_creds() -> tuple[tuple[bytes, bytes], ...]:
    rng = random.Random(7001)
    creds = [(rng.randbytes(P.ID_LEN), rng.randbytes(P.SECRET_LEN)) for _ in range(5)]
    near = bytearray(creds[0][0])
    near[ID_FLIP_OFFSET - 1] ^= flip_mask(ID_FLIP_OFFSET)
    creds[1] = (bytes(near), creds[1][1])
    return tuple(creds)


CREDS = make_creds()


def request_for(i: int, version: int) -> P.Request:
    """A handful of request shapes, so that record bodies differ."""
    dst = ipaddress.ip_address(DST4 if version == 4 else DST6)
    shapes = [
        P.Request(ports=(("tcp", 22),), open_for=30, destination=dst),
        P.Request(
            ports=(("tcp", 22), ("udp", 53), ("tcp", 443)),
            open_for=3600,
            allow=ipaddress.ip_address("192.0.2.77"),
            destination=dst,
        ),
        P.Request(
            ports=tuple(("udp", 1000 + k) for k in range(P.MAX_PORTS)),
            open_for=P.MAX_OPEN,
            allow=ipaddress.ip_address("2001:db8::77"),
            destination=P.server_id_digest("bastion.example"),
        ),
        P.Request(
            ports=(("tcp", 8080),),
            open_for=1,
            destination=dst,
            forward=(ipaddress.ip_address("198.51.100.99"), 22),
        ),
    ]
    return shapes[i % len(shapes)]


# ---- frame shapes ----


@dataclass(frozen=True)
class IpSpec:
    """An IP packet shape around the UDP datagram."""

    name: str
    version: int
    options: bytes = b""
    ext: tuple[fr.Ext | int, ...] = ()
    df: bool = False


LINKS = fr.LINK_SPECS

IPS: list[IpSpec] = [
    IpSpec("v4", 4),
    IpSpec("v4-df", 4, df=True),
    IpSpec("v4-opt4", 4, options=fr.ipv4_options(4)),
    IpSpec("v4-opt20", 4, options=fr.ipv4_options(20)),
    IpSpec("v4-opt40", 4, options=fr.ipv4_options(40)),
    IpSpec("v6", 6),
    IpSpec("v6-hbh", 6, ext=(fr.IPPROTO_HOPOPTS,)),
    IpSpec("v6-rt", 6, ext=(fr.IPPROTO_ROUTING,)),
    IpSpec(
        "v6-hbh-dst-rt",
        6,
        ext=(fr.IPPROTO_HOPOPTS, fr.IPPROTO_DSTOPTS, fr.IPPROTO_ROUTING),
    ),
    IpSpec(
        "v6-long-ext",
        6,
        ext=(fr.Ext(fr.IPPROTO_HOPOPTS, 5), fr.Ext(fr.IPPROTO_ROUTING, 3)),
    ),
    IpSpec("v6-8ext", 6, ext=(fr.IPPROTO_DSTOPTS,) * MAX_IPV6_EXT),
]

COMBOS: list[tuple[fr.LinkSpec, IpSpec]] = [
    (link, ip) for link in LINKS for ip in IPS if ip.version in link.versions
]
RAW = fr.LinkSpec("raw12", fr.DLT_RAW)
V4, V6 = IPS[0], IPS[5]


def ip_packet(
    ip: IpSpec,
    payload: bytes,
    *,
    dport: int = DPORT,
    src: str | None = None,
    proto: int = fr.IPPROTO_UDP,
    mf: bool = False,
) -> bytes:
    """The IP packet of shape ``ip`` carrying ``payload`` over UDP."""
    if ip.version == 4:
        s = src or SRC4
        dgram = fr.udp_datagram(s, DST4, SPORT, dport, payload)
        return fr.ipv4(s, DST4, proto, dgram, options=ip.options, df=ip.df, mf=mf)
    s = src or SRC6
    dgram = fr.udp_datagram(s, DST6, SPORT, dport, payload)
    return fr.ipv6(s, DST6, proto, dgram, ext=ip.ext)


@dataclass(frozen=True)
class Flow:
    """What struct spa_record says about where a knock came from."""

    family: int
    src: bytes
    dst: bytes
    sport: int
    dport: int


def flow_of(version: int, src: str | None = None) -> Flow:
    if version == 4:
        return Flow(4, fr.addr16(src or SRC4), fr.addr16(DST4), SPORT, DPORT)
    return Flow(6, fr.addr16(src or SRC6), fr.addr16(DST6), SPORT, DPORT)


@dataclass(frozen=True)
class Knock:
    """A packet from the encoder and what it was built from."""

    cred: int
    wire: bytes
    request: P.Request
    plain: bytes

    @property
    def ts_us(self) -> int:
        return int.from_bytes(self.wire[9:17], "big")

    @property
    def replay_key(self) -> bytes:
        return self.wire[P.OFF_TAG : P.OFF_TAG + P.REPLAY_KEY_LEN]


@dataclass(frozen=True)
class Valid:
    """A valid frame and where its knock lies."""

    name: str
    dlt: int
    frame: bytes
    link_len: int
    ip_end: int
    payload_off: int
    knock: Knock
    flow: Flow


@dataclass(frozen=True)
class Case:
    group: str
    name: str
    dlt: int
    frame: bytes
    expect: Outcome
    knock: Knock | None = None  # what an acceptance must decrypt to
    flow: Flow | None = None  # and, for an expected one, where it came from


# ---- the corpus and its oracle ----


class Corpus:
    """Cases in order, with the model of the core that judges them."""

    def __init__(self, seed: int = 20240603) -> None:
        self.rng = random.Random(seed)
        self.cases: list[Case] = []
        self.keys = {
            cid: (i, P.Keys.derive(secret)) for i, (cid, secret) in enumerate(CREDS)
        }
        self.seen: set[bytes] = set()
        self.n_knocks = 0

    # -- knocks and the model --------------------------------------------
    def knock(
        self, *, cred: int | None = None, version: int = 4, ts: int = NOW_US
    ) -> Knock:
        """A fresh knock (new nonce), credentials and requests in turn."""
        i = self.n_knocks
        self.n_knocks += 1
        c = i % len(CREDS) if cred is None else cred
        req = request_for(i, version)
        cid, secret = CREDS[c]
        wire = P.encode_packet(
            cid, secret, req, timestamp_us=ts, nonce=self.rng.randbytes(P.NONCE_LEN)
        )
        return Knock(c, wire, req, P.encode_request(req))

    def judge(self, payload: bytes) -> Outcome:
        """The core's verdict on a UDP payload to the right port.

        Length, version, credential id, window, replay set, tag, in the
        core's order; an acceptance is remembered for later replays.
        """
        if len(payload) != P.WIRE_LEN:
            return Outcome.DROP_LENGTH
        if payload[0] != P.VERSION:
            return Outcome.DROP_VERSION
        entry = self.keys.get(payload[1 : 1 + P.ID_LEN])
        if entry is None:
            return Outcome.DROP_UNKNOWN_ID
        ts = int.from_bytes(payload[9:17], "big")
        if abs(NOW_US - ts) > WINDOW_US:
            return Outcome.DROP_STALE
        key = payload[P.OFF_TAG : P.OFF_TAG + P.REPLAY_KEY_LEN]
        if key in self.seen:
            return Outcome.DROP_REPLAY
        tag = blake3.blake3(payload[: P.OFF_TAG], key=entry[1].mac).digest()
        if not hmac.compare_digest(tag, payload[P.OFF_TAG :]):
            return Outcome.DROP_MAC
        self.seen.add(key)
        return Outcome.ACCEPTED

    # -- adding cases ----------------------------------------------------
    def add(
        self,
        group: str,
        name: str,
        dlt: int,
        frame: bytes,
        expect: Outcome,
        knock: Knock | None = None,
        flow: Flow | None = None,
    ) -> None:
        self.cases.append(Case(group, name, dlt, frame, expect, knock, flow))

    def add_judged(
        self,
        group: str,
        name: str,
        dlt: int,
        frame: bytes,
        payload: bytes,
        *,
        knock: Knock | None = None,
        flow: Flow | None = None,
        want: Outcome | None = None,
    ) -> Outcome:
        """A frame that parses, to the right port: the model decides.

        ``want`` states what the case is meant to test; a generator that
        builds something else fails here rather than test less.
        """
        expect = self.judge(payload)
        assert want is None or expect is want, f"{group}/{name}: {expect!r}"
        if expect is not Outcome.ACCEPTED:
            knock = flow = None
        self.add(group, name, dlt, frame, expect, knock, flow)
        return expect

    def wrap(
        self,
        link: fr.LinkSpec,
        ip: IpSpec,
        payload: bytes,
        *,
        dport: int = DPORT,
        src: str | None = None,
    ) -> bytes:
        pkt = ip_packet(ip, payload, dport=dport, src=src)
        return fr.link(
            link.dlt, pkt, vlan=link.vlan, family=link.family, trailer=link.trailer
        )

    def make_valid(self, link: fr.LinkSpec, ip: IpSpec, knock: Knock) -> Valid:
        pkt = ip_packet(ip, knock.wire)
        frame = fr.link(
            link.dlt, pkt, vlan=link.vlan, family=link.family, trailer=link.trailer
        )
        link_len = fr.link_header_len(link.dlt, len(link.vlan))
        ip_end = link_len + len(pkt)
        return Valid(
            f"{link.name}/{ip.name}",
            link.dlt,
            frame,
            link_len,
            ip_end,
            ip_end - P.WIRE_LEN,
            knock,
            flow_of(ip.version),
        )

    # -- the groups --------------------------------------------------------
    def valid_frames(self) -> list[Valid]:
        out = []
        for link, ip in COMBOS:
            v = self.make_valid(link, ip, self.knock(version=ip.version))
            self.add_judged(
                "valid", v.name, v.dlt, v.frame, v.knock.wire,
                knock=v.knock, flow=v.flow, want=Outcome.ACCEPTED,
            )
            out.append(v)
        return out

    def truncations(self, v: Valid) -> None:
        """Short of the link header: LINK; inside the IP packet: the
        declared IP length runs past the capture, NET; inside the trailer
        the knock is whole and already accepted."""
        for n in range(len(v.frame)):
            name = f"{v.name}[:{n}]"
            if n < v.link_len:
                self.add("truncated", name, v.dlt, v.frame[:n], Outcome.DROP_LINK)
            elif n < v.ip_end:
                self.add("truncated", name, v.dlt, v.frame[:n], Outcome.DROP_NET)
            else:
                self.add_judged(
                    "truncated", name, v.dlt, v.frame[:n], v.knock.wire,
                    want=Outcome.DROP_REPLAY,
                )

    def bit_flips(self, v: Valid) -> None:
        for off in range(P.WIRE_LEN):
            frame = bytearray(v.frame)
            frame[v.payload_off + off] ^= flip_mask(off)
            payload = bytes(frame[v.payload_off : v.payload_off + P.WIRE_LEN])
            self.add_judged("flip", f"{v.name}^{off}", v.dlt, bytes(frame), payload)

    def replays(self, valid: Sequence[Valid]) -> None:
        """The same knocks again, as sent and in other frames."""
        for v in valid:
            self.add_judged(
                "replay", v.name, v.dlt, v.frame, v.knock.wire,
                want=Outcome.DROP_REPLAY,
            )
        for i, v in enumerate(valid[::7]):
            link = LINKS[i % len(LINKS)]
            ip = V4 if 4 in link.versions else V6
            src = "192.0.2.99" if ip.version == 4 else "2001:db8::99"
            frame = self.wrap(link, ip, v.knock.wire, src=src)
            self.add_judged(
                "replay", f"{v.name}->{link.name}/{ip.name}", link.dlt, frame,
                v.knock.wire, want=Outcome.DROP_REPLAY,
            )

    def ports_and_lengths(self) -> None:
        """Wrong ports and lengths never consume a knock."""
        for link in (RAW, LINKS[0], *LINKS[8:10], LINKS[-1]):
            for ip in (V4, V6):
                if ip.version not in link.versions:
                    continue
                k = self.knock(version=ip.version)
                tag = f"{link.name}/{ip.name}"
                for port in (DPORT - 1, DPORT + 1, 53, 1, 65535):
                    frame = self.wrap(link, ip, k.wire, dport=port)
                    name = f"{tag}:{port}"
                    self.add("port", name, link.dlt, frame, Outcome.DROP_PORT)
                for payload in (
                    k.wire[:-1], k.wire + b"\0", k.wire[:-2], k.wire + k.wire[:1],
                    b"", k.wire[:1], k.wire * 2,
                ):
                    frame = self.wrap(link, ip, payload)
                    self.add_judged(
                        "length", f"{tag}:{len(payload)}", link.dlt, frame, payload,
                        want=Outcome.DROP_LENGTH,
                    )
                frame = self.wrap(link, ip, k.wire)
                self.add_judged(
                    "length", f"{tag}:then-valid", link.dlt, frame, k.wire,
                    knock=k, flow=flow_of(ip.version), want=Outcome.ACCEPTED,
                )

    def clock(self) -> None:
        """Timestamps on both edges of the window, and just past them."""
        w = WINDOW_US
        stale = (
            NOW_US - w - 1, NOW_US + w + 1, NOW_US - 10 * w, NOW_US + 10 * w,
            0, 1, 2**63, 2**64 - 1,
        )
        for ip in (V4, V6):
            for ts in stale:
                k = self.knock(version=ip.version, ts=ts)
                frame = self.wrap(RAW, ip, k.wire)
                for again in ("", "-again"):  # a stale knock is never stored
                    self.add_judged(
                        "clock", f"{ip.name}:{ts}{again}", RAW.dlt, frame, k.wire,
                        want=Outcome.DROP_STALE,
                    )
            for ts in (NOW_US - w, NOW_US + w, NOW_US - w + 1, NOW_US + w - 1):
                k = self.knock(version=ip.version, ts=ts)
                frame = self.wrap(RAW, ip, k.wire)
                self.add_judged(
                    "clock", f"{ip.name}:{ts}", RAW.dlt, frame, k.wire,
                    knock=k, flow=flow_of(ip.version), want=Outcome.ACCEPTED,
                )
                self.add_judged(
                    "clock", f"{ip.name}:{ts}-again", RAW.dlt, frame, k.wire,
                    want=Outcome.DROP_REPLAY,
                )

    def credentials(self) -> None:
        """Unknown ids, known ids with the wrong key, bad versions."""
        req = request_for(0, 4)
        known = {cid for cid, _ in CREDS}
        ids = [bytes(8), b"\xff" * 8, *(self.rng.randbytes(8) for _ in range(6))]
        for n, cid in enumerate(ids):
            assert cid not in known
            wire = P.encode_packet(cid, CREDS[0][1], req, timestamp_us=NOW_US)
            frame = self.wrap(RAW, V4, wire)
            self.add_judged(
                "cred", f"unknown{n}", RAW.dlt, frame, wire,
                want=Outcome.DROP_UNKNOWN_ID,
            )
        for n, (cid, secret) in enumerate(CREDS):
            other = CREDS[(n + 1) % len(CREDS)][1]
            for key, name in ((other, "other-cred"), (secret[::-1], "random")):
                wire = P.encode_packet(cid, key, req, timestamp_us=NOW_US)
                frame = self.wrap(RAW, V6, wire)
                self.add_judged(
                    "cred", f"{n}:{name}-secret", RAW.dlt, frame, wire,
                    want=Outcome.DROP_MAC,
                )
        k = self.knock()
        for version in (0, 2, 0x81, 0xFF):
            wire = bytes([version]) + k.wire[1:]
            frame = self.wrap(RAW, V4, wire)
            self.add_judged(
                "cred", f"version{version}", RAW.dlt, frame, wire,
                want=Outcome.DROP_VERSION,
            )

    def headers(self) -> None:
        """Valid knocks behind headers the parser refuses."""
        k4 = self.knock(version=4)
        k6 = self.knock(version=6)
        eth = LINKS[8]
        frag = fr.Ext(fr.IPPROTO_FRAGMENT, more=True, ident=1)
        dgram6 = fr.udp_datagram(SRC6, DST6, SPORT, DPORT, k6.wire)
        cases = [
            (
                "v4-mf", fr.DLT_RAW, ip_packet(V4, k4.wire, mf=True),
                Outcome.DROP_FRAGMENT,
            ),
            (
                "v6-frag", fr.DLT_RAW,
                fr.ipv6(SRC6, DST6, fr.IPPROTO_UDP, dgram6, ext=(frag,)),
                Outcome.DROP_FRAGMENT,
            ),
            (
                "v4-tcp", fr.DLT_RAW, ip_packet(V4, k4.wire, proto=fr.IPPROTO_TCP),
                Outcome.DROP_TRANSPORT,
            ),
            (
                "v6-tcp", fr.DLT_RAW, ip_packet(V6, k6.wire, proto=fr.IPPROTO_TCP),
                Outcome.DROP_TRANSPORT,
            ),
            (
                "eth-arp", eth.dlt,
                fr.link(eth.dlt, ip_packet(V4, k4.wire), ethertype=fr.ETHERTYPE_ARP),
                Outcome.DROP_NET,
            ),
            (
                "eth-3tags", eth.dlt,
                fr.link(eth.dlt, ip_packet(V4, k4.wire), vlan=(1, 2, 3)),
                Outcome.DROP_LINK,
            ),
            ("dlt2", 2, ip_packet(V4, k4.wire), Outcome.DROP_LINK),
            ("dlt-max", 0xFFFFFFFF, ip_packet(V4, k4.wire), Outcome.DROP_LINK),
        ]
        for name, dlt, frame, expect in cases:
            self.add("header", name, dlt, frame, expect)
        # none of that consumed the knocks
        for k, ip in ((k4, V4), (k6, V6)):
            self.add_judged(
                "header", f"{ip.name}-then-valid", RAW.dlt, self.wrap(RAW, ip, k.wire),
                k.wire, knock=k, flow=flow_of(ip.version), want=Outcome.ACCEPTED,
            )

    def mutants(self, count: int) -> None:
        """Fresh knocks with random damage, mostly to the headers."""
        rng = self.rng
        for i in range(count):
            link, ip = rng.choice(COMBOS)
            ts = NOW_US + rng.randint(-WINDOW_US, WINDOW_US)
            v = self.make_valid(link, ip, self.knock(version=ip.version, ts=ts))
            frame = bytearray(v.frame)
            for _ in range(rng.randint(1, 4)):
                if rng.random() < 0.75:
                    pos = rng.randrange(v.payload_off)
                else:
                    pos = rng.randrange(len(frame))
                if rng.random() < 0.5:
                    frame[pos] ^= 1 << rng.randrange(8)
                else:
                    frame[pos] = rng.randrange(256)
            r = rng.random()
            if r < 0.15:
                del frame[rng.randrange(len(frame)) :]
            elif r < 0.25:
                frame += rng.randbytes(rng.randint(1, 16))
            name = f"{i}:{v.name}"
            self.add("mutant", name, v.dlt, bytes(frame), Outcome.ANY, v.knock)


def build_corpus(n_mutants: int = N_MUTANTS) -> Corpus:
    c = Corpus()
    valid = c.valid_frames()
    for v in valid:
        c.truncations(v)
    for v in valid:
        c.bit_flips(v)
    c.replays(valid)
    c.ports_and_lengths()
    c.clock()
    c.credentials()
    c.headers()
    c.mutants(n_mutants)
    return c


def header() -> bytes:
    creds = b"".join(cid + secret for cid, secret in CREDS)
    return struct.pack("<I", len(CREDS)) + creds + struct.pack("<QQ", WINDOW_US, NOW_US)


def record(dlt: int, frame: bytes, expect: Outcome) -> bytes:
    return struct.pack("<IIB", dlt & 0xFFFFFFFF, len(frame), expect) + frame


def encode(cases: Sequence[Case]) -> bytes:
    return header() + b"".join(record(c.dlt, c.frame, c.expect) for c in cases)


# ---- the runner ----


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    exe = tmp_path_factory.mktemp("core_corpus") / "core_corpus"
    sources = [cbuild.CTESTS / "core_corpus.c", *cbuild.core_sources()]
    return cbuild.build(sources, exe, extra=["-lpcap", "-pthread"])


def run(exe: Path, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(exe), str(path)], capture_output=True, text=True, timeout=300
    )


@dataclass(frozen=True)
class Accepted:
    """One "acc" line of the runner: a record the core pushed."""

    index: int
    cred: int
    flow: Flow
    ts_us: int
    rx_us: int
    replay_key: bytes
    body: bytes


ACC_LINE = re.compile(
    r"acc (\d+) (\d+) ([46]) ([0-9a-f]{32}) ([0-9a-f]{32}) (\d+) (\d+) (\d+) (\d+)"
    rf" ([0-9a-f]{{{2 * P.REPLAY_KEY_LEN}}}) ([0-9a-f]{{{2 * P.BODY_LEN}}})$"
)


def parse_output(stdout: str) -> tuple[list[Accepted], list[int], str]:
    accepted: list[Accepted] = []
    counters: list[int] = []
    summary = ""
    for line in stdout.splitlines():
        if line.startswith("acc "):
            m = ACC_LINE.match(line)
            assert m, f"bad acc line: {line}"
            g = m.groups()
            flow = Flow(
                int(g[2]), bytes.fromhex(g[3]), bytes.fromhex(g[4]), int(g[5]),
                int(g[6]),
            )
            accepted.append(
                Accepted(
                    int(g[0]), int(g[1]), flow, int(g[7]), int(g[8]),
                    bytes.fromhex(g[9]), bytes.fromhex(g[10]),
                )
            )
        elif line.startswith("counters "):
            counters = [int(x) for x in line.split()[1:]]
        elif line.startswith("frames="):
            summary = line
    return accepted, counters, summary


def check_against_oracle(case: Case, acc: Accepted) -> None:
    """An accepted record holds the knock's request and replay key."""
    k = case.knock
    assert k is not None, f"{case.group}/{case.name}: accepted without a knock"
    oracle = P.decode_packet(k.wire, CREDS[k.cred][1])
    assert acc.cred == k.cred, case.name
    assert acc.ts_us == oracle.timestamp_us == k.ts_us, case.name
    assert acc.rx_us == NOW_US, case.name
    assert acc.replay_key == oracle.replay_key == k.replay_key, case.name
    assert acc.body == k.plain == P.encode_request(oracle.request), case.name
    assert P.decode_request(acc.body) == k.request, case.name


# ---- the tests ----


def test_outcomes_match_spa_h() -> None:
    text = (cbuild.CSRC / "spa.h").read_text()
    body = text[text.index("enum spa_counter {") : text.index("SPA_NCOUNTERS")]
    names = re.findall(r"SPA_C_([A-Z_]+)", body)
    assert names == [o.name for o in Outcome if o is not Outcome.ANY]
    assert len(names) == NCOUNTERS


def test_corpus_builders_are_consistent() -> None:
    """The generator's bookkeeping, independent of the C code."""
    c = Corpus()
    for v in c.valid_frames():
        assert v.frame[v.payload_off : v.payload_off + P.WIRE_LEN] == v.knock.wire
        assert v.frame[v.link_len : v.ip_end][0] >> 4 == v.flow.family
        pkt = P.decode_packet(v.knock.wire, CREDS[v.knock.cred][1])
        assert pkt.request == v.knock.request, v.name
        assert pkt.cred_id == CREDS[v.knock.cred][0]
    names = [(case.group, case.name) for case in c.cases]
    assert len(set(names)) == len(names)
    wires = [case.knock.wire for case in c.cases if case.knock]
    assert len({w[P.OFF_TAG :] for w in wires}) == len(wires)
    # every link type of tests/frames.py, with both IP versions
    dlts = {v for k, v in vars(fr).items() if k.startswith(("DLT_", "LINKTYPE_"))}
    for version in (4, 6):
        have = {link.dlt for link, ip in COMBOS if ip.version == version}
        assert have == dlts - {fr.DLT_IPV6 if version == 4 else fr.DLT_IPV4}
    # one bit flip turns a configured id into another configured id
    assert CREDS[0][0] != CREDS[1][0]
    flipped = bytearray(CREDS[0][0])
    flipped[ID_FLIP_OFFSET - 1] ^= flip_mask(ID_FLIP_OFFSET)
    assert bytes(flipped) == CREDS[1][0]


def test_core_corpus(runner: Path, tmp_path: Path) -> None:
    corpus = build_corpus()
    cases = corpus.cases
    path = tmp_path / "corpus.bin"
    path.write_bytes(encode(cases))
    groups = Counter(case.group for case in cases)
    assert groups["valid"] == len(COMBOS) >= 200
    assert len(cases) > 80_000
    flips = Counter(case.expect for case in cases if case.group == "flip")
    # a flip in the high bytes of the timestamp moves it out of the window;
    # a flip outside the tag of an accepted knock still carries its tag,
    # which the replay set (asked before the MAC) already holds
    assert set(flips) == {
        Outcome.DROP_VERSION, Outcome.DROP_UNKNOWN_ID, Outcome.DROP_STALE,
        Outcome.DROP_REPLAY, Outcome.DROP_MAC,
    }
    assert all(c.expect is not Outcome.ACCEPTED for c in cases if c.group == "flip")

    res = run(runner, path)
    mism = [ln for ln in res.stdout.splitlines() if ln.startswith("mismatch")]
    detail = "\n".join(
        f"{ln}  <- {cases[int(ln.split()[1].split('=')[1])].group}/"
        f"{cases[int(ln.split()[1].split('=')[1])].name}"
        for ln in mism[:40]
    )
    assert res.returncode == 0, f"rc={res.returncode}\n{detail}\n{res.stderr[-4000:]}"
    assert "ERROR: AddressSanitizer" not in res.stderr
    assert "runtime error" not in res.stderr
    accepted, counters, summary = parse_output(res.stdout)
    assert summary == f"frames={len(cases)} mismatches=0"

    # every expected acceptance, exactly as the oracle decrypts it
    expected = {i for i, c in enumerate(cases) if c.expect is Outcome.ACCEPTED}
    got = {a.index for a in accepted}
    assert expected <= got, sorted(expected - got)[:10]
    for acc in accepted:
        case = cases[acc.index]
        assert case.expect in (Outcome.ACCEPTED, Outcome.ANY), case.name
        check_against_oracle(case, acc)
        if case.expect is Outcome.ACCEPTED:
            assert acc.flow == case.flow, case.name
    # no tag is ever accepted twice
    assert len({a.replay_key for a in accepted}) == len(accepted)

    # counters: one per frame; exact for every case with an expectation
    assert len(counters) == NCOUNTERS
    assert sum(counters) == len(cases)
    want = Counter(c.expect for c in cases if c.expect is not Outcome.ANY)
    n_any = sum(1 for c in cases if c.expect is Outcome.ANY)
    extra = [counters[o] - want[o] for o in Outcome if o is not Outcome.ANY]
    assert min(extra) >= 0 and sum(extra) == n_any
    assert extra[Outcome.ACCEPTED] == len(got - expected)
    assert counters[Outcome.DROP_REPLAY_FULL] == counters[Outcome.DROP_RING_FULL] == 0


def test_runner_reports_a_wrong_expectation(runner: Path, tmp_path: Path) -> None:
    """A harness that cannot fail proves nothing."""
    c = Corpus(seed=1)
    k = c.knock()
    frame = ip_packet(V4, k.wire)
    path = tmp_path / "wrong.bin"
    path.write_bytes(
        header()
        + record(fr.DLT_RAW, frame, Outcome.DROP_MAC)
        + record(fr.DLT_RAW, frame, Outcome.DROP_REPLAY)
    )
    res = run(runner, path)
    assert res.returncode == 1, res.stderr
    lines = res.stdout.splitlines()
    assert "mismatch index=0 linktype=12 expected=9 got=0" in lines
    assert lines[-1] == "frames=2 mismatches=1"
    counters = [int(x) for x in lines[-2].split()[1:]]
    assert counters[Outcome.ACCEPTED] == counters[Outcome.DROP_REPLAY] == 1


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("empty", b""),
        ("creds-past-end", struct.pack("<I", 2) + bytes(40)),
        ("no-clock", struct.pack("<I", 0) + bytes(15)),
        ("short-record-header", header() + b"\x0c\0\0\0\x05"),
        ("frame-past-end", header() + struct.pack("<IIB", 12, 10, 0) + bytes(9)),
    ],
)
def test_runner_refuses_a_bad_corpus(
    runner: Path, tmp_path: Path, name: str, data: bytes
) -> None:
    path = tmp_path / f"{name}.bin"
    path.write_bytes(data)
    res = run(runner, path)
    assert res.returncode == 2, res.stdout
    assert "frames=" not in res.stdout
