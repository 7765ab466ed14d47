"""Protocol v1 encoder/decoder (pure Python) against its own rules."""

from __future__ import annotations

import ipaddress
import os

import pytest

from spa import protocol as P

SECRET = bytes(range(32))
CRED = bytes.fromhex("0011223344556677")
DST = ipaddress.ip_address("192.0.2.1")


def req(**kw: object) -> P.Request:
    base: dict[str, object] = {
        "ports": (("tcp", 22),), "open_for": 30, "destination": DST,
    }
    base.update(kw)
    return P.Request(**base)  # type: ignore[arg-type]


def test_packet_is_fixed_length_whatever_it_asks() -> None:
    small = P.encode_packet(CRED, SECRET, req())
    big = P.encode_packet(
        CRED, SECRET,
        req(ports=tuple(("udp", 1000 + i) for i in range(16)),
            allow=ipaddress.ip_address("2001:db8::5"),
            forward=(ipaddress.ip_address("2001:db8::9"), 2222)),
    )
    assert len(small) == len(big) == P.WIRE_LEN == 171


@pytest.mark.parametrize(
    "request_",
    [
        req(),
        req(allow=ipaddress.ip_address("198.51.100.7")),
        req(allow=ipaddress.ip_address("2001:db8::1"),
            destination=ipaddress.ip_address("2001:db8::2")),
        req(destination=P.server_id_digest("Bastion.Example")),
        req(ports=(("tcp", 22), ("udp", 53), ("tcp", 443)), open_for=86400),
        req(forward=(ipaddress.ip_address("192.0.2.50"), 22)),
    ],
)
def test_round_trip(request_: P.Request) -> None:
    pkt = P.encode_packet(CRED, SECRET, request_, timestamp_us=123456789)
    got = P.decode_packet(pkt, SECRET)
    assert got.request == request_
    assert got.cred_id == CRED
    assert got.timestamp_us == 123456789
    assert got.replay_key == pkt[P.OFF_TAG : P.OFF_TAG + 16]


def test_server_id_is_case_insensitive() -> None:
    assert P.server_id_digest("Bastion.EXAMPLE ") == P.server_id_digest(
        "bastion.example"
    )


def test_body_is_encrypted() -> None:
    a = P.encode_packet(CRED, SECRET, req(), nonce=bytes(16), timestamp_us=1)
    b = P.encode_packet(CRED, SECRET, req(), nonce=bytes(15) + b"\x01",
                        timestamp_us=1)
    assert P.encode_request(req()) not in a
    assert a[P.HDR_LEN : P.OFF_TAG] != b[P.HDR_LEN : P.OFF_TAG]


@pytest.mark.parametrize("offset", range(0, P.WIRE_LEN, 7))
def test_any_flipped_bit_fails_the_tag(offset: int) -> None:
    pkt = bytearray(P.encode_packet(CRED, SECRET, req()))
    pkt[offset] ^= 0x10
    with pytest.raises(P.ProtocolError):
        P.decode_packet(bytes(pkt), SECRET)


def test_wrong_secret_fails() -> None:
    pkt = P.encode_packet(CRED, SECRET, req())
    with pytest.raises(P.ProtocolError, match="tag"):
        P.decode_packet(pkt, os.urandom(32))


def _body(**patch: int) -> bytes:
    body = bytearray(P.encode_request(req()))
    for off, value in patch.items():
        body[int(off[1:])] = value
    return bytes(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_body(o0=5), "unknown address family"),
        (_body(o0=0, o5=1), "family 0 with an address"),
        (_body(o17=9), "unknown address family"),
        (_body(o34=0, o35=0, o36=0, o37=0), "open time"),
        (_body(o57=0), "port count"),
        (_body(o57=17), "port count"),
        (_body(o58=1), "bad port entry"),
        (_body(o61=6), "after the last port"),
        (_body(o55=1), "forward: family 0"),
        (b"\x00" * 10, "body is 10 bytes"),
    ],
)
def test_malformed_bodies_are_refused(body: bytes, message: str) -> None:
    with pytest.raises(P.ProtocolError, match=message):
        P.decode_request(body)


@pytest.mark.parametrize(
    "bad",
    [
        req(ports=()),
        req(ports=tuple(("tcp", i + 1) for i in range(17))),
        req(open_for=0),
        req(open_for=86401),
        req(ports=(("tcp", 0),)),
        req(ports=(("sctp", 5),)),
    ],
)
def test_encoder_refuses_what_the_decoder_would(bad: P.Request) -> None:
    with pytest.raises(P.ProtocolError):
        P.encode_request(bad)
