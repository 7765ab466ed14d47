"""The replay journal: durable appends, expiry on load, torn tails, compaction."""

from __future__ import annotations

import logging
import os
import stat
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from spa.replaystore import FILENAME, ReplayStore, now_us

ENTRY = struct.Struct(">16sQ")
MINUTE_US = 60_000_000


def key(i: int) -> bytes:
    return i.to_bytes(16, "big")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ReplayStore]:
    s = ReplayStore(tmp_path)
    yield s
    s.close()


@pytest.fixture
def no_umask() -> Iterator[None]:
    """So that a file created with a looser mode would show it."""
    old = os.umask(0)
    yield
    os.umask(old)


def reload(state_dir: Path) -> list[tuple[bytes, int]]:
    s = ReplayStore(state_dir)
    try:
        return s.load()
    finally:
        s.close()


def test_append_then_restart_keeps_live_entries(
    tmp_path: Path, store: ReplayStore
) -> None:
    now = now_us()
    live = [(key(1), now + MINUTE_US), (key(2), now + 2 * MINUTE_US)]
    dead = [(key(3), now - MINUTE_US), (key(4), now - 1)]
    assert store.load() == []
    store.append([live[0], dead[0]])
    store.append([dead[1], live[1]])
    # the first store is still open: what a crash leaves behind
    assert (tmp_path / FILENAME).stat().st_size == 4 * ENTRY.size
    assert reload(tmp_path) == live
    # loading rewrote the journal with the live entries only
    data = (tmp_path / FILENAME).read_bytes()
    assert list(ENTRY.iter_unpack(data)) == live
    assert not (tmp_path / "replay.tmp").exists()


def test_load_without_a_journal(tmp_path: Path) -> None:
    assert reload(tmp_path) == []
    assert (tmp_path / FILENAME).read_bytes() == b""


def test_append_nothing_writes_nothing(tmp_path: Path, store: ReplayStore) -> None:
    store.append([])
    assert not (tmp_path / FILENAME).exists()


def test_torn_last_entry_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = now_us()
    live = [(key(1), now + MINUTE_US), (key(2), now + MINUTE_US)]
    blob = b"".join(ENTRY.pack(k, e) for k, e in live)
    (tmp_path / FILENAME).write_bytes(blob + ENTRY.pack(key(3), now + MINUTE_US)[:11])
    with caplog.at_level(logging.WARNING, logger="spa.replaystore"):
        s = ReplayStore(tmp_path)
        assert s.load() == live
    assert "torn" in caplog.text
    # the next entry lands on a whole-entry boundary
    more = (key(4), now + MINUTE_US)
    s.append([more])
    s.close()
    assert (tmp_path / FILENAME).stat().st_size == 3 * ENTRY.size
    assert reload(tmp_path) == [*live, more]


def test_compaction_keeps_live_entries(tmp_path: Path, store: ReplayStore) -> None:
    now = now_us()
    store.load()
    dead = [(key(i), now - MINUTE_US) for i in range(5000)]
    live = [(key(100_000 + i), now + MINUTE_US) for i in range(10)]
    store.append(dead[:2500])
    store.append(live[:5])
    store.append(dead[2500:])
    store.append(live[5:])
    path = tmp_path / FILENAME
    assert path.stat().st_size == 5010 * ENTRY.size
    store.maybe_compact()
    assert list(ENTRY.iter_unpack(path.read_bytes())) == live
    # the store keeps appending to the new file, not to the unlinked one
    extra = (key(7), now + MINUTE_US)
    store.append([extra])
    assert reload(tmp_path) == [*live, extra]


def test_no_compaction_while_mostly_live(tmp_path: Path, store: ReplayStore) -> None:
    now = now_us()
    store.load()
    entries = [(key(i), now + MINUTE_US) for i in range(5000)]
    store.append(entries)
    store.maybe_compact()
    assert (tmp_path / FILENAME).stat().st_size == 5000 * ENTRY.size
    assert reload(tmp_path) == entries


@pytest.mark.usefixtures("no_umask")
def test_journal_is_private(tmp_path: Path) -> None:
    now = now_us()
    first = ReplayStore(tmp_path)
    first.append([(key(1), now + MINUTE_US)])
    first.close()
    path = tmp_path / FILENAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = ReplayStore(tmp_path)
    second.load()  # rewrites through a new file
    second.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.unlink()
    third = ReplayStore(tmp_path)
    third.load()
    third.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
