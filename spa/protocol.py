"""Protocol v1: the pure-Python encoder and decoder (docs/PROTOCOL.md).

The client builds its knocks here and the tests use this module as the
oracle for the C core. Only the ``blake3`` package is used for cryptography.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import struct
import time
from dataclasses import dataclass, field
from typing import Literal

import blake3

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

VERSION = 1
ID_LEN = 8
NONCE_LEN = 16
SECRET_LEN = 32
TAG_LEN = 32
BODY_LEN = 106
HDR_LEN = 33
OFF_TAG = HDR_LEN + BODY_LEN
WIRE_LEN = OFF_TAG + TAG_LEN
REPLAY_KEY_LEN = 16
MAX_PORTS = 16
MAX_OPEN = 86400
DEFAULT_PORT = 62201

CTX_ENC = "spa protocol v1 body encryption key"
CTX_MAC = "spa protocol v1 packet authentication key"
SERVER_ID_PREFIX = b"spa server id v1:"

PROTO_NUMBERS: dict[str, int] = {"tcp": 6, "udp": 17}
PROTO_NAMES: dict[int, Literal["tcp", "udp"]] = {6: "tcp", 17: "udp"}

DEST_SERVER_ID = 2

_HEADER = struct.Struct(">B8sQ16s")
_BODY_HEAD = struct.Struct(">B16sB16sIB16sHB")


class ProtocolError(ValueError):
    """A packet or request that does not follow protocol v1."""


@dataclass(frozen=True)
class Keys:
    """The two keys derived from one credential secret."""

    enc: bytes
    mac: bytes

    @classmethod
    def derive(cls, secret: bytes) -> Keys:
        if len(secret) != SECRET_LEN:
            raise ValueError(f"secret must be {SECRET_LEN} bytes")
        enc = blake3.blake3(secret, derive_key_context=CTX_ENC).digest()
        mac = blake3.blake3(secret, derive_key_context=CTX_MAC).digest()
        return cls(enc=enc, mac=mac)


@dataclass(frozen=True)
class Request:
    """What a knock asks for, before any policy is applied.

    ``allow`` is None for "the packet's own source address". ``destination``
    is an address, or the 16-byte digest of a server id.
    """

    ports: tuple[tuple[Literal["tcp", "udp"], int], ...]
    open_for: int
    allow: IPAddress | None = None
    destination: IPAddress | bytes = b""
    forward: tuple[IPAddress, int] | None = None


@dataclass(frozen=True)
class Packet:
    """A decoded and verified packet."""

    cred_id: bytes
    timestamp_us: int
    nonce: bytes
    tag: bytes
    request: Request
    replay_key: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "replay_key", self.tag[:REPLAY_KEY_LEN])


def server_id_digest(name: str) -> bytes:
    """The 16 bytes that stand for a server id on the wire."""
    data = SERVER_ID_PREFIX + name.strip().lower().encode("utf-8")
    return blake3.blake3(data).digest(length=16)


def _addr_field(addr: IPAddress) -> tuple[int, bytes]:
    if isinstance(addr, ipaddress.IPv4Address):
        return 4, addr.packed + bytes(12)
    return 6, addr.packed


def _addr_from(family: int, raw: bytes, what: str) -> IPAddress:
    if family == 4:
        if any(raw[4:]):
            raise ProtocolError(f"{what}: IPv4 address with non-zero padding")
        return ipaddress.IPv4Address(raw[:4])
    if family == 6:
        return ipaddress.IPv6Address(raw)
    raise ProtocolError(f"{what}: unknown address family {family}")


def encode_request(req: Request) -> bytes:
    """The 106-byte plaintext body of a request."""
    if not 1 <= len(req.ports) <= MAX_PORTS:
        raise ProtocolError(f"a request names 1 to {MAX_PORTS} ports")
    if not 1 <= req.open_for <= MAX_OPEN:
        raise ProtocolError(f"open time must be 1..{MAX_OPEN} seconds")
    allow_fam, allow_raw = (0, bytes(16)) if req.allow is None else _addr_field(
        req.allow
    )
    if isinstance(req.destination, bytes):
        if len(req.destination) != 16:
            raise ProtocolError("a server id digest is 16 bytes")
        dest_kind, dest_raw = DEST_SERVER_ID, req.destination
    else:
        dest_kind, dest_raw = _addr_field(req.destination)
    if req.forward is None:
        fwd_fam, fwd_raw, fwd_port = 0, bytes(16), 0
    else:
        fwd_fam, fwd_raw = _addr_field(req.forward[0])
        fwd_port = req.forward[1]
        if not 1 <= fwd_port <= 65535:
            raise ProtocolError("forward port must be 1..65535")
    body = bytearray(
        _BODY_HEAD.pack(
            allow_fam, allow_raw, dest_kind, dest_raw, req.open_for,
            fwd_fam, fwd_raw, fwd_port, len(req.ports),
        )
    )
    for proto, port in req.ports:
        if proto not in PROTO_NUMBERS or not 1 <= port <= 65535:
            raise ProtocolError(f"bad port {proto}/{port}")
        body += struct.pack(">BH", PROTO_NUMBERS[proto], port)
    body += bytes(BODY_LEN - len(body))
    return bytes(body)


def decode_request(body: bytes) -> Request:
    """Parse a decrypted body; raises ProtocolError on any deviation."""
    if len(body) != BODY_LEN:
        raise ProtocolError(f"body is {len(body)} bytes, expected {BODY_LEN}")
    (allow_fam, allow_raw, dest_kind, dest_raw, open_for, fwd_fam, fwd_raw,
     fwd_port, nports) = _BODY_HEAD.unpack_from(body)
    allow = None
    if allow_fam == 0:
        if any(allow_raw):
            raise ProtocolError("allow: family 0 with an address")
    else:
        allow = _addr_from(allow_fam, allow_raw, "allow")
    destination: IPAddress | bytes
    if dest_kind == DEST_SERVER_ID:
        destination = dest_raw
    else:
        destination = _addr_from(dest_kind, dest_raw, "destination")
    if not 1 <= open_for <= MAX_OPEN:
        raise ProtocolError(f"open time {open_for} outside 1..{MAX_OPEN}")
    forward = None
    if fwd_fam == 0:
        if any(fwd_raw) or fwd_port:
            raise ProtocolError("forward: family 0 with an address or port")
    else:
        if not 1 <= fwd_port <= 65535:
            raise ProtocolError("forward port outside 1..65535")
        forward = (_addr_from(fwd_fam, fwd_raw, "forward"), fwd_port)
    if not 1 <= nports <= MAX_PORTS:
        raise ProtocolError(f"port count {nports} outside 1..{MAX_PORTS}")
    off = _BODY_HEAD.size
    ports: list[tuple[Literal["tcp", "udp"], int]] = []
    for i in range(MAX_PORTS):
        proto, port = struct.unpack_from(">BH", body, off + 3 * i)
        if i >= nports:
            if proto or port:
                raise ProtocolError("data after the last port entry")
            continue
        if proto not in PROTO_NAMES or not 1 <= port <= 65535:
            raise ProtocolError(f"bad port entry {proto}/{port}")
        ports.append((PROTO_NAMES[proto], port))
    return Request(
        ports=tuple(ports), open_for=open_for, allow=allow,
        destination=destination, forward=forward,
    )


def _keystream(keys: Keys, header_tail: bytes) -> bytes:
    return blake3.blake3(header_tail, key=keys.enc).digest(length=BODY_LEN)


def encode_packet(
    cred_id: bytes,
    secret: bytes,
    req: Request,
    *,
    timestamp_us: int | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """A complete 171-byte knock."""
    if len(cred_id) != ID_LEN:
        raise ValueError(f"credential id must be {ID_LEN} bytes")
    keys = Keys.derive(secret)
    ts = time.time_ns() // 1000 if timestamp_us is None else timestamp_us
    nonce = os.urandom(NONCE_LEN) if nonce is None else nonce
    if len(nonce) != NONCE_LEN:
        raise ValueError(f"nonce must be {NONCE_LEN} bytes")
    header = _HEADER.pack(VERSION, cred_id, ts, nonce)
    plain = encode_request(req)
    stream = _keystream(keys, header[1:])
    body = bytes(a ^ b for a, b in zip(plain, stream, strict=True))
    tag = blake3.blake3(header + body, key=keys.mac).digest()
    return header + body + tag


def peek_cred_id(packet: bytes) -> bytes:
    """The credential id of a packet of the right length and version."""
    if len(packet) != WIRE_LEN or packet[0] != VERSION:
        raise ProtocolError("not a v1 packet")
    return packet[1 : 1 + ID_LEN]


def decode_packet(packet: bytes, secret: bytes) -> Packet:
    """Verify the tag, then decrypt and parse. No time or replay checks."""
    cred_id = peek_cred_id(packet)
    keys = Keys.derive(secret)
    want = blake3.blake3(packet[:OFF_TAG], key=keys.mac).digest()
    tag = packet[OFF_TAG:]
    if not hmac.compare_digest(want, tag):
        raise ProtocolError("tag does not verify")
    _, _, ts, nonce = _HEADER.unpack_from(packet)
    stream = _keystream(keys, packet[1:HDR_LEN])
    plain = bytes(
        a ^ b for a, b in zip(packet[HDR_LEN:OFF_TAG], stream, strict=True)
    )
    return Packet(
        cred_id=cred_id, timestamp_us=ts, nonce=nonce, tag=tag,
        request=decode_request(plain),
    )
