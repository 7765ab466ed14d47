"""Policy verdicts: destination binding, source ranges, address rule, ports, time."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from pathlib import Path

import pytest

from spa.config import Credential, PortSpec, ServerConfig
from spa.firewall.base import Grant
from spa.policy import Policy, describe_asked, describe_ports
from spa.protocol import IPAddress, Request, server_id_digest


def ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


ALICE = Credential(
    name="alice",
    id=bytes.fromhex("8f3a0c1d22e4b599"),
    secret=bytes(32),
    allow=(PortSpec("tcp", 22), PortSpec("udp", 53)),
    sources=(
        ipaddress.ip_network("192.0.2.0/25"),
        ipaddress.ip_network("2001:db8:1::/48"),
    ),
    max_open=300,
)
ROAMER = replace(ALICE, name="roamer", allow_other_address=True)
V4_ONLY = replace(ALICE, name="v4only", sources=(ipaddress.ip_network("0.0.0.0/0"),))

CFG = ServerConfig(
    path=Path("/dev/null"),
    server_ids=("Bastion.Example", "jump.example"),
    addresses=(ip("203.0.113.7"), ip("2001:db8:ffff::7")),
    credentials=(ALICE, ROAMER, V4_ONLY),
)

SRC4, DST4 = ip("192.0.2.10"), ip("192.0.2.1")
SRC6, DST6 = ip("2001:db8:1::10"), ip("2001:db8::1")
TCP22 = (("tcp", 22),)


def req(
    destination: IPAddress | bytes = DST4,
    ports: tuple[tuple[str, int], ...] = TCP22,
    open_for: int = 30,
    allow: IPAddress | None = None,
    forward: tuple[IPAddress, int] | None = None,
) -> Request:
    return Request(
        ports=ports,  # type: ignore[arg-type]
        open_for=open_for, allow=allow, destination=destination, forward=forward,
    )


# (credential, request, packet source, packet destination, refusal or granted target)
VERDICTS = [
    # destination binding
    pytest.param(ALICE, req(DST4), SRC4, DST4, SRC4, id="dest-is-packet-dst-v4"),
    pytest.param(ALICE, req(DST6), SRC6, DST6, SRC6, id="dest-is-packet-dst-v6"),
    pytest.param(ALICE, req(ip("203.0.113.7")), SRC4, DST4, SRC4,
                 id="dest-in-addresses-v4"),
    pytest.param(ALICE, req(ip("2001:db8:ffff::7")), SRC6, DST6, SRC6,
                 id="dest-in-addresses-v6"),
    pytest.param(ALICE, req(ip("2001:db8:ffff::7")), SRC4, DST4, SRC4,
                 id="dest-in-addresses-other-family"),
    pytest.param(ALICE, req(server_id_digest("bastion.example")), SRC4, DST4, SRC4,
                 id="server-id"),
    pytest.param(ALICE, req(server_id_digest("BASTION.Example")), SRC6, DST6, SRC6,
                 id="server-id-case-insensitive"),
    pytest.param(ALICE, req(server_id_digest("JUMP.EXAMPLE")), SRC4, DST4, SRC4,
                 id="second-server-id"),
    pytest.param(ALICE, req(server_id_digest("other.example")), SRC4, DST4,
                 "wrong destination", id="other-server-id"),
    pytest.param(ALICE, req(ip("192.0.2.2")), SRC4, DST4, "wrong destination",
                 id="other-bastion-v4"),
    pytest.param(ALICE, req(ip("2001:db8::2")), SRC6, DST6, "wrong destination",
                 id="other-bastion-v6"),
    pytest.param(ALICE, req(DST6), SRC4, DST4, "wrong destination",
                 id="dest-of-other-family"),
    pytest.param(ALICE, req(ip("192.0.2.2")), ip("198.51.100.1"), DST4,
                 "wrong destination", id="destination-checked-first"),
    # source ranges
    pytest.param(ALICE, req(), ip("192.0.2.127"), DST4, ip("192.0.2.127"),
                 id="source-range-edge"),
    pytest.param(ALICE, req(), ip("192.0.2.128"), DST4, "source not allowed",
                 id="source-out-of-range-v4"),
    pytest.param(ALICE, req(DST6), ip("2001:db8:2::10"), DST6, "source not allowed",
                 id="source-out-of-range-v6"),
    pytest.param(V4_ONLY, req(DST6), SRC6, DST6, "source not allowed",
                 id="no-range-for-family"),
    pytest.param(V4_ONLY, req(), ip("198.51.100.1"), DST4, ip("198.51.100.1"),
                 id="any-v4-source"),
    # IPv4-mapped IPv6 (a dual-stack socket's view of an IPv4 packet)
    pytest.param(ALICE, req(DST4), ip("::ffff:192.0.2.10"), ip("::ffff:192.0.2.1"),
                 SRC4, id="mapped-source-and-destination"),
    pytest.param(ALICE, req(ip("::ffff:192.0.2.1")), SRC4, DST4, SRC4,
                 id="mapped-destination-in-request"),
    pytest.param(ALICE, req(ip("::ffff:203.0.113.7")), SRC4, DST4, SRC4,
                 id="mapped-listed-address"),
    pytest.param(ALICE, req(), ip("::ffff:192.0.2.200"), DST4, "source not allowed",
                 id="mapped-source-out-of-range"),
    pytest.param(ALICE, req(allow=ip("::ffff:192.0.2.10")), SRC4, DST4, SRC4,
                 id="mapped-explicit-own-address"),
    # explicit address to open
    pytest.param(ALICE, req(allow=SRC4), SRC4, DST4, SRC4, id="explicit-own-address"),
    pytest.param(ALICE, req(allow=ip("192.0.2.77")), SRC4, DST4,
                 "other address not allowed", id="explicit-other-address"),
    pytest.param(ALICE, req(DST6, allow=ip("2001:db8:1::77")), SRC6, DST6,
                 "other address not allowed", id="explicit-other-address-v6"),
    pytest.param(ROAMER, req(allow=ip("192.0.2.77")), SRC4, DST4,
                 ip("192.0.2.77"), id="other-address-allowed"),
    pytest.param(ROAMER, req(allow=ip("192.0.2.127")), SRC4, DST4,
                 ip("192.0.2.127"), id="other-address-range-edge"),
    pytest.param(ROAMER, req(allow=ip("2001:db8:1::7")), SRC4, DST4,
                 ip("2001:db8:1::7"), id="other-address-other-family"),
    pytest.param(ROAMER, req(allow=ip("::ffff:192.0.2.77")), SRC4, DST4,
                 ip("192.0.2.77"), id="other-address-mapped"),
    # ... but only inside the credential's own sources
    pytest.param(ROAMER, req(allow=ip("198.51.100.7")), SRC4, DST4,
                 "address outside sources", id="other-address-outside-sources"),
    pytest.param(ROAMER, req(allow=ip("192.0.2.128")), SRC4, DST4,
                 "address outside sources", id="other-address-past-range-edge"),
    pytest.param(ROAMER, req(allow=ip("2001:db8:9::7")), SRC4, DST4,
                 "address outside sources", id="other-address-outside-sources-v6"),
    pytest.param(ROAMER, req(allow=ip("::ffff:198.51.100.7")), SRC4, DST4,
                 "address outside sources", id="other-address-mapped-outside"),
    pytest.param(replace(ROAMER, sources=(ipaddress.ip_network("192.0.2.0/25"),)),
                 req(allow=ip("2001:db8:1::7")), SRC4, DST4,
                 "address outside sources", id="other-address-no-range-for-family"),
    pytest.param(ROAMER, req(allow=SRC4), ip("198.51.100.1"), DST4,
                 "source not allowed", id="other-address-still-needs-source"),
    # ports: all or nothing
    pytest.param(ALICE, req(ports=(("tcp", 22), ("udp", 53))), SRC4, DST4, SRC4,
                 id="all-ports-allowed"),
    pytest.param(ALICE, req(ports=(("tcp", 22), ("tcp", 23))), SRC4, DST4,
                 "port not allowed", id="one-port-not-allowed"),
    pytest.param(ALICE, req(ports=(("udp", 22),)), SRC4, DST4, "port not allowed",
                 id="protocol-matters"),
    # forwarding
    pytest.param(ALICE, req(forward=(ip("192.0.2.50"), 22)), SRC4, DST4,
                 "forwarding not enabled", id="forward"),
    pytest.param(ROAMER, req(forward=(ip("2001:db8::50"), 22)), SRC4, DST4,
                 "forwarding not enabled", id="forward-with-other-address"),
]


@pytest.mark.parametrize(("cred", "request_", "src", "dst", "verdict"), VERDICTS)
def test_verdict(
    cred: Credential, request_: Request, src: IPAddress, dst: IPAddress,
    verdict: str | IPAddress,
) -> None:
    d = Policy(CFG).decide(cred, request_, src, dst)
    if isinstance(verdict, str):
        assert d.reason == verdict
        assert d.reason in Policy.REFUSALS
        assert not d.accepted
        assert d.grants == ()
    else:
        assert d.reason == ""
        assert d.accepted
        assert d.target == verdict
        assert type(d.target) is type(verdict)
        assert [(g.address, g.proto, g.port) for g in d.grants] == [
            (verdict, proto, port) for proto, port in request_.ports
        ]


@pytest.mark.parametrize(
    ("open_for", "max_open", "seconds"),
    [(30, 300, 30.0), (300, 300, 300.0), (301, 300, 300.0), (86400, 300, 300.0),
     (1, 300, 1.0), (86400, 86400, 86400.0), (120, 60, 60.0)],
)
def test_open_time_capped_at_max_open(
    open_for: int, max_open: int, seconds: float
) -> None:
    cred = replace(ALICE, max_open=max_open)
    d = Policy(CFG).decide(cred, req(ports=(("tcp", 22), ("udp", 53)),
                                     open_for=open_for), SRC4, DST4)
    assert d.accepted
    assert [g.seconds for g in d.grants] == [seconds, seconds]


def test_one_grant_per_port() -> None:
    d = Policy(CFG).decide(ALICE, req(DST6, ports=(("udp", 53), ("tcp", 22))),
                           SRC6, DST6)
    assert d.grants == (
        Grant(SRC6, "udp", 53, 30.0),
        Grant(SRC6, "tcp", 22, 30.0),
    )


def test_no_server_ids_means_no_id_binding() -> None:
    bare = replace(CFG, server_ids=(), addresses=())
    policy = Policy(bare)
    assert not policy.decide(
        ALICE, req(server_id_digest("bastion.example")), SRC4, DST4
    ).accepted
    assert not policy.decide(ALICE, req(ip("203.0.113.7")), SRC4, DST4).accepted
    assert policy.decide(ALICE, req(DST4), SRC4, DST4).accepted


def test_describe_ports() -> None:
    assert describe_ports([("tcp", 22), ("udp", 53)]) == "tcp/22,udp/53"


@pytest.mark.parametrize(
    ("cred", "request_", "src", "asked"),
    [
        pytest.param(ALICE, req(ip("192.0.2.2")), SRC4, "192.0.2.2",
                     id="wrong-destination-address"),
        pytest.param(ALICE, req(ip("::ffff:192.0.2.2")), SRC4, "192.0.2.2",
                     id="wrong-destination-mapped"),
        pytest.param(ALICE, req(server_id_digest("other.example")), SRC4,
                     "server id digest " + server_id_digest("other.example")[:4].hex(),
                     id="wrong-destination-server-id"),
        pytest.param(ALICE, req(allow=ip("192.0.2.1")), SRC4, "192.0.2.1",
                     id="other-address"),
        pytest.param(ROAMER, req(allow=ip("::ffff:198.51.100.7")), SRC4,
                     "198.51.100.7", id="address-outside-sources"),
        pytest.param(ALICE, req(ports=(("tcp", 22), ("tcp", 23))), SRC4,
                     "tcp/22,tcp/23", id="ports"),
        pytest.param(ALICE, req(), ip("198.51.100.1"), "tcp/22", id="source"),
        pytest.param(ALICE, req(forward=(ip("192.0.2.50"), 2222)), SRC4,
                     "forward to 192.0.2.50 port 2222", id="forward"),
    ],
)
def test_describe_asked_names_what_was_refused(
    cred: Credential, request_: Request, src: IPAddress, asked: str
) -> None:
    d = Policy(CFG).decide(cred, request_, src, DST4)
    assert not d.accepted
    assert describe_asked(request_, d) == asked
