"""The frame parser (csrc/parse.c) against a generated corpus, under ASan/UBSan.

Valid UDP frames for every supported link type and both IP versions must
parse to the payload they carry; every truncation of them, and a catalogue
of malformed headers, must be dropped with the right verdict.  The C runner
(csrc/tests/parse_corpus.c) copies each frame into a heap buffer of its
exact length, so any read past the capture is a sanitizer error.
"""

from __future__ import annotations

import enum
import random
import re
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import cbuild
from tests import frames as fr

pytestmark = pytest.mark.sanitize


class Verdict(enum.IntEnum):
    """enum spa_parse_verdict; ANY accepts every verdict (mutated frames)."""

    OK = 0
    LINK = 1
    NET = 2
    FRAGMENT = 3
    TRANSPORT = 4
    ANY = 255


PAYLOAD = bytes((i * 37 + 11) & 0xFF for i in range(171))
SRC4, DST4 = "192.0.2.10", "198.51.100.20"
SRC6, DST6 = "2001:db8::10", "2001:db8:ffff::20"
SPORT, DPORT = 40123, 62201


@dataclass(frozen=True)
class Packet:
    """An IP packet and what the parser should report for it."""

    name: str
    data: bytes
    version: int
    payload_off: int  # from the start of the IP header
    payload: bytes

    @property
    def src(self) -> bytes:
        return fr.addr16(SRC4 if self.version == 4 else SRC6)

    @property
    def dst(self) -> bytes:
        return fr.addr16(DST4 if self.version == 4 else DST6)


@dataclass(frozen=True)
class Valid:
    """A valid frame: IP packet behind link_len bytes, maybe padded after."""

    name: str
    dlt: int
    frame: bytes
    link_len: int
    packet: Packet

    @property
    def ip_end(self) -> int:
        return self.link_len + len(self.packet.data)


@dataclass(frozen=True)
class Case:
    name: str
    dlt: int
    frame: bytes
    expect: Verdict
    valid: Valid | None = None  # for OK: what to compare the payload with


# ---- valid packets ----


def v4_packet(
    name: str,
    payload: bytes = PAYLOAD,
    options: bytes = b"",
    udp_length: int | None = None,
    df: bool = False,
) -> Packet:
    data = fr.udp4(
        SRC4, DST4, SPORT, DPORT, payload, options, udp_length=udp_length, df=df
    )
    n = len(payload) if udp_length is None else udp_length - fr.UDP_HDR_LEN
    off = fr.IPV4_HDR_LEN + len(options) + fr.UDP_HDR_LEN
    return Packet(name, data, 4, off, payload[:n])


def v6_packet(
    name: str,
    payload: bytes = PAYLOAD,
    ext: tuple[fr.Ext | int, ...] = (),
    udp_length: int | None = None,
) -> Packet:
    data = fr.udp6(SRC6, DST6, SPORT, DPORT, payload, ext=ext, udp_length=udp_length)
    n = len(payload) if udp_length is None else udp_length - fr.UDP_HDR_LEN
    off = len(data) - len(payload)
    return Packet(name, data, 6, off, payload[:n])


def valid_packets() -> list[Packet]:
    out = [v4_packet("v4")]
    for ihl in range(6, 16):
        opts = fr.ipv4_options((ihl - 5) * 4)
        out.append(v4_packet(f"v4-ihl{ihl}", options=opts))
    out += [
        v4_packet("v4-df", df=True),
        v4_packet("v4-udp-shorter-than-ip", udp_length=8 + 100),
        v4_packet("v4-empty-payload", b""),
        v6_packet("v6"),
        v6_packet(
            "v6-hbh-dst-rt",
            ext=(fr.IPPROTO_HOPOPTS, fr.IPPROTO_DSTOPTS, fr.IPPROTO_ROUTING),
        ),
        v6_packet(
            "v6-long-ext",
            ext=(fr.Ext(fr.IPPROTO_HOPOPTS, 5), fr.Ext(fr.IPPROTO_ROUTING, 3)),
        ),
        v6_packet("v6-max-ext", ext=(fr.IPPROTO_DSTOPTS,) * 8),
        v6_packet("v6-udp-shorter-than-ip", udp_length=8 + 100),
        v6_packet("v6-empty-payload", b""),
    ]
    return out


