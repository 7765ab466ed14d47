"""The replay journal: durable writes, expiry on load, torn entries, compaction."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from spa.replaystore import (
    ENTRY_SIZE,
    FILENAME,
    MIN_CAPACITY,
    ReplayStore,
    now_us,
    pack,
)

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


def written(path: Path) -> list[bytes]:
    """The non-zero entries of a journal file, raw."""
    data = path.read_bytes()
    entries = [data[i : i + ENTRY_SIZE] for i in range(0, len(data), ENTRY_SIZE)]
    return [e for e in entries if any(e)]


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
    assert len(written(tmp_path / FILENAME)) == 4
    assert reload(tmp_path) == live
    # loading rewrote the journal with the live entries only
    assert written(tmp_path / FILENAME) == [pack(k, e) for k, e in live]
    assert not (tmp_path / "replay.tmp").exists()


def test_file_is_preallocated_so_writes_change_no_size(
    tmp_path: Path, store: ReplayStore
) -> None:
    store.load()
    path = tmp_path / FILENAME
    size = path.stat().st_size
    assert size == MIN_CAPACITY * ENTRY_SIZE
    store.append([(key(i), now_us() + MINUTE_US) for i in range(100)])
    assert path.stat().st_size == size


def test_sixteen_entries_fill_a_sector() -> None:
    assert 512 % ENTRY_SIZE == 0


def test_load_without_a_journal(tmp_path: Path) -> None:
    assert reload(tmp_path) == []
    assert written(tmp_path / FILENAME) == []


def test_append_nothing_writes_nothing(tmp_path: Path, store: ReplayStore) -> None:
    store.append([])
    assert not (tmp_path / FILENAME).exists()


def test_torn_and_damaged_entries_are_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = now_us()
    live = [(key(1), now + MINUTE_US), (key(2), now + MINUTE_US)]
    damaged = bytearray(pack(key(3), now + MINUTE_US))
    damaged[3] ^= 0xFF
    blob = b"".join(pack(k, e) for k, e in live) + bytes(damaged)
    (tmp_path / FILENAME).write_bytes(blob + pack(key(4), now + MINUTE_US)[:11])
    with caplog.at_level(logging.WARNING, logger="spa.replaystore"):
        s = ReplayStore(tmp_path)
        assert s.load() == live
    assert "torn or damaged" in caplog.text
    more = (key(5), now + MINUTE_US)
    s.append([more])
    s.close()
    assert reload(tmp_path) == [*live, more]


def test_full_file_rolls_over_to_a_bigger_one(
    tmp_path: Path, store: ReplayStore
) -> None:
    now = now_us()
    store.load()
    entries = [(key(i), now + MINUTE_US) for i in range(MIN_CAPACITY + 10)]
    store.append(entries[:MIN_CAPACITY])
    store.append(entries[MIN_CAPACITY:])
    assert (tmp_path / FILENAME).stat().st_size > MIN_CAPACITY * ENTRY_SIZE
    assert reload(tmp_path) == entries


def test_compaction_keeps_live_entries(tmp_path: Path, store: ReplayStore) -> None:
    now = now_us()
    store.load()
    dead = [(key(i), now - MINUTE_US) for i in range(3000)]
    live = [(key(100_000 + i), now + MINUTE_US) for i in range(10)]
    store.append(dead[:1500])
    store.append(live[:5])
    store.append(dead[1500:])
    store.append(live[5:])
    path = tmp_path / FILENAME
    assert len(written(path)) == 3010
    store.maybe_compact()
    assert written(path) == [pack(k, e) for k, e in live]
    # the store keeps writing to the new file, not to the unlinked one
    extra = (key(7), now + MINUTE_US)
    store.append([extra])
    assert reload(tmp_path) == [*live, extra]


def test_no_compaction_while_mostly_live(tmp_path: Path, store: ReplayStore) -> None:
    now = now_us()
    store.load()
    entries = [(key(i), now + MINUTE_US) for i in range(3000)]
    store.append(entries)
    before = (tmp_path / FILENAME).stat().st_ino
    store.maybe_compact()
    assert (tmp_path / FILENAME).stat().st_ino == before
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
