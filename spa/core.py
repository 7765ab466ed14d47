"""Python face of the native core (``spa._core``, built by csrc/build_ffi.py).

C return codes become exceptions here; the core's lifetime is tied to the
Python object with ``ffi.gc`` so that a forgotten close() still stops the
capture thread and frees the core.
"""

from __future__ import annotations

import errno
import ipaddress
import os
from dataclasses import dataclass
from typing import Literal

from spa import _records  # type: ignore[attr-defined]
from spa._core import ffi, lib

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

COUNTER_NAMES: tuple[str, ...] = (
    "accepted",
    "drop_link",
    "drop_net",
    "drop_fragment",
    "drop_transport",
    "drop_port",
    "drop_length",
    "drop_version",
    "drop_unknown_id",
    "drop_mac",
    "drop_stale",
    "drop_replay",
    "drop_replay_full",
    "drop_ring_full",
)
assert len(COUNTER_NAMES) == lib.SPA_NCOUNTERS

RECORD_SIZE: int = ffi.sizeof("struct spa_record")
assert RECORD_SIZE == _records.RECORD_SIZE

# link types, as libpcap numbers them
DLT_NULL = 0
DLT_EN10MB = 1
DLT_RAW = 12
DLT_LOOP = 108
DLT_LINUX_SLL = 113
DLT_LINUX_SLL2 = 276


@dataclass(frozen=True, slots=True)
class Record:
    """One verified, decrypted request as the capture thread saw it."""

    cred: int
    src: IPAddress
    dst: IPAddress
    sport: int
    dport: int
    ts_us: int
    rx_us: int
    replay_key: bytes
    body: bytes


def _addr(family: int, raw: bytes) -> IPAddress:
    if family == 4:
        return ipaddress.IPv4Address(raw[:4])
    return ipaddress.IPv6Address(raw)


def _check(rc: int, what: str, detail: str = "") -> int:
    """Raise CoreError for a negative errno; libpcap's text wins if given."""
    if rc < 0:
        raise CoreError(-rc, f"{what}: {detail or os.strerror(-rc)}")
    return rc


class CoreError(OSError):
    """A setup call into the native core failed; str() is one line."""

    def __str__(self) -> str:
        return str(self.strerror)