LINKS = fr.LINK_SPECS


def make_valid(spec: fr.LinkSpec, pkt: Packet) -> Valid:
    frame = fr.link(
        spec.dlt, pkt.data, vlan=spec.vlan, family=spec.family, trailer=spec.trailer
    )
    link_len = fr.link_header_len(spec.dlt, len(spec.vlan))
    return Valid(f"{spec.name}/{pkt.name}", spec.dlt, frame, link_len, pkt)


def valid_frames() -> list[Valid]:
    out = []
    for pkt in valid_packets():
        for spec in LINKS:
            if pkt.version in spec.versions:
                out.append(make_valid(spec, pkt))
    # short frames Ethernet pads to 60 bytes, with and without an FCS
    for pkt in (v4_packet("v4-tiny", b"knock"), v6_packet("v6-tiny", b"")):
        for trailer in (b"", b"\x01\x02\x03\x04"):
            frame = fr.link(fr.DLT_EN10MB, pkt.data, pad_to=60, trailer=trailer)
            name = f"eth-padded{'-fcs' if trailer else ''}/{pkt.name}"
            out.append(Valid(name, fr.DLT_EN10MB, frame, fr.ETH_HDR_LEN, pkt))
    return out


def truncations(v: Valid) -> Iterator[Case]:
    """Every proper prefix of a valid frame.

    Short of the link header: LINK.  Inside the IP packet: the declared IP
    length exceeds what was captured, so NET, whatever layer the cut is in.
    Inside link padding after the packet: still OK, same payload.
    """
    for n in range(len(v.frame)):
        if n < v.link_len:
            expect = Verdict.LINK
        elif n < v.ip_end:
            expect = Verdict.NET
        else:
            expect = Verdict.OK
        valid = v if expect is Verdict.OK else None
        yield Case(f"{v.name}[:{n}]", v.dlt, v.frame[:n], expect, valid)


# ---- malformed packets ----


def udp4_raw(
    *,
    proto: int = fr.IPPROTO_UDP,
    options: bytes = b"",
    ihl: int | None = None,
    total_length: int | None = None,
    df: bool = False,
    mf: bool = False,
    frag_offset: int = 0,
    version: int = 4,
) -> bytes:
    """IPv4 carrying a correct UDP datagram, IP header fields overridden."""
    dgram = fr.udp_datagram(SRC4, DST4, SPORT, DPORT, PAYLOAD)
    return fr.ipv4(
        SRC4,
        DST4,
        proto,
        dgram,
        options=options,
        ihl=ihl,
        total_length=total_length,
        df=df,
        mf=mf,
        frag_offset=frag_offset,
        version=version,
    )


def udp6_raw(
    *,
    ext: tuple[fr.Ext | int, ...] = (),
    next_header: int = fr.IPPROTO_UDP,
    payload_length: int | None = None,
    version: int = 6,
) -> bytes:
    """IPv6 carrying a correct UDP datagram, header fields overridden."""
    dgram = fr.udp_datagram(SRC6, DST6, SPORT, DPORT, PAYLOAD)
    return fr.ipv6(
        SRC6,
        DST6,
        next_header,
        dgram,
        ext=ext,
        payload_length=payload_length,
        version=version,
    )


