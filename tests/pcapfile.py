"""pcap files for tests: written with struct, read back through libpcap.

pcapy-ng can only write frames it has read from a handle, so test captures
are written here in the classic pcap format (microsecond timestamps) and
always read back through libpcap itself (pcapy-ng), never by this module.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import pcapy

_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
MAGIC_US = 0xA1B2C3D4


def write_pcap(
    path: str | Path, linktype: int, frames: Iterable[tuple[int, bytes]],
    snaplen: int = 65535,
) -> int:
    """Write (timestamp in microseconds, frame) pairs; returns the count."""
    n = 0
    with open(path, "wb") as f:
        f.write(_GLOBAL.pack(MAGIC_US, 2, 4, 0, 0, snaplen, linktype))
        for ts_us, frame in frames:
            sec, usec = divmod(ts_us, 1_000_000)
            f.write(_RECORD.pack(sec, usec, len(frame), len(frame)))
            f.write(frame)
            n += 1
    return n


def read_pcap(path: str | Path) -> Iterator[tuple[float, bytes]]:
    """(timestamp in seconds, frame) for every frame, via libpcap."""
    reader = pcapy.open_offline(str(path))
    while True:
        hdr, data = reader.next()
        if hdr is None:
            return
        sec, usec = hdr.getts()
        yield sec + usec / 1e6, bytes(data)


def datalink(path: str | Path) -> int:
    return int(pcapy.open_offline(str(path)).datalink())
