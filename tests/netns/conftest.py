"""Network-namespace fixtures: real kernels, real nftables, no mocks.

``netns``  a factory: ``netns()`` creates a namespace (``spat-`` plus a random
           suffix) and returns its name; every namespace it made and every
           process it started is removed at teardown, pass or fail.
``lab``    two namespaces joined by a veth pair::

               cli  10.201.X.2/24  fd00:201::2/64   <-- veth -->   srv  .1 / ::1

           with X random per test.  ``lab.srv4``, ``lab.cli6`` ... are
           ``ipaddress`` objects; ``lab.srv_if``/``lab.cli_if`` the links.

Both expose the same helpers, each taking the namespace first:

``run(ns, argv, **kw)``        ``ip netns exec ns argv``, a CompletedProcess
                               (text, captured, checked unless ``check=False``)
``popen(ns, argv, **kw)``      a Popen, terminated then killed at teardown
``python(ns)``                 a persistent Python interpreter in ``ns``
                               (:class:`NsPython`): ``exec``/``eval``/``kill``
``run_python(ns, code, *args)`` one-shot ``python -c code args...``
``tcp_connect(ns, addr, port, timeout=1.0) -> bool``
``tcp_listen(ns, port, lifetime=120.0)``   echo server on all addresses
``udp_probe(ns, addr, port, wait=0.5)``    ``"refused"`` (an ICMP error came
                               back), ``"reply"`` or ``"silent"``

Why a separate interpreter: libnftables (and any netlink socket) talks to
the namespace of the process that opened it, and Python 3.11 has no
``os.setns``; so code under test that touches the kernel runs in a child
started by ``ip netns exec`` and is driven over a pipe.

These tests need root and the ``ip`` and ``nft`` tools: without them they
are skipped, or fail when ``CI=true`` (a CI run must not pass by skipping).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PREFIX = "spat-"


def require_root() -> None:
    """Skip (or fail under CI=true) unless root with ``ip`` and ``nft``."""
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    reason = ""
    if os.geteuid() != 0:
        reason = "network namespace tests need root"
    elif missing:
        reason = f"network namespace tests need {' and '.join(missing)}"
    if not reason:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: refusing to skip)")
    pytest.skip(reason)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{path}" if path else str(REPO)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class NsError(RuntimeError):
    """Code run in a namespace failed; the message holds its traceback."""


_AGENT = r"""
import json, os, sys, traceback
reply = os.fdopen(os.dup(1), "w", encoding="utf-8")
sys.stdout = sys.stderr
scope = {"__name__": "__nsagent__"}
for line in sys.stdin:
    req = json.loads(line)
    try:
        if req["op"] == "exec":
            exec(compile(req["src"], "<ns-exec>", "exec"), scope)
            value = None
        else:
            value = eval(compile(req["src"], "<ns-eval>", "eval"), scope)
        text = json.dumps({"ok": True, "value": value}, default=repr)
    except BaseException:
        text = json.dumps({"ok": False, "error": traceback.format_exc()})
    reply.write(text + "\n")
    reply.flush()
"""


class NsPython:
    """A Python interpreter living in a namespace, driven line by line.

    ``exec(src)`` runs statements, ``eval(expr)`` returns a JSON-decoded
    value (anything not JSON-serialisable comes back as its repr).  Names
    persist between calls.  Its stderr (logging included) goes to a file
    whose tail is added to errors.
    """

    def __init__(self, ns: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.ns = ns
        self.proc = proc
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def _call(self, op: str, src: str, timeout: float) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if self.proc.poll() is not None:
            raise NsError(f"python in {self.ns} has exited:\n{self._tail()}")
        line = json.dumps({"op": op, "src": src}) + "\n"
        self.proc.stdin.write(line.encode())
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise NsError(f"python in {self.ns}: no answer in {timeout}s to {src!r}")
        answer = self.proc.stdout.readline()
        if not answer:
            raise NsError(f"python in {self.ns} died:\n{self._tail()}")
        reply = json.loads(answer)
        if not reply["ok"]:
            raise NsError(f"in {self.ns}:\n{reply['error']}")
        return reply["value"]

    def exec(self, src: str, timeout: float = 60.0) -> None:
        self._call("exec", textwrap.dedent(src), timeout)

    def eval(self, expr: str, timeout: float = 60.0) -> Any:
        return self._call("eval", expr.strip(), timeout)

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean anything up."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()


_TCP_CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), float(sys.argv[3]))
except OSError:
    sys.exit(1)
"""