def bad_v4() -> Iterator[tuple[str, bytes, Verdict]]:
    good_len = fr.IPV4_HDR_LEN + fr.UDP_HDR_LEN + len(PAYLOAD)
    for ihl in range(5):
        yield f"v4-ihl{ihl}", udp4_raw(ihl=ihl), Verdict.NET
    opts = fr.ipv4_options(40)
    yield "v4-ihl15-total40", udp4_raw(options=opts, total_length=40), Verdict.NET
    yield "v4-ihl6-total20", udp4_raw(options=opts[:4], total_length=20), Verdict.NET
    for total in (0, 1, 19):
        yield f"v4-total{total}", udp4_raw(total_length=total), Verdict.NET
    for total in (good_len + 1, good_len + 8, 0xFFFF):
        yield f"v4-total{total}-gt-cap", udp4_raw(total_length=total), Verdict.NET
    # room for the IP header but not for a whole UDP header
    for total in range(20, 28):
        yield f"v4-total{total}", udp4_raw(total_length=total), Verdict.TRANSPORT
    for total in range(44, 52):
        pkt = udp4_raw(options=fr.ipv4_options(24), total_length=total)
        yield f"v4-opts-total{total}", pkt, Verdict.TRANSPORT
    for ulen in (*range(8), 8 + len(PAYLOAD) + 1, 0xFFFF):
        pkt = fr.udp4(SRC4, DST4, SPORT, DPORT, PAYLOAD, udp_length=ulen)
        yield f"v4-udplen{ulen}", pkt, Verdict.TRANSPORT
    frag = Verdict.FRAGMENT
    yield "v4-mf", udp4_raw(mf=True), frag
    yield "v4-mf-df", udp4_raw(mf=True, df=True), frag
    yield "v4-off1", udp4_raw(frag_offset=1), frag
    yield "v4-off-max", udp4_raw(frag_offset=0x1FFF), frag
    yield "v4-mf-off", udp4_raw(mf=True, frag_offset=185), frag
    yield "v4-tcp-off", udp4_raw(proto=fr.IPPROTO_TCP, frag_offset=3), frag
    for proto in (0, fr.IPPROTO_ICMP, fr.IPPROTO_TCP, fr.IPPROTO_ESP, 132, 255):
        yield f"v4-proto{proto}", udp4_raw(proto=proto), Verdict.TRANSPORT


def bad_v6() -> Iterator[tuple[str, bytes, Verdict]]:
    good_plen = fr.UDP_HDR_LEN + len(PAYLOAD)
    for plen in (good_plen + 1, good_plen + 8, 0xFFFF):
        yield f"v6-plen{plen}-gt-cap", udp6_raw(payload_length=plen), Verdict.NET
    yield "v6-jumbo", udp6_raw(payload_length=0), Verdict.NET
    for plen in range(1, 8):
        yield f"v6-plen{plen}", udp6_raw(payload_length=plen), Verdict.TRANSPORT
    for ulen in (*range(8), good_plen + 1, 0xFFFF):
        pkt = fr.udp6(SRC6, DST6, SPORT, DPORT, PAYLOAD, udp_length=ulen)
        yield f"v6-udplen{ulen}", pkt, Verdict.TRANSPORT
    frag = Verdict.FRAGMENT
    frag_hdr = fr.Ext(fr.IPPROTO_FRAGMENT, offset=0, more=True, ident=7)
    yield "v6-frag", udp6_raw(ext=(frag_hdr,)), frag
    yield "v6-frag-atomic", udp6_raw(ext=(fr.IPPROTO_FRAGMENT,)), frag
    later = fr.Ext(fr.IPPROTO_FRAGMENT, offset=9)
    yield "v6-frag-offset", udp6_raw(ext=(later,)), frag
    yield "v6-hbh-frag", udp6_raw(ext=(fr.IPPROTO_HOPOPTS, frag_hdr)), frag
    yield "v6-8ext-frag", udp6_raw(ext=(fr.IPPROTO_DSTOPTS,) * 8 + (frag_hdr,)), frag
    for n in (9, 12):
        pkt = udp6_raw(ext=(fr.IPPROTO_DSTOPTS,) * n)
        yield f"v6-{n}ext", pkt, Verdict.NET
    # an extension header longer than the packet it is in
    dgram = fr.udp_datagram(SRC6, DST6, SPORT, DPORT, PAYLOAD)
    for units in (22, 23, 255):
        hbh = bytes([fr.IPPROTO_UDP, units, 1, 4]) + bytes(4)
        pkt = fr.ipv6(SRC6, DST6, fr.IPPROTO_HOPOPTS, hbh + dgram)
        expect = Verdict.TRANSPORT if units < 23 else Verdict.NET
        yield f"v6-hbh-units{units}", pkt, expect
    # ... or than the declared payload length, although captured in full
    pkt = udp6_raw(ext=(fr.Ext(fr.IPPROTO_HOPOPTS, 2),), payload_length=16)
    yield "v6-ext-past-plen", pkt, Verdict.NET
    for plen in (1, 7):
        pkt = udp6_raw(ext=(fr.IPPROTO_HOPOPTS,), payload_length=plen)
        yield f"v6-ext-plen{plen}", pkt, Verdict.NET
        # captured exactly as declared: nothing to read past the end
        exact = pkt[: fr.IPV6_HDR_LEN + plen]
        yield f"v6-ext-plen{plen}-exact", exact, Verdict.NET
    for plen in (9, 15):
        pkt = udp6_raw(ext=(fr.IPPROTO_HOPOPTS,) * 2, payload_length=plen)
        exact = pkt[: fr.IPV6_HDR_LEN + plen]
        yield f"v6-2nd-ext-plen{plen}-exact", exact, Verdict.NET
    pkt = udp6_raw(ext=(fr.IPPROTO_HOPOPTS,), payload_length=8)
    yield "v6-ext-then-nothing", pkt, Verdict.TRANSPORT
    for nh in (
        fr.IPPROTO_TCP,
        fr.IPPROTO_ICMPV6,
        fr.IPPROTO_ESP,
        fr.IPPROTO_AH,
        fr.IPPROTO_NONE,
        4,
        41,
        255,
    ):
        yield f"v6-nh{nh}", udp6_raw(next_header=nh), Verdict.TRANSPORT
        pkt = udp6_raw(ext=(fr.IPPROTO_HOPOPTS, fr.IPPROTO_ROUTING), next_header=nh)
        yield f"v6-ext-nh{nh}", pkt, Verdict.TRANSPORT


