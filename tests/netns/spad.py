"""spad deployed in a lab: the pieces the namespace tests share.

``Deployment`` runs the installed ``spad`` in the lab's server namespace with
a credential made by ``spa keygen``; ``deploy`` is its fixture (made
available to every module here by conftest.py). The rest are small helpers:
an agent in a namespace, captures of what a namespace sends, static
neighbour entries so no ARP mixes into what is measured.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from spa import protocol as P
from spa.config import load_client_config

if TYPE_CHECKING:
    from tests.netns.conftest import Lab

BIN = Path(sys.executable).parent
SPA = str(BIN / "spa")
SPAD = str(BIN / "spad")
SPA_PORT = 62201
TABLE = "spa"

_AGENT_HELPERS = """
import socket, time
def wait_open(addr, port, limit):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        try:
            socket.create_connection((addr, port), 0.1).close()
            return time.monotonic() - t0
        except OSError:
            time.sleep(0.01)
    return None
def send_udp(addr, port, hexdata):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.sendto(bytes.fromhex(hexdata), (addr, port))
"""


@dataclass
class Deployment:
    """spad in the lab's server namespace, with one credential for alice."""

    lab: Lab
    root: Path
    interface: str
    open_max: int = 300
    proc: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server_cfg = self.root / "spad.toml"
        self.client_cfg = self.root / "alice.toml"
        self.state = self.root / "state"
        self.server_cfg.write_text(
            "[server]\n"
            f'interface = "{self.interface}"\n'
            f"port = {SPA_PORT}\n"
            'firewall = "nftables"\n'
            f'state_dir = "{self.state}"\n'
            'protected = ["tcp/22"]\n'
            f'nft_table = "{TABLE}"\n'
        )
        self.server_cfg.chmod(0o600)
        subprocess.run(
            [SPA, "keygen", "--name", "alice", "--allow", "tcp/22",
             "--max-open", str(self.open_max),
             "--server-config", str(self.server_cfg),
             "--client-config", str(self.client_cfg),
             "--server", str(self.lab.srv4)],
            check=True, capture_output=True,
        )  # fmt: skip
        client = load_client_config(self.client_cfg)
        self.cred_id, self.secret = client.id, client.secret

    # -- the daemon ------------------------------------------------------
    def start(self) -> None:
        log = self.root / f"spad-{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "wb") as out:
            self.proc = self.lab.popen(
                self.lab.srv, [SPAD, "--config", str(self.server_cfg), "-v"],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 15
        while b"spad listening" not in log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"spad did not start:\n{log.read_text()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        rc = self.proc.wait(15)
        self.proc = None
        return rc

    def log_text(self) -> str:
        return "".join(p.read_text() for p in self.logs)

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.state / "status.json").read_text())
        return data

    def wait_status(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        st: dict[str, Any] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError, ValueError):
                st = self.status()
                if st.get("pid") == (self.proc.pid if self.proc else None) and pred(
                    st
                ):
                    return st
            time.sleep(0.1)
        pytest.fail(f"status never matched; last: {st}\nlog:\n{self.log_text()}")

    # -- the firewall as the kernel has it -------------------------------
    def elements(self) -> list[tuple[str, str, int]]:
        """(address, proto, port) of every live grant, read with nft -j."""
        out: list[tuple[str, str, int]] = []
        for name in ("allow4", "allow6"):
            proc = self.lab.run(
                self.lab.srv, ["nft", "-j", "list", "set", "inet", TABLE, name],
                check=False,
            )  # fmt: skip
            if proc.returncode:
                continue
            for obj in json.loads(proc.stdout)["nftables"]:
                for elem in obj.get("set", {}).get("elem", []):
                    val = elem["elem"]["val"] if isinstance(elem, dict) else elem
                    addr, proto, port = val["concat"]
                    out.append((addr, proto, int(port)))
        return out

    def table_exists(self) -> bool:
        proc = self.lab.run(
            self.lab.srv, ["nft", "list", "table", "inet", TABLE], check=False
        )
        return proc.returncode == 0

    # -- the client side -------------------------------------------------
    def knock(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.lab.run(
            self.lab.cli, [SPA, "knock", "--config", str(self.client_cfg), *args]
        )

    def packet(self, dest: Any = None, **kw: Any) -> bytes:
        """A knock built in the test, for what spa knock cannot be made to do."""
        ts = kw.pop("timestamp_us", None)
        cred = kw.pop("cred_id", self.cred_id)
        secret = kw.pop("secret", self.secret)
        req = P.Request(
            ports=kw.pop("ports", (("tcp", 22),)),
            open_for=kw.pop("open_for", 30),
            destination=self.lab.srv4 if dest is None else dest,
            **kw,
        )
        return P.encode_packet(cred, secret, req, timestamp_us=ts)


@pytest.fixture
def deploy(lab: Lab, tmp_path: Path) -> Iterator[Callable[..., Deployment]]:
    made: list[Deployment] = []

    def make(interface: str | None = None, **kw: Any) -> Deployment:
        d = Deployment(lab, tmp_path, interface or lab.srv_if, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()


def agent(lab: Lab, ns: str) -> Any:
    py = lab.python(ns)
    py.exec(_AGENT_HELPERS)
    return py


@contextlib.contextmanager
def capture_out(lab: Lab, ns: str, path: Path) -> Iterator[None]:
    """Everything ``ns`` sends, on any interface, written to ``path``."""
    proc = lab.popen(
        ns, ["tcpdump", "-i", "any", "-Q", "out", "-n", "-U", "-w", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    wait_listening(proc)
    try:
        yield
    finally:
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        proc.wait(10)


def wait_listening(proc: subprocess.Popen[bytes]) -> None:
    """tcpdump says "listening on" once its capture is attached."""
    assert proc.stderr is not None
    lines = []
    for _ in range(5):
        lines.append(proc.stderr.readline())
        if b"listening on" in lines[-1]:
            return
    pytest.fail(f"tcpdump did not start: {lines}")


def _is_housekeeping(frame: bytes) -> bool:
    """IPv6 multicast listener reports and router solicitations.

    The kernel sends these on its own when links come up; they answer
    nothing. Everything else a server sends is counted as an answer.
    """
    # Linux cooked capture (v1 or v2, both 16/20 bytes) of "any"
    for hdr in (16, 20):
        ip = frame[hdr:]
        if len(ip) >= 48 and ip[0] >> 4 == 6 and ip[24] == 0xFF:
            nxt, off = ip[6], 40
            if nxt == 0:  # hop-by-hop (MLD carries router alert)
                nxt, off = ip[40], 40 + 8 * (ip[41] + 1)
            if nxt == 58 and len(ip) > off and ip[off] in (133, 143, 131, 132):
                return True
    return False


def _knock_verdicts(c: dict[str, int]) -> int:
    """Counters of packets that reached the protocol checks.

    Others (drop_transport) also count the kernel's own IPv6 multicast
    listener reports, which pass the filter's extension-header clause.
    """
    names = ("accepted", "drop_unknown_id", "drop_mac", "drop_stale",
             "drop_replay", "drop_version", "drop_length")  # fmt: skip
    return sum(c[n] for n in names)


def set_static_neighbours(lab: Lab) -> None:
    """No ARP or neighbour solicitation needed on the lab link."""

    def mac(ns: str, dev: str) -> str:
        out = lab.run(ns, ["ip", "-j", "link", "show", "dev", dev]).stdout
        return str(json.loads(out)[0]["address"])

    srv_mac, cli_mac = mac(lab.srv, lab.srv_if), mac(lab.cli, lab.cli_if)
    for ns, dev, peer_mac, addrs in (
        (lab.srv, lab.srv_if, cli_mac, (lab.cli4, lab.cli6)),
        (lab.cli, lab.cli_if, srv_mac, (lab.srv4, lab.srv6)),
    ):
        for a in addrs:
            lab.run(ns, ["ip", "neigh", "replace", str(a), "lladdr", peer_mac,
                         "dev", dev, "nud", "permanent"])  # fmt: skip


# --------------------------------------------------------------------------
