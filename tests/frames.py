"""Build captured frames (link header, IPv4/IPv6, UDP) for tests.

Everything is plain :mod:`struct` packing, no scapy.  Builders are layered so
that a test can go as far as it needs and break any field on the way:

* :func:`udp_datagram` makes a UDP header and payload (checksum included),
* :func:`ipv4` and :func:`ipv6` wrap a transport payload in an IP header,
  with overrides for every length and flag the parser looks at,
* :func:`udp4` and :func:`udp6` do both for the common case,
* :func:`link` puts a link-layer header (any link type ``csrc/parse.h``
  knows) in front of an IP packet.

Writing the frames into a pcap file is ``tests/pcapfile.py``'s job.

Addresses are given as strings (``"192.0.2.1"``, ``"2001:db8::1"``) or as
:mod:`ipaddress` objects.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass

# Link types, libpcap's DLT_* / LINKTYPE_* numbers (as in csrc/parse.h).
DLT_NULL = 0
DLT_EN10MB = 1
DLT_RAW = 12
LINKTYPE_RAW = 101
DLT_LOOP = 108
DLT_LINUX_SLL = 113
DLT_IPV4 = 228
DLT_IPV6 = 229
DLT_LINUX_SLL2 = 276

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_ARP = 0x0806
TPID_8021Q = 0x8100
TPID_8021AD = 0x88A8
TPID_QINQ = 0x9100

# Address families as DLT_NULL / DLT_LOOP record them.  AF_INET6 differs
# between the systems that write these link types.
AF_INET = 2
AF_INET6_LINUX = 10
AF_INET6_BSD = 24  # NetBSD, OpenBSD
AF_INET6_FREEBSD = 28
AF_INET6_DARWIN = 30
AF_INET6_ALL = (AF_INET6_LINUX, AF_INET6_BSD, AF_INET6_FREEBSD, AF_INET6_DARWIN)

IPPROTO_HOPOPTS = 0
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_ESP = 50
IPPROTO_AH = 51
IPPROTO_ICMPV6 = 58
IPPROTO_NONE = 59
IPPROTO_DSTOPTS = 60
IPPROTO_SCTP = 132

IPV4_HDR_LEN = 20
IPV6_HDR_LEN = 40
UDP_HDR_LEN = 8
ETH_HDR_LEN = 14
SLL_HDR_LEN = 16
SLL2_HDR_LEN = 20
VLAN_TAG_LEN = 4

ETH_DST = bytes.fromhex("020000000002")  # locally administered MACs
ETH_SRC = bytes.fromhex("020000000001")

Address = str | ipaddress.IPv4Address | ipaddress.IPv6Address


def _addr(a: Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(a) if isinstance(a, str) else a


def addr_bytes(a: Address) -> bytes:
    """The address in network order: 4 bytes for IPv4, 16 for IPv6."""
    return _addr(a).packed


def addr16(a: Address) -> bytes:
    """The address as ``struct spa_frame`` holds it: IPv4 zero-padded to 16."""
    return addr_bytes(a).ljust(16, b"\0")


def inet_checksum(data: bytes) -> int:
    """The 16-bit one's complement sum of RFC 1071, complemented."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_datagram(
    src: Address,
    dst: Address,
    sport: int,
    dport: int,
    payload: bytes,
    *,
    length: int | None = None,
) -> bytes:
    """A UDP header and payload with the checksum over the pseudo-header.

    ``length`` overrides the UDP length field (default ``8 + len(payload)``);
    the bytes actually present do not change.  src and dst only feed the
    checksum and must be of the same family.
    """
    ulen = UDP_HDR_LEN + len(payload) if length is None else length
    s, d = addr_bytes(src), addr_bytes(dst)
    if len(s) != len(d):
        raise ValueError("source and destination families differ")
    body = struct.pack("!HHHH", sport, dport, ulen, 0) + payload
    if len(s) == 4:
        pseudo = s + d + struct.pack("!BBH", 0, IPPROTO_UDP, len(body))
    else:
        pseudo = s + d + struct.pack("!I3xB", len(body), IPPROTO_UDP)
    csum = inet_checksum(pseudo + body) or 0xFFFF  # 0 means "none"
    return body[:6] + struct.pack("!H", csum) + body[8:]