CARRIERS = (
    ("eth", fr.DLT_EN10MB),
    ("raw", fr.DLT_RAW),
    ("null", fr.DLT_NULL),
    ("sll2", fr.DLT_LINUX_SLL2),
)


def malformed() -> Iterator[Case]:
    v4 = fr.udp4(SRC4, DST4, SPORT, DPORT, PAYLOAD)
    v6 = fr.udp6(SRC6, DST6, SPORT, DPORT, PAYLOAD)
    for name, pkt, expect in (*bad_v4(), *bad_v6()):
        for lname, dlt in CARRIERS:
            yield Case(f"{lname}/{name}", dlt, fr.link(dlt, pkt), expect)
        if pkt[0] >> 4 == 4:
            yield Case(f"ipv4/{name}", fr.DLT_IPV4, pkt, expect)
        else:
            yield Case(f"ipv6/{name}", fr.DLT_IPV6, pkt, expect)

    # wrong IP version for what the link layer announced
    net = Verdict.NET
    yield Case("ipv4-dlt-v6-pkt", fr.DLT_IPV4, v6, net)
    yield Case("ipv6-dlt-v4-pkt", fr.DLT_IPV6, v4, net)
    for version in (0, 1, 5, 7, 15):
        pkt4 = udp4_raw(version=version)
        pkt6 = udp6_raw(version=version)
        for dlt in (fr.DLT_RAW, fr.LINKTYPE_RAW):
            yield Case(f"raw{dlt}-v{version}", dlt, pkt4, net)
        yield Case(f"ipv4-v{version}", fr.DLT_IPV4, pkt4, net)
        yield Case(f"ipv6-v{version}", fr.DLT_IPV6, pkt6, net)
        eth4 = fr.link(fr.DLT_EN10MB, pkt4, ethertype=fr.ETHERTYPE_IPV4)
        eth6 = fr.link(fr.DLT_EN10MB, pkt6, ethertype=fr.ETHERTYPE_IPV6)
        yield Case(f"eth-v4-type-v{version}", fr.DLT_EN10MB, eth4, net)
        yield Case(f"eth-v6-type-v{version}", fr.DLT_EN10MB, eth6, net)
    yield Case("raw-v6-hdr-v4", fr.DLT_RAW, udp6_raw(version=4), net)
    yield Case("ipv4-v6-hdr", fr.DLT_IPV4, udp6_raw(version=4), net)
    swapped4 = fr.link(fr.DLT_EN10MB, v4, ethertype=fr.ETHERTYPE_IPV6)
    swapped6 = fr.link(fr.DLT_EN10MB, v6, ethertype=fr.ETHERTYPE_IPV4)
    yield Case("eth-type6-v4", fr.DLT_EN10MB, swapped4, net)
    yield Case("eth-type4-v6", fr.DLT_EN10MB, swapped6, net)
    for af in fr.AF_INET6_ALL:
        frame = fr.link(fr.DLT_NULL, v4, family=af)
        yield Case(f"null-af{af}-v4", fr.DLT_NULL, frame, net)
    frame = fr.link(fr.DLT_NULL, v6, family=fr.AF_INET)
    yield Case("null-af2-v6", fr.DLT_NULL, frame, net)

    # link layers announcing something other than IP
    for etype in (0x0000, 0x05DC, fr.ETHERTYPE_ARP, 0x88CC, 0x86DE, 0xFFFF):
        for dlt in (fr.DLT_EN10MB, fr.DLT_LINUX_SLL, fr.DLT_LINUX_SLL2):
            frame = fr.link(dlt, v4, ethertype=etype)
            yield Case(f"{dlt}-ethertype-{etype:04x}", dlt, frame, net)
        frame = fr.link(fr.DLT_EN10MB, v4, vlan=(5,), ethertype=etype)
        yield Case(f"eth-vlan-ethertype-{etype:04x}", fr.DLT_EN10MB, frame, net)
    for af in (0, 1, 3, 23, 0x02000000, 0x0A000000, 0xFFFFFFFF):
        for dlt in (fr.DLT_NULL, fr.DLT_LOOP):
            frame = fr.link(dlt, v4, family=af)
            yield Case(f"{dlt}-af{af:x}", dlt, frame, net)
    # the family in the other byte order than the link type wants
    not_host = ">" if sys.byteorder == "little" else "<"
    for dlt, order in ((fr.DLT_NULL, not_host), (fr.DLT_LOOP, "<")):
        frame = struct.pack(order + "I", fr.AF_INET) + v4
        yield Case(f"{dlt}-af-byteorder", dlt, frame, net)

    # more VLAN tags than the parser walks
    link_ = Verdict.LINK
    for tags in ((1, 2, 3), (1, 2, 3, 4), ((fr.TPID_8021AD, 1), 2, (fr.TPID_QINQ, 3))):
        frame = fr.link(fr.DLT_EN10MB, v4, vlan=tags)
        yield Case(f"eth-{len(tags)}tags", fr.DLT_EN10MB, frame, link_)
    frame = fr.link(fr.DLT_LINUX_SLL, v6, vlan=(1, 2, 3))
    yield Case("sll-3tags", fr.DLT_LINUX_SLL, frame, link_)

    # link types the parser does not know
    for dlt in (2, 9, 10, 104, 105, 127, 230, 275, 277, 0x7FFFFFFF, 0xFFFFFFFF):
        yield Case(f"dlt{dlt}", dlt, v4, link_)
        yield Case(f"dlt{dlt}-empty", dlt, b"", link_)


