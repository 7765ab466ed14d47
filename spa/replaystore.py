"""The replay state on disk.

Every verified packet's replay key is appended to ``replay.log`` and the file
is fsynced before the firewall opens for it, so a daemon that crashes right
after a grant, or is restarted on purpose, still refuses the same packet. An
entry is only useful until its packet would fail the time check anyway, so
the file is compacted when it holds mostly dead entries.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

_ENTRY = struct.Struct(">16sQ")
FILENAME = "replay.log"


def now_us() -> int:
    return time.time_ns() // 1000


class ReplayStore:
    """Append-only journal of (replay key, expiry in Unix microseconds)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILENAME
        self._fd = -1
        self._written = 0

    def load(self) -> list[tuple[bytes, int]]:
        """Entries still live; the file is rewritten with only those."""
        live = list(self._read_live())
        self._rewrite(live)
        return live

    def _read_live(self) -> Iterator[tuple[bytes, int]]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        now = now_us()
        whole = len(data) - len(data) % _ENTRY.size
        if whole != len(data):
            log.warning("%s: ignoring a torn last entry", self.path)
        for key, expires in _ENTRY.iter_unpack(data[:whole]):
            if expires >= now:
                yield key, expires

    def _rewrite(self, entries: list[tuple[bytes, int]]) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"".join(_ENTRY.pack(k, e) for k, e in entries))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._close()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._written = len(entries)
        dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def append(self, entries: Iterable[tuple[bytes, int]]) -> None:
        """Write and fsync; returns only once the entries are on disk."""
        blob = b"".join(_ENTRY.pack(k, e) for k, e in entries)
        if not blob:
            return
        if self._fd < 0:
            self._fd = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                0o600,
            )
        view = memoryview(blob)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        os.fsync(self._fd)
        self._written += len(blob) // _ENTRY.size

    def maybe_compact(self) -> None:
        """Rewrite the file when most of it has expired (call now and then)."""
        if self._written <= 4096:
            return
        live = list(self._read_live())
        if 2 * len(live) < self._written:
            self._rewrite(live)

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        self._close()