def ipv4_options(nbytes: int) -> bytes:
    """``nbytes`` (a multiple of 4, at most 40) of NOPs closed by End of List."""
    if nbytes % 4 or not 0 <= nbytes <= 40:
        raise ValueError("IPv4 options come in 4-byte words, at most 40 bytes")
    return b"\x01" * (nbytes - 1) + b"\x00" if nbytes else b""


def ipv4(
    src: Address,
    dst: Address,
    proto: int,
    payload: bytes,
    *,
    options: bytes = b"",
    ttl: int = 64,
    ident: int = 0,
    df: bool = False,
    mf: bool = False,
    frag_offset: int = 0,
    ihl: int | None = None,
    total_length: int | None = None,
    version: int = 4,
) -> bytes:
    """An IPv4 header (checksum included) followed by ``payload``.

    ``options`` must be a multiple of 4 bytes, at most 40.  ``frag_offset``
    is in 8-byte units.  ``ihl`` (in 32-bit words), ``total_length`` and
    ``version`` override the header fields without changing the bytes that
    follow, to build malformed packets.
    """
    if len(options) % 4 or len(options) > 40:
        raise ValueError("IPv4 options come in 4-byte words, at most 40 bytes")
    hlen = IPV4_HDR_LEN + len(options)
    words = hlen // 4 if ihl is None else ihl
    total = hlen + len(payload) if total_length is None else total_length
    flags = (0x4000 if df else 0) | (0x2000 if mf else 0) | frag_offset
    hdr = struct.pack(
        "!BBHHHBBH4s4s",
        (version & 0xF) << 4 | (words & 0xF),
        0,
        total & 0xFFFF,
        ident,
        flags,
        ttl,
        proto,
        0,
        addr_bytes(src),
        addr_bytes(dst),
    )
    hdr += options
    csum = inet_checksum(hdr)
    return hdr[:10] + struct.pack("!H", csum) + hdr[12:] + payload


def udp4(
    src: Address,
    dst: Address,
    sport: int,
    dport: int,
    payload: bytes,
    options: bytes = b"",
    *,
    udp_length: int | None = None,
    df: bool = False,
) -> bytes:
    """A complete IPv4/UDP packet; ``options`` as for :func:`ipv4`."""
    dgram = udp_datagram(src, dst, sport, dport, payload, length=udp_length)
    return ipv4(src, dst, IPPROTO_UDP, dgram, options=options, df=df)


@dataclass(frozen=True)
class Ext:
    """One IPv6 extension header; its next-header byte is set when chained.

    ``units`` is the Hdr Ext Len field: the header is ``8 * (units + 1)``
    bytes, padded with a PadN option (hop-by-hop, destination options) or
    zeros (routing: type 253, experimental, segments left 0).  A fragment
    header (``kind == IPPROTO_FRAGMENT``) is always 8 bytes and uses
    ``offset`` (8-byte units), ``more`` and ``ident`` instead.
    """

    kind: int
    units: int = 0
    offset: int = 0
    more: bool = False
    ident: int = 0

    def encode(self, next_header: int) -> bytes:
        if self.kind == IPPROTO_FRAGMENT:
            if self.units:
                raise ValueError("a fragment header has no length field")
            om = (self.offset << 3) | (1 if self.more else 0)
            return struct.pack("!BBHI", next_header, 0, om, self.ident)
        if self.kind not in (IPPROTO_HOPOPTS, IPPROTO_DSTOPTS, IPPROTO_ROUTING):
            raise ValueError(f"not an extension header: {self.kind}")
        body_len = 8 * (self.units + 1) - 2
        if self.kind == IPPROTO_ROUTING:
            body = bytes([253, 0]) + bytes(body_len - 2)
        else:  # one PadN option fills the header
            body = bytes([1, body_len - 2]) + bytes(body_len - 2)
        return bytes([next_header, self.units]) + body


def ext_chain(ext: Sequence[Ext | int], upper: int) -> tuple[int, bytes]:
    """Chain extension headers in front of protocol ``upper``.

    Returns the next-header value for the IPv6 header and the encoded
    headers.  Plain ints stand for ``Ext(kind)``.
    """
    items = [e if isinstance(e, Ext) else Ext(e) for e in ext]
    out = b""
    nh = upper
    for e in reversed(items):
        out = e.encode(nh) + out
        nh = e.kind
    return nh, out


