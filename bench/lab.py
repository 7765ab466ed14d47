"""A two-namespace lab for live benchmarks: server and client on a veth pair.

Names carry a random suffix so a run never collides with tests or another
run; everything created is removed on exit, processes first, by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

SRV4 = "10.201.0.1"
CLI4 = "10.201.0.2"


def sh(argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    kw.setdefault("check", True)
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 120)
    return subprocess.run(list(argv), **kw)


@dataclass
class Lab:
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.srv = f"spab-{self.tag}-s"
        self.cli = f"spab-{self.tag}-c"
        self.srv_if = f"spab{self.tag}s"
        self.cli_if = f"spab{self.tag}c"

    def up(self) -> None:
        for ns in (self.srv, self.cli):
            sh(["ip", "netns", "add", ns])
            self.run(ns, ["ip", "link", "set", "lo", "up"])
            self.run(ns, ["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"])
        sh(["ip", "link", "add", self.srv_if, "netns", self.srv, "type", "veth",
            "peer", "name", self.cli_if, "netns", self.cli])  # fmt: skip
        for ns, dev, addr in ((self.srv, self.srv_if, SRV4),
                              (self.cli, self.cli_if, CLI4)):  # fmt: skip
            self.run(ns, ["ip", "addr", "add", f"{addr}/24", "dev", dev])
            self.run(ns, ["ip", "link", "set", dev, "up"])
        # static neighbours: no ARP traffic mixed into the measurements
        macs = {ns: self._mac(ns, dev) for ns, dev in ((self.srv, self.srv_if),
                                                       (self.cli, self.cli_if))}
        self.run(self.srv, ["ip", "neigh", "replace", CLI4, "lladdr", macs[self.cli],
                            "dev", self.srv_if, "nud", "permanent"])  # fmt: skip
        self.run(self.cli, ["ip", "neigh", "replace", SRV4, "lladdr", macs[self.srv],
                            "dev", self.cli_if, "nud", "permanent"])  # fmt: skip
        # packets that reach the server's IP layer for the SPA port, counted
        # before spad's own prerouting chain (priority -450) drops them
        self.run(self.srv, ["nft", "-f", "-"], input=(
            "table inet spabench {\n"
            "  chain pre {\n"
            "    type filter hook prerouting priority -500;\n"
            "    udp dport 62201 counter\n"
            "  }\n"
            "}\n"
        ))

    def _mac(self, ns: str, dev: str) -> str:
        out = self.run(ns, ["ip", "-j", "link", "show", "dev", dev]).stdout
        return str(json.loads(out)[0]["address"])

    def run(
        self, ns: str, argv: Sequence[str], **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        return sh(["ip", "netns", "exec", ns, *argv], **kw)

    def popen(self, ns: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        proc: subprocess.Popen[Any] = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv], **kw
        )
        self.procs.append(proc)
        return proc

    def delivered(self) -> int:
        """UDP packets to the SPA port that reached the server's IP layer."""
        out = self.run(self.srv, ["nft", "list", "chain", "inet", "spabench", "pre"])
        m = re.search(r"counter packets (\d+)", out.stdout)
        return int(m.group(1)) if m else 0

    def down(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait(5)
        for ns in (self.srv, self.cli):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@contextlib.contextmanager
def lab() -> Iterator[Lab]:
    lb = Lab()
    try:
        lb.up()
        yield lb
    finally:
        lb.down()


class Monitor:
    """``nft monitor`` in a namespace, each line stamped on arrival.

    Grants of both daemons are nf_tables changes (spad adds set elements,
    fwknopd's iptables-nft adds rules), so one monitor times both the same
    way: the instant the change is visible in the kernel's ruleset.
    """

    def __init__(self, lb: Lab, ns: str) -> None:
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._proc = lb.popen(
            ns, ["nft", "monitor", "ruleset"], stdout=subprocess.PIPE, text=True,
            bufsize=1,
        )  # fmt: skip
        assert self._proc.stdout is not None
        self._thread = threading.Thread(
            target=self._read, args=(self._proc.stdout,), daemon=True
        )
        self._thread.start()
        time.sleep(0.3)

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            stamp = time.monotonic()
            with self._lock:
                self.lines.append((stamp, line))

    def matches(self, pattern: re.Pattern[str]) -> dict[int, float]:
        """First arrival time per group(1) (a port number)."""
        out: dict[int, float] = {}
        with self._lock:
            for stamp, line in self.lines:
                m = pattern.search(line)
                if m:
                    out.setdefault(int(m.group(1)), stamp)
        return out

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(5)


def cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def peak_rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


CLK_TCK = os.sysconf("SC_CLK_TCK")