_TCP_LISTEN = """
import socket, sys, threading, time
port, lifetime = int(sys.argv[1]), float(sys.argv[2])
deadline = time.monotonic() + lifetime
srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("::", port))
srv.listen(64)
srv.settimeout(0.2)

def echo(conn):
    conn.settimeout(max(0.1, deadline - time.monotonic()))
    try:
        while data := conn.recv(4096):
            conn.sendall(data)
    except OSError:
        pass
    finally:
        conn.close()

print("ready", flush=True)
while time.monotonic() < deadline:
    try:
        conn, _ = srv.accept()
    except TimeoutError:
        continue
    threading.Thread(target=echo, args=(conn,), daemon=True).start()
"""

_UDP_PROBE = """
import socket, sys
addr, port, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
family = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
s.settimeout(wait)
s.connect((addr, port))
s.send(bytes(171))
try:
    s.recv(2048)
    print("reply")
except ConnectionRefusedError:
    print("refused")
except TimeoutError:
    print("silent")
"""


class NetnsFactory:
    """Creates namespaces and runs things in them; cleans up everything."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.procs: list[subprocess.Popen[Any]] = []
        self.pythons: list[NsPython] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="spat-")

    def __call__(self) -> str:
        require_root()
        for _ in range(10):
            name = PREFIX + secrets.token_hex(3)
            proc = subprocess.run(
                ["ip", "netns", "add", name], capture_output=True, text=True
            )
            if proc.returncode == 0:
                self.names.append(name)
                self.run(name, ["ip", "link", "set", "lo", "up"])
                return name
            if "exists" not in proc.stderr:
                raise RuntimeError(f"ip netns add {name}: {proc.stderr.strip()}")
        raise RuntimeError("no free namespace name after 10 tries")

    def run(
        self, ns: str, argv: Sequence[str], **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("check", True)
        kw.setdefault("timeout", 60)
        kw.setdefault("env", _env())
        try:
            return subprocess.run(["ip", "netns", "exec", ns, *argv], **kw)
        except subprocess.CalledProcessError as exc:
            raise NsError(
                f"in {ns}: {' '.join(argv)} exited {exc.returncode}: "
                f"{(exc.stderr or '').strip()}"
            ) from None

    def popen(self, ns: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in ``ns``; it is terminated (then killed) at teardown.

        ``ip netns exec`` execs the command, so the Popen's pid is the
        command's own.
        """
        kw.setdefault("env", _env())
        proc: subprocess.Popen[Any] = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv], **kw
        )
        self.procs.append(proc)
        return proc

    def python(self, ns: str) -> NsPython:
        log = Path(self._tmp.name) / f"py-{ns}-{len(self.pythons)}.log"
        with open(log, "wb") as err:
            proc = self.popen(
                ns,
                [sys.executable, "-u", "-c", _AGENT],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        py = NsPython(ns, proc, log)
        self.pythons.append(py)
        return py

    def run_python(
        self, ns: str, code: str, *args: object, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-c", textwrap.dedent(code), *map(str, args)]
        return self.run(ns, argv, **kw)

    def tcp_connect(
        self, ns: str, addr: object, port: int, timeout: float = 1.0
    ) -> bool:
        """Does a TCP handshake from ``ns`` to addr:port complete in time?"""
        proc = self.run_python(
            ns, _TCP_CONNECT, addr, port, timeout, check=False, timeout=timeout + 30
        )
        return proc.returncode == 0

    def tcp_listen(
        self, ns: str, port: int, lifetime: float = 120.0
    ) -> subprocess.Popen[str]:
        """An echo server on ``[::]:port`` (IPv4 too) that exits by itself."""
        proc = self.popen(
            ns,
            [sys.executable, "-c", _TCP_LISTEN, str(port), str(lifetime)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        if not ready or proc.stdout.readline().strip() != "ready":
            raise NsError(f"listener on {ns} port {port} did not start")
        return proc

    def udp_probe(self, ns: str, addr: object, port: int, wait: float = 0.5) -> str:
        """Send one datagram on a connected socket, then wait for anything."""
        proc = self.run_python(ns, _UDP_PROBE, addr, port, wait)
        return proc.stdout.strip()

    def cleanup(self) -> None:
        for py in self.pythons:
            with contextlib.suppress(Exception):
                py.close()
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                try:
                    proc.wait(2)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait(5)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        for name in reversed(self.names):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self._tmp.cleanup()


@pytest.fixture
def netns() -> Iterator[NetnsFactory]:
    """Factory of namespaces; all of them and their processes go at teardown."""
    require_root()
    factory = NetnsFactory()
    try:
        yield factory
    finally:
        factory.cleanup()


@dataclass
class Lab:
    """Two namespaces, ``srv`` and ``cli``, joined by a veth pair."""

    netns: NetnsFactory
    srv: str
    cli: str
    srv_if: str
    cli_if: str
    subnet: int
    srv4: ipaddress.IPv4Address = field(init=False)
    cli4: ipaddress.IPv4Address = field(init=False)
    srv6: ipaddress.IPv6Address = field(init=False)
    cli6: ipaddress.IPv6Address = field(init=False)

    def __post_init__(self) -> None:
        self.srv4 = ipaddress.IPv4Address(f"10.201.{self.subnet}.1")
        self.cli4 = ipaddress.IPv4Address(f"10.201.{self.subnet}.2")
        self.srv6 = ipaddress.IPv6Address("fd00:201::1")
        self.cli6 = ipaddress.IPv6Address("fd00:201::2")

    def run(
        self, ns: str, argv: Sequence[str], **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        return self.netns.run(ns, argv, **kw)

    def popen(self, ns: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        return self.netns.popen(ns, argv, **kw)

    def python(self, ns: str) -> NsPython:
        return self.netns.python(ns)

    def run_python(
        self, ns: str, code: str, *args: object, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        return self.netns.run_python(ns, code, *args, **kw)

    def tcp_connect(
        self, ns: str, addr: object, port: int, timeout: float = 1.0
    ) -> bool:
        return self.netns.tcp_connect(ns, addr, port, timeout)

    def tcp_listen(
        self, ns: str, port: int, lifetime: float = 120.0
    ) -> subprocess.Popen[str]:
        return self.netns.tcp_listen(ns, port, lifetime)

    def udp_probe(self, ns: str, addr: object, port: int, wait: float = 0.5) -> str:
        return self.netns.udp_probe(ns, addr, port, wait)

    def nft_json(self, ns: str, *args: str) -> list[dict[str, Any]]:
        """``nft -j args`` in ``ns`` (the CLI, independent of spa's code)."""
        out = self.run(ns, ["nft", "-j", *args]).stdout
        objects: list[dict[str, Any]] = json.loads(out)["nftables"]
        return objects

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Until both links are up and no IPv6 address is tentative."""
        deadline = time.monotonic() + timeout
        while True:
            if all(self._link_ready(ns, dev) for ns, dev in self._links()):
                return
            if time.monotonic() > deadline:
                raise NsError("lab links did not come up")
            time.sleep(0.05)

    def _links(self) -> list[tuple[str, str]]:
        return [(self.srv, self.srv_if), (self.cli, self.cli_if)]

    def _link_ready(self, ns: str, dev: str) -> bool:
        out = self.run(ns, ["ip", "-j", "addr", "show", "dev", dev]).stdout
        info = json.loads(out)[0]
        if info.get("operstate") != "UP":
            return False
        v6 = [a for a in info.get("addr_info", []) if a.get("family") == "inet6"]
        return bool(v6) and not any(a.get("tentative") for a in v6)


_NO_DAD = "echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad"


@pytest.fixture
def lab(netns: NetnsFactory) -> Lab:
    """srv (10.201.X.1, fd00:201::1) and cli (.2, ::2) on one veth link."""
    srv, cli = netns(), netns()
    suffix = srv[len(PREFIX) :]
    lab = Lab(
        netns=netns,
        srv=srv,
        cli=cli,
        srv_if=f"spat{suffix}s",
        cli_if=f"spat{suffix}c",
        subnet=random.randint(1, 254),
    )
    for ns in (srv, cli):
        # No duplicate address detection, link-local included: addresses are
        # usable at once instead of after a second or two of DAD.
        lab.run(ns, ["sh", "-c", _NO_DAD])
    subprocess.run(
        [
            "ip", "link", "add", lab.srv_if, "netns", srv, "type", "veth",
            "peer", "name", lab.cli_if, "netns", cli,
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    for ns, dev, v4, v6 in (
        (srv, lab.srv_if, lab.srv4, lab.srv6),
        (cli, lab.cli_if, lab.cli4, lab.cli6),
    ):
        lab.run(ns, ["ip", "addr", "add", f"{v4}/24", "dev", dev])
        lab.run(ns, ["ip", "-6", "addr", "add", f"{v6}/64", "dev", dev, "nodad"])
        lab.run(ns, ["ip", "link", "set", dev, "up"])
    lab.wait_ready()
    return lab


# spad deployments (tests/netns/spad.py) for every module in this folder
from tests.netns.spad import deploy  # noqa: E402, F401
