"""The replay state on disk.

Every verified packet's replay key is written to ``replay.log`` and made
durable before the firewall opens for it, so a daemon that crashes right
after a grant, or is restarted on purpose, still refuses the same packet.

The write sits on the knock's path, so it is made cheap: the file is
preallocated and zero-filled, entries are written in place with
``pwrite`` and made durable with ``fdatasync``. Overwriting blocks that
already exist changes no file metadata, so the sync is a data flush only
(about 0.2 ms here, against about 4 ms for an append plus ``fsync``, which
must also commit the new file size). Each 32-byte entry carries a checksum,
and 16 of them fill a 512-byte sector exactly, so a torn write spoils at
most the entries being written and is recognised on load. An entry is only
useful until its packet would fail the time check anyway; when the file is
full, or mostly expired, the live entries are copied into a fresh file.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Iterable
from pathlib import Path

import blake3

log = logging.getLogger(__name__)

_ENTRY = struct.Struct(">16sQ8s")
ENTRY_SIZE = _ENTRY.size
FILENAME = "replay.log"
MIN_CAPACITY = 4096  # entries: 128 KiB


def now_us() -> int:
    return time.time_ns() // 1000


def _check(key: bytes, expires: int) -> bytes:
    return blake3.blake3(key + expires.to_bytes(8, "big")).digest(length=8)


def pack(key: bytes, expires: int) -> bytes:
    return _ENTRY.pack(key, expires, _check(key, expires))


class ReplayStore:
    """Durable set of (replay key, expiry in Unix microseconds)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILENAME
        self._fd = -1
        self._next = 0  # slot of the next write
        self._capacity = 0

    def load(self) -> list[tuple[bytes, int]]:
        """Entries still live; the file is rewritten with only those."""
        live = self._read_live()
        self._rewrite(live, max(MIN_CAPACITY, 2 * len(live)))
        return live

    def _read_live(self) -> list[tuple[bytes, int]]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        now, live, bad = now_us(), [], 0
        whole = len(data) - len(data) % ENTRY_SIZE
        for key, expires, check in _ENTRY.iter_unpack(data[:whole]):
            if not expires:
                continue  # never written
            if check != _check(key, expires):
                bad += 1
            elif expires >= now:
                live.append((key, expires))
        if bad or whole != len(data):
            log.warning("%s: ignoring %d torn or damaged entries", self.path, bad)
        return live

    def _rewrite(self, entries: list[tuple[bytes, int]], capacity: int) -> None:
        blob = b"".join(pack(k, e) for k, e in entries)
        blob += bytes(capacity * ENTRY_SIZE - len(blob))
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, blob, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self._close()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        self._next = len(entries)
        self._capacity = capacity

    def append(self, entries: Iterable[tuple[bytes, int]]) -> None:
        """Write and sync; returns only once the entries are on disk."""
        items = list(entries)
        if not items:
            return
        if self._fd < 0:
            self.load()
        if self._next + len(items) > self._capacity:
            live = self._read_live()
            self._rewrite(live, max(MIN_CAPACITY, 2 * (len(live) + len(items))))
        blob = b"".join(pack(k, e) for k, e in items)
        _write_all(self._fd, blob, self._next * ENTRY_SIZE)
        os.fdatasync(self._fd)
        self._next += len(items)

    def maybe_compact(self) -> None:
        """Start a fresh file when most of this one has expired."""
        if self._fd < 0 or self._next <= MIN_CAPACITY // 2:
            return
        live = self._read_live()
        if 2 * len(live) < self._next:
            self._rewrite(live, max(MIN_CAPACITY, 2 * len(live)))

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        self._close()


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