def mutations(valid: list[Valid], count: int) -> Iterator[Case]:
    """Random damage to valid frames; any verdict, but no bad reads."""
    rng = random.Random(20240601)
    for i in range(count):
        v = rng.choice(valid)
        frame = bytearray(v.frame)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(min(len(frame), v.link_len + 64))
            frame[pos] = rng.randrange(256)
        if rng.random() < 0.3:
            del frame[rng.randrange(len(frame)) :]
        yield Case(f"mutant{i}/{v.name}", v.dlt, bytes(frame), Verdict.ANY)


def corpus_cases() -> list[Case]:
    valid = valid_frames()
    cases = [Case(v.name, v.dlt, v.frame, Verdict.OK, v) for v in valid]
    for v in valid:
        cases.extend(truncations(v))
    cases.extend(malformed())
    cases.extend(mutations(valid, 5000))
    return cases


def encode(cases: list[Case]) -> bytes:
    return b"".join(
        struct.pack("<IIB", c.dlt & 0xFFFFFFFF, len(c.frame), c.expect) + c.frame
        for c in cases
    )


# ---- the test ----


def build_runner(tmp_path: Path) -> Path:
    sources = [cbuild.CTESTS / "parse_corpus.c", cbuild.CSRC / "parse.c"]
    return cbuild.build(sources, tmp_path / "parse_corpus")