def ipv6(
    src: Address,
    dst: Address,
    next_header: int,
    payload: bytes,
    *,
    ext: Sequence[Ext | int] = (),
    hop_limit: int = 64,
    payload_length: int | None = None,
    version: int = 6,
) -> bytes:
    """An IPv6 header, extension headers ``ext``, then ``payload``.

    ``next_header`` is the protocol of ``payload`` (the last header's
    next-header value).  ``payload_length`` and ``version`` override the
    header fields without changing the bytes that follow.
    """
    nh, ext_bytes = ext_chain(ext, next_header)
    body = ext_bytes + payload
    plen = len(body) if payload_length is None else payload_length
    first = (version & 0xF) << 28
    hdr = struct.pack(
        "!IHBB16s16s",
        first,
        plen & 0xFFFF,
        nh,
        hop_limit,
        addr_bytes(src),
        addr_bytes(dst),
    )
    return hdr + body


def udp6(
    src: Address,
    dst: Address,
    sport: int,
    dport: int,
    payload: bytes,
    *,
    ext: Sequence[Ext | int] = (),
    udp_length: int | None = None,
) -> bytes:
    """A complete IPv6/UDP packet, with extension headers ``ext`` if given."""
    dgram = udp_datagram(src, dst, sport, dport, payload, length=udp_length)
    return ipv6(src, dst, IPPROTO_UDP, dgram, ext=ext)


def ip_version(packet: bytes) -> int:
    """The version nibble of an IP packet (0 for an empty one)."""
    return packet[0] >> 4 if packet else 0


def _ethertype_for(packet: bytes) -> int:
    version = ip_version(packet)
    if version == 4:
        return ETHERTYPE_IPV4
    if version == 6:
        return ETHERTYPE_IPV6
    raise ValueError("not an IP packet: pass ethertype= or family=")


def _vlan_tags(vlan: Sequence[int | tuple[int, int]]) -> bytes:
    out = b""
    for tag in vlan:
        tpid, vid = (TPID_8021Q, tag) if isinstance(tag, int) else tag
        out += struct.pack("!HH", tpid, vid & 0x0FFF)
    return out


def link_header_len(dlt: int, vlan_tags: int = 0) -> int:
    """Bytes in front of the IP header that :func:`link` writes."""
    if dlt in (DLT_NULL, DLT_LOOP):
        return 4
    if dlt == DLT_EN10MB:
        return ETH_HDR_LEN + VLAN_TAG_LEN * vlan_tags
    if dlt == DLT_LINUX_SLL:
        return SLL_HDR_LEN + VLAN_TAG_LEN * vlan_tags
    if dlt == DLT_LINUX_SLL2:
        return SLL2_HDR_LEN
    if dlt in (DLT_RAW, LINKTYPE_RAW, DLT_IPV4, DLT_IPV6):
        return 0
    raise ValueError(f"unsupported link type {dlt}")


