"""spad: the rule manager around the native capture core.

One thread of Python drains the core's ring when its eventfd fires, decodes
each verified request, applies the credential's policy, makes the replay
keys durable and only then opens the firewall, in one batch per wake-up.
The capture thread never waits for any of this: when Python falls behind,
the ring fills and the core counts what it drops.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import select
import signal
import socket
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from spa.config import Credential, ServerConfig
from spa.core import Core, Record
from spa.firewall import make_firewall
from spa.firewall.base import Firewall, FirewallError, Grant
from spa.policy import Decision, Policy, describe_asked, describe_ports
from spa.protocol import ProtocolError, Request, decode_request
from spa.ratelimit import LogLimiter
from spa.replaystore import ReplayStore

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
LOCK_FILE = "spad.lock"
TICK_S = 1.0
DROP_LOG_INTERVAL_S = 10.0
COMPACT_INTERVAL_S = 60.0
STATUS_MIN_INTERVAL_S = 0.2


@dataclass(frozen=True)
class RunOptions:
    """What the command line adds to the configuration."""

    interface: str | None = None
    pcap_file: str | None = None
    firewall: str | None = None
    state_dir: Path | None = None
    clock: Literal["real", "pcap"] = "real"


class DaemonError(RuntimeError):
    """Start-up failed; the message is one line for the operator."""


GrantKey = tuple[str, str, int]


def _lock_holder(fd: int) -> str:
    """The pid written in a lock file held by another spad, as text."""
    for _ in range(20):  # it writes its pid right after taking the lock
        try:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            break
        if text.isdigit():
            return text
        time.sleep(0.025)
    return "unknown"


def _check_interface(name: str) -> None:
    """A clear error for a mistyped interface, listing the real ones."""
    import pcapy

    try:
        names = [str(n) for n in pcapy.findalldevs()]
    except pcapy.PcapError:
        return
    if name not in names:
        shown = ", ".join(n for n in names if n not in ("any",)) or "none"
        raise DaemonError(f"no interface {name!r} here; available: {shown}")


class Daemon:
    def __init__(self, cfg: ServerConfig, opts: RunOptions) -> None:
        self.cfg = cfg
        self.opts = opts
        self.offline = opts.pcap_file is not None
        self.window_us = int(cfg.window * 1_000_000)
        if self.offline:
            fw_name = opts.firewall or "none"
            state_dir = opts.state_dir
        else:
            fw_name = opts.firewall or cfg.firewall
            state_dir = opts.state_dir or cfg.state_dir
        self.fw_name = fw_name
        self.state_dir = state_dir
        self.creds: list[Credential] = list(cfg.credentials)
        self.policy = Policy(cfg)
        self.outcomes: Counter[str] = Counter()
        self.grants: dict[GrantKey, float] = {}
        self.limiter = LogLimiter(log)
        self.store: ReplayStore | None = None
        self.fw: Firewall | None = None
        self.core: Core | None = None
        self._lock_fd = -1
        self._stop = False
        self._started = time.time()
        self._last_drops: dict[str, int] = {}
        self._last_drop_log = 0.0
        self._last_compact = 0.0
        self._last_status = 0.0

    # -- set-up ----------------------------------------------------------
    def _make_core(self, restored: int = 0) -> Core:
        # The replay set refuses a key once its probe run is full, which
        # starts near half load; restored entries get room to spare.
        core = Core(
            port=self.cfg.port,
            window=self.cfg.window,
            replay_capacity=max(self.cfg.replay_capacity, 4 * restored),
            max_creds=max(16, len(self.creds)),
            clock=self.opts.clock,
        )
        for cred in self.creds:
            core.add_credential(cred.id, cred.secret)
        return core

    def _lock_state(self, state_dir: Path) -> None:
        """Hold ``<state_dir>/spad.lock`` for the daemon's lifetime.

        A second spad on the same state directory would share its replay
        journal and (with the same config) its firewall table, which it
        replaces at start and deletes at exit: it is refused instead.
        """
        fd = os.open(
            state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise
            holder = _lock_holder(fd)
            os.close(fd)
            raise DaemonError(
                f"{state_dir} is in use by another spad (pid {holder})"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except OSError:
            os.close(fd)
            raise
        self._lock_fd = fd

    def _open_state(self) -> list[tuple[bytes, int]]:
        """Lock the state directory and read the live replay entries."""
        if self.state_dir is None:
            return []
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self.offline:
                self._lock_state(self.state_dir)
            self.store = ReplayStore(self.state_dir)
            return self.store.load()
        except OSError as e:
            raise DaemonError(f"state directory {self.state_dir}: {e.strerror}") from e

    def _restore_replay(self, core: Core, entries: list[tuple[bytes, int]]) -> None:
        try:
            for key, expires in entries:
                core.seed_replay(key, expires)
        except OSError as e:
            # never start without the keys: a forgotten one could be replayed
            raise DaemonError(
                f"replay state: {len(entries)} entries do not fit the replay set "
                f"({e}); raise server.replay_capacity"
            ) from e
        if entries:
            log.info("replay state: %d live entries restored", len(entries))

    def _open_firewall(self) -> Firewall:
        fw = make_firewall(
            self.fw_name,
            table=self.cfg.nft_table,
            spa_port=self.cfg.port,
            protected=self.cfg.protected,
        )
        try:
            adopted = fw.start()
        except FirewallError as e:
            raise DaemonError(f"firewall ({self.fw_name}): {e}") from e
        now = time.time()
        for g in adopted:
            self.grants[(str(g.address), g.proto, g.port)] = now + g.seconds
        if adopted:
            log.info("adopted %d grants left by an earlier run", len(adopted))
        try:
            problems = fw.check()
        except FirewallError as e:
            log.warning("firewall check failed: %s", e)
            problems = []
        for problem in problems:
            log.warning("firewall: %s", problem)
        return fw

    def _open_capture(self, core: Core) -> None:
        try:
            if self.opts.pcap_file is not None:
                core.open_file(self.opts.pcap_file)
            else:
                iface = self.opts.interface or self.cfg.interface
                if not iface:
                    raise DaemonError(
                        "no capture interface: set server.interface or --interface"
                    )
                _check_interface(iface)
                core.open_live(iface)
        except OSError as e:
            raise DaemonError(str(e)) from e

    # -- the loop --------------------------------------------------------
    def run(self) -> int:
        """Serve until a signal (live) or the end of the file (offline)."""
        try:
            entries = self._open_state()
            self.core = core = self._make_core(len(entries))
            self._restore_replay(core, entries)
            self._open_capture(core)
            self.fw = self._open_firewall()
        except BaseException:
            self._release_state()
            raise
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        old_fd = signal.set_wakeup_fd(wake_w.fileno())
        old = {
            s: signal.signal(s, self._on_signal)
            for s in (signal.SIGTERM, signal.SIGINT)
        }
        rc = 0
        try:
            core.start()
            log.info(
                "spad listening on %s udp/%d, firewall %s, %d credentials",
                self.opts.pcap_file or self.opts.interface or self.cfg.interface,
                self.cfg.port,
                self.fw_name,
                len(self.creds),
            )
            log.debug("kernel filter: %s", core.filter_text)
            rc = self._loop(core, wake_r)
        finally:
            signal.set_wakeup_fd(old_fd)
            for s, h in old.items():
                signal.signal(s, h)
            wake_r.close()
            wake_w.close()
            self._shutdown()
        return rc

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop = True

    def _loop(self, core: Core, wake_r: socket.socket) -> int:
        next_tick = time.monotonic() + TICK_S
        fds = [core.fileno(), wake_r.fileno()]
        while True:
            records = core.pop()
            if records:
                self._handle(records)
                continue
            if self._stop:
                log.info("signal received, shutting down")
                return 0
            if core.finished:
                records = core.pop()
                if records:
                    self._handle(records)
                    continue
                if core.error:
                    log.error("capture stopped: %s", core.error)
                    return 1
                return 0
            now = time.monotonic()
            if now >= next_tick:
                self._tick()
                next_tick = now + TICK_S
            if core.prepare_sleep():
                select.select(fds, [], [], max(0.0, next_tick - now))
                core.clear_wakeup()
                with contextlib.suppress(BlockingIOError):
                    wake_r.recv(512)

    def _handle(self, records: list[Record]) -> None:
        decided: list[tuple[Record, Credential, Request, Decision]] = []
        keys: list[tuple[bytes, int]] = []
        for rec in records:
            cred = self.creds[rec.cred]
            keys.append((rec.replay_key, rec.ts_us + self.window_us + 1))
            try:
                req = decode_request(rec.body)
            except ProtocolError as e:
                self.outcomes["malformed"] += 1
                self.limiter.log(
                    logging.WARNING,
                    "malformed",
                    "refused %s from %s: malformed request (%s)",
                    cred.name,
                    rec.src,
                    e,
                )
                continue
            decided.append(
                (rec, cred, req, self.policy.decide(cred, req, rec.src, rec.dst))
            )
        if self.store is not None:
            self.store.append(keys)
        grants = [g for *_, d in decided for g in d.grants]
        if grants:
            self._grant(grants)
        for rec, cred, req, d in decided:
            self._log_decision(rec, cred, req, d)
        if time.monotonic() - self._last_status >= STATUS_MIN_INTERVAL_S:
            self._write_status(running=True)

    def _grant(self, grants: list[Grant]) -> None:
        assert self.fw is not None
        try:
            self.fw.allow(grants)
        except FirewallError as e:
            self.outcomes["firewall_error"] += 1
            log.error("firewall refused %d grants: %s", len(grants), e)
            return
        now = time.time()
        for g in grants:
            key = (str(g.address), g.proto, g.port)
            self.grants[key] = max(self.grants.get(key, 0.0), now + g.seconds)

    def _log_decision(
        self, rec: Record, cred: Credential, req: Request, d: Decision
    ) -> None:
        if d.accepted:
            self.outcomes["granted"] += 1
            seconds = int(d.grants[0].seconds)
            capped = f" (asked {req.open_for}s)" if req.open_for > seconds else ""
            self.limiter.log(
                logging.INFO,
                "granted",
                "granted %s: %s %s for %ds%s (knock from %s)",
                cred.name,
                d.target,
                describe_ports(req.ports),
                seconds,
                capped,
                rec.src,
            )
        else:
            self.outcomes["refused"] += 1
            self.outcomes["refused: " + d.reason] += 1
            self.limiter.log(
                logging.WARNING,
                "refused",
                "refused %s from %s: %s (asked %s)",
                cred.name,
                rec.src,
                d.reason,
                describe_asked(req, d),
            )

    # -- periodic work ---------------------------------------------------
    def _tick(self) -> None:
        assert self.core is not None
        now = time.time()
        self.grants = {k: t for k, t in self.grants.items() if t > now}
        counters = self.core.counters()
        drops = {k: v for k, v in counters.items() if k.startswith("drop_")}
        mono = time.monotonic()
        if mono - self._last_drop_log >= DROP_LOG_INTERVAL_S:
            delta = {k: v - self._last_drops.get(k, 0) for k, v in drops.items()}
            shown = ", ".join(f"{k[5:]}={v}" for k, v in delta.items() if v)
            if shown:
                log.info("dropped since last report: %s", shown)
            self._last_drops = drops
            self._last_drop_log = mono
        if self.store is not None and mono - self._last_compact >= COMPACT_INTERVAL_S:
            self.store.maybe_compact()
            self._last_compact = mono
        self._repair_firewall()
        self._write_status(running=True)

    def _repair_firewall(self) -> None:
        """Put the firewall state back if something removed it (the backend
        logs it); until then, up to one tick, protected ports are not dropped.
        """
        if self.fw is None:
            return
        try:
            if self.fw.repair():
                self.outcomes["firewall_repaired"] += 1
        except FirewallError as e:
            self.outcomes["firewall_error"] += 1
            self.limiter.log(logging.ERROR, "repair", "firewall repair failed: %s", e)

    def summary(self) -> dict[str, Any]:
        assert self.core is not None
        out: dict[str, Any] = dict(self.core.counters())
        out["granted"] = self.outcomes["granted"]
        out["refused"] = self.outcomes["refused"]
        out["malformed"] = self.outcomes["malformed"]
        times = self.core.capture_times()
        if times is not None:
            out["capture_seconds"] = round(times[0], 6)
            out["capture_cpu_seconds"] = round(times[1], 6)
        return out

    def status(self, running: bool) -> dict[str, Any]:
        assert self.core is not None
        now = time.time()
        return {
            "pid": os.getpid(),
            "running": running,
            "started": self._started,
            "updated": now,
            "interface": self.opts.interface or self.cfg.interface,
            "port": self.cfg.port,
            "firewall": self.fw_name,
            "counters": self.core.counters(),
            "pcap": self.core.pcap_stats(),
            "outcomes": dict(self.outcomes),
            "grants": [
                {"address": a, "proto": p, "port": port, "expires": t}
                for (a, p, port), t in sorted(self.grants.items())
                if t > now
            ],
        }

    def _write_status(self, running: bool) -> None:
        if self.state_dir is None:
            return
        self._last_status = time.monotonic()
        path = self.state_dir / STATUS_FILE
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(self.status(running)))
            os.replace(tmp, path)
        except OSError as e:
            self.limiter.log(logging.WARNING, "status", "status file: %s", e)

    def _shutdown(self) -> None:
        if self.core is not None:
            self.core.stop()
        if self.fw is not None:
            keep = self.cfg.on_exit == "keep"
            try:
                self.fw.stop(keep=keep)
            except FirewallError as e:
                log.error("firewall clean-up failed: %s", e)
            else:
                if not self.offline:
                    log.info("firewall state %s", "kept" if keep else "removed")
            if not keep:
                self.grants.clear()
        if self.core is not None:
            self._write_status(running=False)
        self._release_state()

    def _release_state(self) -> None:
        """Close the replay journal and let go of the state directory."""
        if self.store is not None:
            self.store.close()
            self.store = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
