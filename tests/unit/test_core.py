"""The native packet path (spa._core) judged against the Python oracle."""

from __future__ import annotations

import ipaddress
import os
import struct
import time
from collections.abc import Callable

import pytest

from spa import protocol as P
from spa.core import DLT_RAW, Core

SECRET = os.urandom(32)
CRED = os.urandom(8)
SRC = ipaddress.IPv4Address("192.0.2.2")
DST = ipaddress.IPv4Address("192.0.2.1")
REQ = P.Request(ports=(("tcp", 22),), open_for=30, destination=DST)
WINDOW_S = 60


def now_us() -> int:
    return time.time_ns() // 1000


def ip4_udp(payload: bytes, dport: int = 62201) -> bytes:
    udp = struct.pack(">HHHH", 40000, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
        SRC.packed, DST.packed,
    )
    return ip + udp


@pytest.fixture
def core() -> Core:
    c = Core(window=WINDOW_S, replay_capacity=1024)
    c.add_credential(CRED, SECRET)
    return c


def flip(i: int) -> Callable[[bytes], bytes]:
    def f(b: bytes) -> bytes:
        m = bytearray(b)
        m[i] ^= 1
        return bytes(m)
    return f


@pytest.mark.parametrize(
    ("make", "verdict"),
    [
        (lambda: ip4_udp(P.encode_packet(CRED, SECRET, REQ)), "accepted"),
        (lambda: ip4_udp(P.encode_packet(CRED, SECRET, REQ), 62202), "drop_port"),
        (lambda: ip4_udp(P.encode_packet(CRED, SECRET, REQ)[:-1]), "drop_length"),
        (lambda: ip4_udp(P.encode_packet(CRED, SECRET, REQ) + b"x"), "drop_length"),
        (lambda: ip4_udp(b"\x02" + P.encode_packet(CRED, SECRET, REQ)[1:]),
         "drop_version"),
        (lambda: ip4_udp(P.encode_packet(os.urandom(8), SECRET, REQ)),
         "drop_unknown_id"),
        (lambda: ip4_udp(P.encode_packet(CRED, os.urandom(32), REQ)), "drop_mac"),
        (lambda: ip4_udp(P.encode_packet(
            CRED, SECRET, REQ, timestamp_us=now_us() - (WINDOW_S + 2) * 10**6)),
         "drop_stale"),
        (lambda: ip4_udp(P.encode_packet(
            CRED, SECRET, REQ, timestamp_us=now_us() + (WINDOW_S + 2) * 10**6)),
         "drop_stale"),
        (lambda: b"\x45", "drop_net"),
    ],
)
def test_verdicts(core: Core, make: Callable[[], bytes], verdict: str) -> None:
    assert core.process(DLT_RAW, make(), now_us()) == verdict
    assert core.counters()[verdict] == 1
    assert sum(core.counters().values()) == 1


@pytest.mark.parametrize("offset", range(P.WIRE_LEN))
def test_every_flipped_bit_is_dropped(core: Core, offset: int) -> None:
    pkt = bytearray(P.encode_packet(CRED, SECRET, REQ))
    pkt[offset] ^= 0x01
    verdict = core.process(DLT_RAW, ip4_udp(bytes(pkt)), now_us())
    assert verdict != "accepted"
    assert core.pop() == []


def test_accepted_record_matches_the_oracle(core: Core) -> None:
    pkt = P.encode_packet(CRED, SECRET, REQ)
    assert core.process(DLT_RAW, ip4_udp(pkt), now_us()) == "accepted"
    (rec,) = core.pop()
    oracle = P.decode_packet(pkt, SECRET)
    assert P.decode_request(rec.body) == oracle.request
    assert rec.replay_key == oracle.replay_key
    assert rec.ts_us == oracle.timestamp_us
    assert (rec.src, rec.dst, rec.dport) == (SRC, DST, 62201)


def test_replay_refused_and_seeded_keys_hold(core: Core) -> None:
    pkt = P.encode_packet(CRED, SECRET, REQ)
    t = now_us()
    assert core.process(DLT_RAW, ip4_udp(pkt), t) == "accepted"
    assert core.process(DLT_RAW, ip4_udp(pkt), t + 1000) == "drop_replay"

    fresh = Core(window=WINDOW_S)
    fresh.add_credential(CRED, SECRET)
    fresh.seed_replay(pkt[P.OFF_TAG : P.OFF_TAG + 16], t + WINDOW_S * 10**6)
    assert fresh.process(DLT_RAW, ip4_udp(pkt), t) == "drop_replay"


def test_full_ring_drops_and_does_not_consume_the_replay_key() -> None:
    c = Core(ring_capacity=64)
    c.add_credential(CRED, SECRET)
    t = now_us()
    for _ in range(64):
        assert c.process(DLT_RAW, ip4_udp(P.encode_packet(CRED, SECRET, REQ)), t) \
            == "accepted"
    late = ip4_udp(P.encode_packet(CRED, SECRET, REQ))
    assert c.process(DLT_RAW, late, t) == "drop_ring_full"
    assert len(c.pop()) == 64
    assert c.process(DLT_RAW, late, t) == "accepted"