class Core:
    """One capture pipeline: credentials, replay set, ring, capture thread."""

    def __init__(
        self,
        *,
        port: int = 62201,
        window: float = 60.0,
        replay_capacity: int = 65536,
        ring_capacity: int = 4096,
        max_creds: int = 1024,
        clock: Literal["real", "pcap"] = "real",
        immediate: bool = False,
        buffer_bytes: int = 8 << 20,
        timeout_ms: int = 1,
        id_filter: bool = True,
    ) -> None:
        cfg = ffi.new("struct spa_core_cfg *")
        lib.spa_core_default_cfg(cfg)
        cfg.port = port
        cfg.window_us = int(window * 1_000_000)
        cfg.replay_capacity = replay_capacity
        cfg.ring_capacity = ring_capacity
        cfg.max_creds = max_creds
        cfg.clock = 1 if clock == "pcap" else 0
        cfg.immediate = int(immediate)
        cfg.buffer_bytes = buffer_bytes
        cfg.timeout_ms = timeout_ms
        cfg.id_filter = int(id_filter)
        raw = lib.spa_core_new(cfg)
        if raw == ffi.NULL:
            raise CoreError(errno.ENOMEM, "cannot create the native core")
        self._core = ffi.gc(raw, lib.spa_core_free)
        self._batch_cap = 256
        self._batch = ffi.new("struct spa_record[]", self._batch_cap)
        self._batch_buf = ffi.buffer(self._batch)
        self._counters = ffi.new("uint64_t[]", lib.SPA_NCOUNTERS)

    # -- setup -----------------------------------------------------------
    def add_credential(self, cred_id: bytes, secret: bytes) -> int:
        if len(cred_id) != lib.SPA_ID_LEN or len(secret) != lib.SPA_SECRET_LEN:
            raise ValueError("credential id is 8 bytes, secret 32 bytes")
        return _check(
            lib.spa_core_add_cred(self._core, cred_id, secret), "add credential"
        )

    def seed_replay(self, key: bytes, expires_us: int) -> None:
        if len(key) != lib.SPA_REPLAY_KEY_LEN:
            raise ValueError("replay key is 16 bytes")
        _check(lib.spa_core_replay_seed(self._core, key, expires_us), "replay seed")

    def open_live(self, interface: str) -> None:
        err = ffi.new("char[]", 512)
        rc = lib.spa_core_open_live(self._core, interface.encode(), err)
        _check(rc, f"capture on {interface}", ffi.string(err).decode(errors="replace"))

    def open_file(self, path: str) -> None:
        err = ffi.new("char[]", 512)
        rc = lib.spa_core_open_file(self._core, os.fsencode(path), err)
        _check(rc, f"read {path}", ffi.string(err).decode(errors="replace"))

    @property
    def filter_text(self) -> str:
        buf = ffi.new("char[]", 1 << 16)
        _check(lib.spa_core_filter_text(self._core, buf, 1 << 16), "filter text")
        return str(ffi.string(buf).decode())

    def start(self) -> None:
        _check(lib.spa_core_start(self._core), "start capture thread")

    def stop(self) -> None:
        lib.spa_core_stop(self._core)

    def close(self) -> None:
        if self._core is not None:
            lib.spa_core_stop(self._core)
            ffi.release(self._core)
            self._core = None

    # -- consumer --------------------------------------------------------
    def fileno(self) -> int:
        return int(lib.spa_core_eventfd(self._core))

    def pop(self) -> list[Record]:
        """Up to one batch of records; never blocks."""
        n = lib.spa_core_pop(self._core, self._batch, self._batch_cap)
        if not n:
            return []
        rows = _records.unpack(self._batch_buf, n)
        ffi.memmove(self._batch, bytes(RECORD_SIZE * n), RECORD_SIZE * n)
        return [
            Record(
                cred=cred, src=_addr(fam, src), dst=_addr(fam, dst),
                sport=sport, dport=dport, ts_us=ts, rx_us=rx,
                replay_key=key, body=body,
            )
            for (cred, fam, src, dst, sport, dport, ts, rx, key, body) in rows
        ]

    def prepare_sleep(self) -> bool:
        """True when the caller may sleep on fileno() until woken."""
        return bool(lib.spa_core_prepare_sleep(self._core))

    def clear_wakeup(self) -> None:
        lib.spa_core_clear_wakeup(self._core)

    @property
    def finished(self) -> bool:
        return bool(lib.spa_core_finished(self._core))

    @property
    def error(self) -> str:
        return str(ffi.string(lib.spa_core_error(self._core)).decode(errors="replace"))

    def capture_times(self) -> tuple[float, float] | None:
        """(wall, CPU) seconds of the finished capture thread, else None."""
        out = ffi.new("uint64_t[2]")
        if lib.spa_core_capture_times(self._core, out) < 0:
            return None
        return out[0] / 1e9, out[1] / 1e9

    def counters(self) -> dict[str, int]:
        lib.spa_core_counters(self._core, self._counters)
        return {name: int(self._counters[i]) for i, name in enumerate(COUNTER_NAMES)}

    def pcap_stats(self) -> dict[str, int]:
        out = ffi.new("uint64_t[3]")
        if lib.spa_core_pcap_stats(self._core, out) < 0:
            return {}
        return {"received": out[0], "dropped": out[1], "if_dropped": out[2]}

    def process(self, linktype: int, frame: bytes, now_us: int) -> str:
        """Run one frame through the packet path (tests and fuzzing)."""
        v = lib.spa_core_process(self._core, linktype, frame, len(frame), now_us)
        return COUNTER_NAMES[int(v)]