OK_LINE = re.compile(
    r"ok (\d+) (\d) ([0-9a-f]{32}) ([0-9a-f]{32}) (\d+) (\d+) (\d+) (\d+)$"
)


def check_ok_lines(cases: list[Case], stdout: str) -> None:
    seen: set[int] = set()
    for line in stdout.splitlines():
        m = OK_LINE.match(line)
        if not m:
            continue
        idx, family, src, dst, sport, dport, off, n = m.groups()
        case = cases[int(idx)]
        seen.add(int(idx))
        if case.expect is Verdict.ANY:
            continue
        v = case.valid
        assert v is not None, f"{case.name}: OK without a valid frame"
        pkt = v.packet
        got = (int(family), bytes.fromhex(src), bytes.fromhex(dst))
        assert got == (pkt.version, pkt.src, pkt.dst), case.name
        assert (int(sport), int(dport)) == (SPORT, DPORT), case.name
        assert int(off) == v.link_len + pkt.payload_off, case.name
        assert case.frame[int(off) : int(off) + int(n)] == pkt.payload, case.name
    expected = {i for i, c in enumerate(cases) if c.expect is Verdict.OK}
    assert expected <= seen, f"OK frames not reported: {sorted(expected - seen)[:10]}"


def test_corpus_builders_are_consistent() -> None:
    """The generator's own bookkeeping, independent of the C code."""
    for v in valid_frames():
        pkt = v.packet
        assert v.frame[v.link_len : v.ip_end] == pkt.data, v.name
        start = v.link_len + pkt.payload_off
        assert v.frame[start : start + len(pkt.payload)] == pkt.payload, v.name
        assert fr.ip_version(pkt.data) == pkt.version, v.name
    # IPv4 header and UDP checksums verify (pcap readers flag bad ones)
    pkt4 = fr.udp4(SRC4, DST4, SPORT, DPORT, PAYLOAD, fr.ipv4_options(8))
    assert fr.inet_checksum(pkt4[:28]) == 0
    udp = pkt4[28:]
    pseudo = fr.addr_bytes(SRC4) + fr.addr_bytes(DST4)
    pseudo += struct.pack("!BBH", 0, fr.IPPROTO_UDP, len(udp))
    assert fr.inet_checksum(pseudo + udp) == 0
    udp = fr.udp6(SRC6, DST6, SPORT, DPORT, PAYLOAD)[fr.IPV6_HDR_LEN :]
    pseudo = fr.addr_bytes(SRC6) + fr.addr_bytes(DST6)
    pseudo += struct.pack("!I3xB", len(udp), fr.IPPROTO_UDP)
    assert fr.inet_checksum(pseudo + udp) == 0


def test_parse_corpus(tmp_path: Path) -> None:
    exe = build_runner(tmp_path)
    cases = corpus_cases()
    n_valid = sum(1 for c in cases if c.expect is Verdict.OK and "[:" not in c.name)
    assert n_valid >= 300
    assert len(cases) > 20000
    corpus = tmp_path / "corpus.bin"
    corpus.write_bytes(encode(cases))

    res = subprocess.run(
        [str(exe), "-v", str(corpus)], capture_output=True, text=True, timeout=600
    )
    mism = [ln for ln in res.stdout.splitlines() if ln.startswith("mismatch")]
    detail = "\n".join(
        f"{ln}  <- {cases[int(ln.split()[1].split('=')[1])].name}" for ln in mism[:40]
    )
    assert res.returncode == 0, f"rc={res.returncode}\n{detail}\n{res.stderr[-4000:]}"
    assert "ERROR: AddressSanitizer" not in res.stderr
    assert "runtime error" not in res.stderr
    summary = res.stdout.strip().splitlines()[-1]
    assert summary == f"frames={len(cases)} mismatches=0", summary
    check_ok_lines(cases, res.stdout)