def link(
    dlt: int,
    packet: bytes,
    *,
    vlan: Sequence[int | tuple[int, int]] = (),
    family: int | None = None,
    ethertype: int | None = None,
    pad_to: int = 0,
    trailer: bytes = b"",
) -> bytes:
    """Put the link-layer header of ``dlt`` in front of IP ``packet``.

    * DLT_NULL / DLT_LOOP: a 4-byte address family, host order (NULL) or
      network order (LOOP); ``family`` overrides the default (AF_INET, or
      AF_INET6_BSD = 24 for IPv6).
    * DLT_EN10MB: MACs, then ``vlan`` tags (a VLAN id uses TPID 0x8100, a
      ``(tpid, vid)`` pair any TPID, outermost first), then the ethertype,
      which ``ethertype`` overrides (default from the IP version nibble).
      ``pad_to`` zero-pads the frame to that many bytes, as Ethernet does
      below 60.
    * DLT_LINUX_SLL: cooked v1 header addressed to this host; ``vlan`` tags
      go where libpcap re-inserts them, in front of the protocol.
    * DLT_LINUX_SLL2: cooked v2 header.
    * DLT_RAW, LINKTYPE_RAW, DLT_IPV4, DLT_IPV6: no header.

    ``trailer`` is appended last (after any padding), e.g. an Ethernet FCS.
    """
    if vlan and dlt not in (DLT_EN10MB, DLT_LINUX_SLL):
        raise ValueError("VLAN tags need DLT_EN10MB or DLT_LINUX_SLL")
    if dlt in (DLT_NULL, DLT_LOOP):
        if family is None:
            family = AF_INET if ip_version(packet) == 4 else AF_INET6_BSD
        order = "=" if dlt == DLT_NULL else "!"
        frame = struct.pack(order + "I", family) + packet
    elif dlt in (DLT_EN10MB, DLT_LINUX_SLL, DLT_LINUX_SLL2):
        etype = _ethertype_for(packet) if ethertype is None else ethertype
        if dlt == DLT_EN10MB:
            hdr = ETH_DST + ETH_SRC + _vlan_tags(vlan)
            frame = hdr + struct.pack("!H", etype) + packet
        elif dlt == DLT_LINUX_SLL:
            # packet type 0 (to us), ARPHRD_ETHER, 6-byte address in 8
            hdr = struct.pack("!HHH8s", 0, 1, 6, ETH_SRC) + _vlan_tags(vlan)
            frame = hdr + struct.pack("!H", etype) + packet
        else:
            # protocol, reserved, ifindex, ARPHRD_ETHER, to us, address
            hdr = struct.pack("!HHIHBB8s", etype, 0, 1, 1, 0, 6, ETH_SRC)
            frame = hdr + packet
    elif dlt in (DLT_RAW, LINKTYPE_RAW, DLT_IPV4, DLT_IPV6):
        frame = packet
    else:
        raise ValueError(f"unsupported link type {dlt}")
    if pad_to > len(frame):
        frame += bytes(pad_to - len(frame))
    return frame + trailer


@dataclass(frozen=True)
class LinkSpec:
    """A link layer to wrap test packets in, with :func:`link` arguments."""

    name: str
    dlt: int
    versions: tuple[int, ...] = (4, 6)
    vlan: tuple[int | tuple[int, int], ...] = ()
    family: int | None = None
    trailer: bytes = b""


# Every link layer the parser supports, in the shapes the corpora test: each
# IPv6 family value of the BSD loopbacks (24, the default, included), VLAN
# tags of every TPID, stacked tags, a trailing FCS.
LINK_SPECS: list[LinkSpec] = [
    LinkSpec("null", DLT_NULL),
    *[
        LinkSpec(f"null-af{af}", DLT_NULL, (6,), family=af)
        for af in (AF_INET6_LINUX, AF_INET6_FREEBSD, AF_INET6_DARWIN)
    ],
    LinkSpec("loop", DLT_LOOP),
    *[
        LinkSpec(f"loop-af{af}", DLT_LOOP, (6,), family=af)
        for af in (AF_INET6_LINUX, AF_INET6_FREEBSD, AF_INET6_DARWIN)
    ],
    LinkSpec("eth", DLT_EN10MB),
    LinkSpec("eth-8021q", DLT_EN10MB, vlan=(100,)),
    LinkSpec("eth-8021ad", DLT_EN10MB, vlan=((TPID_8021AD, 300),)),
    LinkSpec(
        "eth-qinq", DLT_EN10MB, vlan=((TPID_8021AD, 10), (TPID_8021Q, 20))
    ),
    LinkSpec(
        "eth-9100", DLT_EN10MB, vlan=((TPID_QINQ, 10), (TPID_8021Q, 20))
    ),
    LinkSpec("eth-1q1q", DLT_EN10MB, vlan=(1, 4094)),
    LinkSpec("eth-fcs", DLT_EN10MB, trailer=b"\xde\xad\xbe\xef"),
    LinkSpec("raw12", DLT_RAW),
    LinkSpec("raw101", LINKTYPE_RAW),
    LinkSpec("ipv4", DLT_IPV4, (4,)),
    LinkSpec("ipv6", DLT_IPV6, (6,)),
    LinkSpec("sll", DLT_LINUX_SLL),
    LinkSpec("sll-vlan", DLT_LINUX_SLL, vlan=(7,)),
    LinkSpec("sll-qinq", DLT_LINUX_SLL, vlan=((TPID_8021AD, 8), 9)),
    LinkSpec("sll2", DLT_LINUX_SLL2),
]