def test_replay_set_full_refuses_rather_than_forgets() -> None:
    c = Core(replay_capacity=1024, ring_capacity=1 << 16)
    c.add_credential(CRED, SECRET)
    t = now_us()
    verdicts = [
        c.process(DLT_RAW, ip4_udp(P.encode_packet(CRED, SECRET, REQ)), t)
        for _ in range(1500)
    ]
    assert verdicts.count("accepted") <= 1024
    assert "drop_replay_full" in verdicts
    counts = c.counters()
    assert counts["accepted"] + counts["drop_replay_full"] == 1500


def test_duplicate_credential_refused(core: Core) -> None:
    with pytest.raises(OSError, match="File exists"):
        core.add_credential(CRED, os.urandom(32))


def test_pcap_file_mode_reads_to_the_end(tmp_path: os.PathLike[str]) -> None:
    from tests.pcapfile import write_pcap

    t = now_us()
    frames = [ip4_udp(P.encode_packet(CRED, SECRET, REQ)) for _ in range(3)]
    frames.append(frames[0])
    frames += [ip4_udp(os.urandom(171)) for _ in range(5)]
    path = os.path.join(tmp_path, "k.pcap")
    write_pcap(path, DLT_RAW, [(t, f) for f in frames])
    c = Core()
    c.add_credential(CRED, SECRET)
    c.open_file(path)
    c.start()
    deadline = time.monotonic() + 10
    while not c.finished and time.monotonic() < deadline:
        time.sleep(0.01)
    recs = c.pop()
    counts = c.counters()
    assert len(recs) == 3
    assert counts["accepted"] == 3 and counts["drop_replay"] == 1
    # random 171-byte payloads: version byte 1 passes the filter about 1 in 256
    assert sum(counts.values()) <= 9


def _run_file(core: Core, path: str) -> dict[str, int]:
    core.open_file(path)
    core.start()
    deadline = time.monotonic() + 10
    while not core.finished and time.monotonic() < deadline:
        time.sleep(0.01)
    core.pop()
    return core.counters()


@pytest.mark.parametrize(("id_filter", "unknown_seen"), [(True, 0), (False, 5)])
def test_kernel_filter_drops_unknown_ids(
    tmp_path: os.PathLike[str], id_filter: bool, unknown_seen: int
) -> None:
    from tests.pcapfile import write_pcap

    t = now_us()
    frames = [ip4_udp(P.encode_packet(CRED, SECRET, REQ)) for _ in range(3)]
    frames += [ip4_udp(P.encode_packet(os.urandom(8), SECRET, REQ))
               for _ in range(5)]  # fmt: skip
    path = os.path.join(tmp_path, "ids.pcap")
    write_pcap(path, DLT_RAW, [(t, f) for f in frames])
    c = Core(id_filter=id_filter)
    c.add_credential(CRED, SECRET)
    counts = _run_file(c, path)
    assert counts["accepted"] == 3
    assert counts["drop_unknown_id"] == unknown_seen
    assert (CRED[:4].hex() in c.filter_text) is id_filter


def test_too_many_ids_for_the_kernel_filter_fall_back(
    tmp_path: os.PathLike[str],
) -> None:
    from tests.pcapfile import write_pcap

    path = os.path.join(tmp_path, "one.pcap")
    write_pcap(path, DLT_RAW, [(now_us(), ip4_udp(P.encode_packet(CRED, SECRET, REQ)))])
    c = Core(max_creds=128)
    c.add_credential(CRED, SECRET)
    for _ in range(64):
        c.add_credential(os.urandom(8), os.urandom(32))
    counts = _run_file(c, path)
    assert "udp[9:4]" not in c.filter_text
    assert counts["accepted"] == 1


def test_reading_a_file_waits_for_the_consumer(tmp_path: os.PathLike[str]) -> None:
    """Offline, a full ring makes the reader wait instead of dropping."""
    from tests.pcapfile import write_pcap

    t = now_us()
    frames = [ip4_udp(P.encode_packet(CRED, SECRET, REQ)) for _ in range(1000)]
    path = os.path.join(tmp_path, "many.pcap")
    write_pcap(path, DLT_RAW, [(t + i, f) for i, f in enumerate(frames)])
    c = Core(ring_capacity=64)
    c.add_credential(CRED, SECRET)
    c.open_file(path)
    c.start()
    got = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done = c.finished  # read before the pop: nothing can follow it
        batch = c.pop()
        got += len(batch)
        if not batch:
            if done:
                break
            time.sleep(0.001)
    counts = c.counters()
    assert got == 1000
    assert counts["accepted"] == 1000 and counts["drop_ring_full"] == 0
