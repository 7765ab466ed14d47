"""The command line: help, keygen, knock, proxy, status and spad's start-up errors.

Knocks go to a UDP socket that the test binds on loopback; the datagram is
decoded with the pure-Python protocol module, so what ``spa knock`` sends is
checked field by field. Everything else uses documentation addresses.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import select
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from click import Command
from click.testing import CliRunner, Result

from spa import config as spacfg
from spa.cli import cli, spad
from spa.config import PortSpec
from spa.protocol import WIRE_LEN, Packet, decode_packet, server_id_digest
from tests.pcapfile import write_pcap

CRED_ID = bytes.fromhex("8f3a0c1d22e4b599")
SECRET = bytes(range(32))
BIN = Path(sys.executable).parent


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(autouse=True)
def _keep_root_logging() -> Iterator[None]:
    """spad configures the root logger; give it back as it was."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def assert_one_line_error(result: Result, code: int, *fragments: str) -> str:
    """Exit ``code``, nothing on stdout, exactly one line on stderr."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == ""
    return lines[0]


def write_client(path: Path, **kw: Any) -> Path:
    args: dict[str, Any] = {
        "name": "alice", "cred_id": CRED_ID, "secret": SECRET,
        "allow": (PortSpec("tcp", 22),), "open_for": 30,
    }
    args.update(kw)
    spacfg.write_client_config(path, **args)
    return path


@pytest.fixture
def client_cfg(tmp_path: Path) -> Path:
    return write_client(tmp_path / "alice.toml")


@pytest.fixture
def server_cfg(tmp_path: Path) -> Path:
    path = tmp_path / "spad.toml"
    path.write_text('[server]\nfirewall = "none"\nstate_dir = "state"\n')
    path.chmod(0o600)
    return path


def udp_socket(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.bind((host, 0))
    except OSError as e:
        pytest.skip(f"cannot bind UDP on {host}: {e.strerror}")
    sock.settimeout(5.0)
    return sock


@pytest.fixture
def udp4() -> Iterator[socket.socket]:
    with udp_socket("127.0.0.1") as sock:
        yield sock


@pytest.fixture
def udp6() -> Iterator[socket.socket]:
    with udp_socket("::1") as sock:
        yield sock


def receive_one(sock: socket.socket) -> Packet:
    """The knock that arrived, decoded; and no second datagram behind it."""
    data = sock.recv(2048)
    assert len(data) == WIRE_LEN
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(2048)
    return decode_packet(data, SECRET)


# -- help ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "args", "fragments"),
    [
        pytest.param(cli, ["--help"],
                     ["keygen", "knock", "proxy", "status", "--version"],
                     id="spa --help"),
        pytest.param(cli, ["-h"], ["keygen", "knock"], id="spa -h"),
        pytest.param(cli, ["knock", "--help"],
                     ["HOST", "--access", "--source", "--config", "--port",
                      "--open-for", "--server-id", "-4", "-6", "no answer"],
                     id="spa knock --help"),
        pytest.param(cli, ["keygen", "--help"],
                     ["--name", "--allow", "--server-config", "--client-config",
                      "--server-id", "--max-open", "--allow-other-address"],
                     id="spa keygen --help"),
        pytest.param(cli, ["proxy", "--help"],
                     ["HOST PORT", "ProxyCommand", "--config", "--port",
                      "--connect-timeout"],
                     id="spa proxy --help"),
        pytest.param(cli, ["status", "--help"],
                     ["--state-dir", "-c, --config", "--json", "3 if it is not"],
                     id="spa status --help"),
        pytest.param(spad, ["--help"],
                     ["--config", "--interface", "--port", "--firewall",
                      "[nftables|none]", "--state-dir", "--pcap-file", "--json",
                      "/etc/spa/spad.toml"],
                     id="spad --help"),
    ],
)
def test_help_reads_well(
    runner: CliRunner, recwarn: pytest.WarningsRecorder, command: Command,
    args: list[str], fragments: list[str],
) -> None:
    result = runner.invoke(command, args)
    assert result.exit_code == 0
    assert result.stderr == ""
    assert result.stdout.startswith("Usage: ")
    for fragment in fragments:
        assert fragment in result.stdout
    # a parameter name used twice makes click warn and lose one of the values
    assert [str(w.message) for w in recwarn] == []


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--version"], prog_name="spa")
    assert result.exit_code == 0
    assert re.fullmatch(r"spa, version \d+\.\d+\.\d+\S*\n", result.stdout)


# -- keygen --------------------------------------------------------------------


def test_keygen_writes_both_configs(runner: CliRunner, tmp_path: Path) -> None:
    server, client = tmp_path / "spad.toml", tmp_path / "alice.toml"
    result = runner.invoke(cli, [
        "keygen", "--name", "alice", "--allow", "tcp/22,udp/53",
        "--server-config", str(server), "--client-config", str(client),
        "--max-open", "120", "--open-for", "45",
    ])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert str(server) in result.stderr and str(client) in result.stderr
    for path in (server, client):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    scfg = spacfg.load_server_config(server)
    ccfg = spacfg.load_client_config(client)
    (cred,) = scfg.credentials
    allow = (PortSpec("tcp", 22), PortSpec("udp", 53))
    assert (cred.name, cred.allow, cred.max_open) == ("alice", allow, 120)
    assert (ccfg.name, ccfg.allow, ccfg.open_for) == ("alice", allow, 45)
    assert cred.id == ccfg.id and len(cred.id) == 8
    assert cred.secret == ccfg.secret and len(cred.secret) == 32
    assert not cred.allow_other_address


def test_keygen_appends_to_an_existing_server_config(
    runner: CliRunner, tmp_path: Path
) -> None:
    server = tmp_path / "spad.toml"
    for name in ("alice", "bob"):
        result = runner.invoke(cli, [
            "keygen", "--name", name, "--server-config", str(server),
            "--client-config", str(tmp_path / f"{name}.toml"),
        ])
        assert result.exit_code == 0, result.output
    creds = spacfg.load_server_config(server).credentials
    assert [c.name for c in creds] == ["alice", "bob"]
    assert creds[0].id != creds[1].id and creds[0].secret != creds[1].secret
    assert spacfg.load_client_config(tmp_path / "bob.toml").id == creds[1].id


@pytest.mark.parametrize(
    ("second_client", "fragments"),
    [
        ("alice2.toml", ['"alice" already exists']),          # same name
        ("alice.toml", ["alice.toml", "already exists"]),     # client file exists
        ("missing/bob.toml", ["missing/bob.toml", "no directory"]),
    ],
)
def test_keygen_refusal_leaves_the_server_config_alone(
    runner: CliRunner, tmp_path: Path, second_client: str, fragments: list[str]
) -> None:
    server = tmp_path / "spad.toml"
    first = runner.invoke(cli, [
        "keygen", "--name", "alice", "--server-config", str(server),
        "--client-config", str(tmp_path / "alice.toml"),
    ])
    assert first.exit_code == 0, first.output
    before = server.read_bytes(), (tmp_path / "alice.toml").read_bytes()
    name = "alice" if second_client == "alice2.toml" else "bob"
    result = runner.invoke(cli, [
        "keygen", "--name", name, "--server-config", str(server),
        "--client-config", str(tmp_path / second_client),
    ])
    assert_one_line_error(result, 1, *fragments)
    assert (server.read_bytes(), (tmp_path / "alice.toml").read_bytes()) == before
    assert not (tmp_path / "alice2.toml").exists()


@pytest.fixture
def routes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for /proc/net/route, written by each test."""
    path = tmp_path / "route"
    monkeypatch.setattr(spacfg, "ROUTE_TABLE", path)
    return path


ROUTE_HEADER = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask"
    "\t\tMTU\tWindow\tIRTT\n"
)


def route(iface: str, dest: str, mask: str, flags: str = "0003",
          metric: int = 0) -> str:
    return (f"{iface}\t{dest}\t0102A8C0\t{flags}\t0\t0\t{metric}\t{mask}"
            "\t0\t0\t0\n")


def test_keygen_creates_the_missing_directory(
    runner: CliRunner, tmp_path: Path, routes: Path
) -> None:
    routes.write_text(ROUTE_HEADER + route("ens3", "00000000", "00000000"))
    server = tmp_path / "etc" / "spa" / "spad.toml"
    result = runner.invoke(cli, ["keygen", "--name", "alice",
                                 "--server-config", str(server)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(server.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(server.stat().st_mode) == 0o600
    assert f"created directory {server.parent} (mode 0700)" in result.stderr
    assert [c.name for c in spacfg.load_server_config(server).credentials] == [
        "alice"
    ]


def test_keygen_leaves_no_directory_behind_when_it_fails(
    runner: CliRunner, tmp_path: Path, routes: Path
) -> None:
    server = tmp_path / "missing" / "spad.toml"
    result = runner.invoke(cli, ["keygen", "--name", "alice", "--source", "10.0.0.1/8",
                                 "--server-config", str(server)])
    assert_one_line_error(result, 1, str(server), "sources")
    assert not server.parent.exists()


@pytest.mark.parametrize(
    ("table", "interface"),
    [
        pytest.param(route("ens3", "00000000", "00000000"), "ens3", id="default"),
        pytest.param(route("wg0", "0000000A", "000000FF")
                     + route("eth1", "00000000", "00000000", metric=600)
                     + route("eth0", "00000000", "00000000", metric=100)
                     + route("eth9", "00000000", "00000000", flags="0002"),
                     "eth0", id="lowest-metric-up"),
        pytest.param(route("wg0", "0000000A", "000000FF"), None, id="no-default"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="no-file"),
    ],
)
def test_keygen_names_the_default_route_interface_in_a_new_server_config(
    runner: CliRunner, tmp_path: Path, routes: Path, table: str | None,
    interface: str | None,
) -> None:
    if table is not None:
        routes.write_text(ROUTE_HEADER + table)
    server = tmp_path / "spad.toml"
    result = runner.invoke(cli, ["keygen", "--name", "alice",
                                 "--server-config", str(server)])
    assert result.exit_code == 0, result.output
    assert spacfg.load_server_config(server).interface == interface
    if interface:
        assert f'interface = "{interface}" (the default route\'s)' in result.stderr
        assert f'\ninterface = "{interface}"  # ' in server.read_text()
    else:
        assert "no default route" in result.stderr
        assert '\n# interface = "eth0"' in server.read_text()


def test_keygen_keeps_the_interface_of_an_existing_server_config(
    runner: CliRunner, tmp_path: Path, routes: Path, server_cfg: Path
) -> None:
    routes.write_text(ROUTE_HEADER + route("ens3", "00000000", "00000000"))
    result = runner.invoke(cli, ["keygen", "--name", "alice",
                                 "--server-config", str(server_cfg)])
    assert result.exit_code == 0, result.output
    assert "default route" not in result.stderr
    assert spacfg.load_server_config(server_cfg).interface is None


def test_keygen_adds_the_server_id_to_the_server_config(
    runner: CliRunner, tmp_path: Path, routes: Path
) -> None:
    server = tmp_path / "spad.toml"
    for name, server_id, said in (("alice", "Bastion.Example", True),
                                  ("bob", "bastion.example", False),
                                  ("carol", "jump.example", True),
                                  ("dave", None, False)):
        args = ["--server-id", server_id] if server_id else []
        result = runner.invoke(cli, [
            "keygen", "--name", name, "--server-config", str(server),
            "--client-config", str(tmp_path / f"{name}.toml"), *args,
        ])
        assert result.exit_code == 0, result.output
        assert ("to server_ids in" in result.stderr) is said, result.stderr
    cfg = spacfg.load_server_config(server)
    assert cfg.server_ids == ("bastion.example", "jump.example")
    client = spacfg.load_client_config(tmp_path / "alice.toml")
    assert client.server_id == "bastion.example"


def test_keygen_adds_server_ids_beside_existing_ones(
    runner: CliRunner, server_cfg: Path
) -> None:
    server_cfg.write_text(server_cfg.read_text() + 'server_ids = ["a.example"]\n')
    result = runner.invoke(cli, ["keygen", "--name", "alice", "--server-id",
                                 "b.example", "--server-config", str(server_cfg)])
    assert result.exit_code == 0, result.output
    assert spacfg.load_server_config(server_cfg).server_ids == (
        "a.example", "b.example"
    )


def test_keygen_without_files_prints_a_client_config(
    runner: CliRunner, tmp_path: Path
) -> None:
    result = runner.invoke(cli, ["keygen", "--name", "carol", "--allow", "udp/53",
                                 "--server", "bastion.example"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    path = tmp_path / "carol.toml"
    path.write_text(result.stdout)
    path.chmod(0o600)
    cfg = spacfg.load_client_config(path)
    assert (cfg.name, cfg.allow, cfg.server) == (
        "carol", (PortSpec("udp", 53),), "bastion.example"
    )
    assert len(cfg.id) == 8 and len(cfg.secret) == 32


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["--name", "bad name"], 1, "name"),
        (["--name", "alice", "--allow", "tcp/0"], 2, "--allow"),
        (["--name", "alice", "--max-open", "0"], 2, "--max-open"),
        (["--allow", "tcp/22"], 2, "--name"),
    ],
)
def test_keygen_bad_input(
    runner: CliRunner, args: list[str], code: int, fragment: str
) -> None:
    assert_one_line_error(runner.invoke(cli, ["keygen", *args]), code, fragment)


# -- knock ---------------------------------------------------------------------

LOOP4 = ipaddress.IPv4Address("127.0.0.1")


@pytest.mark.parametrize(
    ("extra", "ports", "open_for", "allow", "destination"),
    [
        ([], (("tcp", 22),), 30, None, LOOP4),
        (["-A", "tcp/443,udp/53", "--open-for", "90"],
         (("tcp", 443), ("udp", 53)), 90, None, LOOP4),
        (["-s", "127.0.0.5"], (("tcp", 22),), 30,
         ipaddress.IPv4Address("127.0.0.5"), LOOP4),
        (["-s", "packet"], (("tcp", 22),), 30, None, LOOP4),
        (["--server-id", "Foo"], (("tcp", 22),), 30, None, server_id_digest("foo")),
        (["-4"], (("tcp", 22),), 30, None, LOOP4),
    ],
)
def test_knock_sends_one_packet(
    runner: CliRunner, client_cfg: Path, udp4: socket.socket, extra: list[str],
    ports: tuple[tuple[str, int], ...], open_for: int,
    allow: ipaddress.IPv4Address | None, destination: object,
) -> None:
    port = udp4.getsockname()[1]
    before = time.time_ns() // 1000
    result = runner.invoke(cli, ["knock", "--config", str(client_cfg),
                                 "--port", str(port), "127.0.0.1", *extra])
    assert result.exit_code == 0, result.output
    assert result.output == ""
    pkt = receive_one(udp4)
    assert pkt.cred_id == CRED_ID
    assert before <= pkt.timestamp_us <= time.time_ns() // 1000
    req = pkt.request
    assert (req.ports, req.open_for, req.allow) == (ports, open_for, allow)
    assert req.destination == destination
    assert req.forward is None


def test_knock_ipv6(runner: CliRunner, client_cfg: Path, udp6: socket.socket) -> None:
    port = udp6.getsockname()[1]
    result = runner.invoke(cli, ["knock", "--config", str(client_cfg), "-6",
                                 "--port", str(port), "::1", "-A", "udp/53"])
    assert result.exit_code == 0, result.output
    req = receive_one(udp6).request
    assert req.destination == ipaddress.IPv6Address("::1")
    assert (req.ports, req.allow) == ((("udp", 53),), None)


def test_knock_takes_host_port_and_server_id_from_the_config(
    runner: CliRunner, tmp_path: Path, udp4: socket.socket
) -> None:
    cfg = write_client(tmp_path / "c.toml", server="127.0.0.1",
                       port=udp4.getsockname()[1], server_id="Bastion.Example",
                       allow=(PortSpec("tcp", 2222),), open_for=600)
    result = runner.invoke(cli, ["knock", "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    req = receive_one(udp4).request
    assert req.destination == server_id_digest("bastion.example")
    assert (req.ports, req.open_for) == ((("tcp", 2222),), 600)


def test_knock_reads_spa_config_from_the_environment(
    runner: CliRunner, client_cfg: Path, udp4: socket.socket
) -> None:
    port = udp4.getsockname()[1]
    result = runner.invoke(cli, ["knock", "--port", str(port), "127.0.0.1"],
                           env={"SPA_CONFIG": str(client_cfg)})
    assert result.exit_code == 0, result.output
    assert receive_one(udp4).cred_id == CRED_ID


@pytest.mark.parametrize(
    ("args", "code", "fragments"),
    [
        (["-A", "tcp/99999", "192.0.2.1"], 2, ["--access", "tcp/99999"]),
        (["-A", "icmp/1", "192.0.2.1"], 2, ["--access"]),
        (["--source", "notanip", "192.0.2.1"], 2, ["--source", "notanip"]),
        (["--port", "0", "192.0.2.1"], 2, ["--port"]),
        (["--open-for", "86401", "192.0.2.1"], 2, ["--open-for"]),
        ([], 2, ["no HOST"]),
        (["nonexistent.invalid"], 1, ["nonexistent.invalid"]),
        (["-6", "192.0.2.1"], 2,
         ["-6 given but 192.0.2.1 is an IPv4 address", "family does not match"]),
        (["-4", "2001:db8::1"], 2,
         ["-4 given but 2001:db8::1 is an IPv6 address", "family does not match"]),
        (["-4", "fe80::1%eth0"], 2, ["IPv6 address", "family does not match"]),
    ],
)
def test_knock_errors(
    runner: CliRunner, client_cfg: Path, args: list[str], code: int,
    fragments: list[str],
) -> None:
    result = runner.invoke(cli, ["knock", "--config", str(client_cfg), *args])
    assert_one_line_error(result, code, *fragments)


def test_knock_missing_config(runner: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    result = runner.invoke(cli, ["knock", "--config", str(missing), "192.0.2.1"])
    assert_one_line_error(result, 1, str(missing))


def test_knock_refuses_a_readable_config(
    runner: CliRunner, client_cfg: Path
) -> None:
    client_cfg.chmod(0o644)
    result = runner.invoke(cli, ["knock", "--config", str(client_cfg), "192.0.2.1"])
    assert_one_line_error(result, 1, str(client_cfg), "chmod 600")


# -- proxy ---------------------------------------------------------------------


def _echo_once(srv: socket.socket) -> None:
    conn, _ = srv.accept()
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def _write_all(stream: IO[bytes], data: bytes) -> None:
    stream.write(data)
    stream.flush()


def _read_exactly(fd: int, n: int, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    out = b""
    while len(out) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"read {len(out)} of {n} bytes"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, n - len(out))
            assert chunk, f"EOF after {len(out)} of {n} bytes"
            out += chunk
    return out


def test_proxy_knocks_then_relays(
    tmp_path: Path, client_cfg: Path, udp4: socket.socket
) -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    tcp_port = srv.getsockname()[1]
    echo = threading.Thread(target=_echo_once, args=(srv,), daemon=True)
    echo.start()
    payload = b"SSH-2.0-test\r\n" + os.urandom(100_000)
    proc = subprocess.Popen(
        [str(BIN / "spa"), "proxy", "--config", str(client_cfg),
         "--port", str(udp4.getsockname()[1]), "127.0.0.1", str(tcp_port)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert proc.stdin and proc.stdout and proc.stderr
    try:
        writer = threading.Thread(target=_write_all, args=(proc.stdin, payload))
        writer.start()
        echoed = _read_exactly(proc.stdout.fileno(), len(payload), 10.0)
        writer.join(10.0)
        proc.stdin.close()
        assert proc.wait(10.0) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        srv.close()
    assert echoed == payload
    assert proc.stdout.read() == b""
    assert proc.stderr.read() == b""
    echo.join(5.0)
    assert not echo.is_alive()
    req = receive_one(udp4).request
    assert req.ports == (("tcp", tcp_port),)
    assert req.destination == LOOP4


def test_proxy_connect_failure(
    runner: CliRunner, client_cfg: Path, udp4: socket.socket
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        closed_port = s.getsockname()[1]
    result = runner.invoke(cli, [
        "proxy", "--config", str(client_cfg), "--connect-timeout", "0.3",
        "--port", str(udp4.getsockname()[1]), "127.0.0.1", str(closed_port),
    ])
    assert_one_line_error(result, 1, "cannot connect", f"tcp/{closed_port}")
    assert receive_one(udp4).request.ports == (("tcp", closed_port),)


# -- status --------------------------------------------------------------------


def status_doc(pid: int, now: float) -> dict[str, Any]:
    return {
        "pid": pid, "running": True, "started": now - 100.0, "updated": now - 1.0,
        "interface": "eth0", "port": 62201, "firewall": "nftables",
        "counters": {"accepted": 3, "drop_mac": 7, "drop_replay": 2,
                     "drop_length": 0},
        "pcap": {"received": 12, "dropped": 0, "if_dropped": 0},
        "outcomes": {"granted": 2, "refused": 1},
        "grants": [
            {"address": "192.0.2.10", "proto": "tcp", "port": 22,
             "expires": now + 120.0},
            {"address": "2001:db8::10", "proto": "udp", "port": 53,
             "expires": now + 30.0},
            {"address": "192.0.2.99", "proto": "tcp", "port": 22,
             "expires": now - 5.0},
        ],
    }


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d


def test_status_shows_grants_and_counters(
    runner: CliRunner, state_dir: Path
) -> None:
    (state_dir / "status.json").write_text(
        json.dumps(status_doc(os.getpid(), time.time()))
    )
    result = runner.invoke(cli, ["status", "--state-dir", str(state_dir)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"spad running (pid {os.getpid()})" in out
    assert "eth0 udp/62201, firewall nftables" in out
    assert "grants: 2" in out
    assert "192.0.2.99" not in out
    lefts = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^\s+(\S+)\s+\S+\s+([\d.]+)s left$", out, re.M)
    }
    assert lefts.keys() == {"192.0.2.10", "2001:db8::10"}
    assert 110.0 < lefts["192.0.2.10"] <= 120.0
    assert 20.0 < lefts["2001:db8::10"] <= 30.0
    assert re.search(r"192\.0\.2\.10\s+tcp/22\b", out)
    assert re.search(r"2001:db8::10\s+udp/53\b", out)
    assert "accepted: 3  granted=2  refused=1" in out
    assert "dropped: mac=7, replay=2\n" in out
    assert "kernel: received=12 dropped=0 if_dropped=0" in out


def test_status_json(runner: CliRunner, state_dir: Path) -> None:
    doc = status_doc(os.getpid(), time.time())
    (state_dir / "status.json").write_text(json.dumps(doc))
    result = runner.invoke(cli, ["status", "--state-dir", str(state_dir), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {**doc, "alive": True}


def test_status_of_a_dead_daemon(runner: CliRunner, state_dir: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    (state_dir / "status.json").write_text(
        json.dumps(status_doc(child.pid, time.time()))
    )
    result = runner.invoke(cli, ["status", "--state-dir", str(state_dir)])
    assert result.exit_code == 3, result.output
    assert result.stdout.startswith(f"spad not running (pid {child.pid})")
    as_json = runner.invoke(cli, ["status", "--state-dir", str(state_dir), "--json"])
    assert as_json.exit_code == 3
    assert json.loads(as_json.stdout)["alive"] is False


def test_status_of_a_daemon_that_stopped(runner: CliRunner, state_dir: Path) -> None:
    doc = {**status_doc(os.getpid(), time.time()), "running": False}
    (state_dir / "status.json").write_text(json.dumps(doc))
    result = runner.invoke(cli, ["status", "--state-dir", str(state_dir)])
    assert result.exit_code == 3, result.output
    assert result.stdout.startswith("spad not running")


def test_status_takes_the_state_dir_from_the_config(
    runner: CliRunner, server_cfg: Path
) -> None:
    state = server_cfg.parent / "state"
    state.mkdir()
    (state / "status.json").write_text(json.dumps(status_doc(os.getpid(), time.time())))
    for option in ("--config", "-c"):
        result = runner.invoke(cli, ["status", option, str(server_cfg)])
        assert result.exit_code == 0, result.output
        assert "grants: 2" in result.stdout


def test_status_without_a_status_file(runner: CliRunner, state_dir: Path) -> None:
    result = runner.invoke(cli, ["status", "--state-dir", str(state_dir)])
    assert_one_line_error(
        result, 3, str(state_dir / "status.json"), "no status file", "not running"
    )


def test_status_with_a_corrupt_status_file(
    runner: CliRunner, state_dir: Path
) -> None:
    (state_dir / "status.json").write_text('{"pid": 1, "grants": [')
    result = runner.invoke(cli, ["status", "--state-dir", str(state_dir)])
    assert_one_line_error(result, 1, str(state_dir / "status.json"))


# -- spad ----------------------------------------------------------------------


def test_spad_missing_config(runner: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "spad.toml"
    result = runner.invoke(spad, ["--config", str(missing)])
    assert_one_line_error(result, 1, str(missing))


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ('[server]\nport = 62201\nfirewall = "none\n', ["line 3", "invalid TOML"]),
        ("[server]\n\nport = \n", ["line 3", "invalid TOML"]),
        ("[server]\nprot = 1\n", ["server.prot", "unknown key"]),
        ("[server]\nport = 70000\n", ["server.port", "1..65535"]),
        ('[server]\nfirewall = "iptables"\n', ["server.firewall", "iptables"]),
    ],
)
def test_spad_bad_config(
    runner: CliRunner, tmp_path: Path, text: str, fragments: list[str]
) -> None:
    path = tmp_path / "spad.toml"
    path.write_text(text)
    path.chmod(0o600)
    result = runner.invoke(spad, ["--config", str(path)])
    assert_one_line_error(result, 1, str(path), *fragments)


@pytest.mark.parametrize(
    ("args", "code", "fragments"),
    [
        (["--firewall", "iptables"], 2, ["--firewall", "'iptables' is not one of"]),
        (["--firewall", "pf"], 2, ["--firewall", "pf"]),
        (["--json"], 2, ["--json only applies to --pcap-file"]),
        (["--clock", "pcap"], 2, ["--clock pcap only applies to --pcap-file"]),
        (["--clock", "pcap", "--json", "-i", "lo"], 2, ["--json", "--pcap-file"]),
        (["--pcap-file", "/nonexistent"], 1, ["/nonexistent"]),
        (["--port", "0"], 2, ["--port"]),
        (["--clock", "sundial"], 2, ["--clock"]),
    ],
)
def test_spad_option_errors(
    runner: CliRunner, server_cfg: Path, args: list[str], code: int,
    fragments: list[str],
) -> None:
    result = runner.invoke(spad, ["--config", str(server_cfg), *args])
    assert_one_line_error(result, code, *fragments)
    assert not (server_cfg.parent / "state").exists()


def test_spad_refuses_a_state_dir_in_use(runner: CliRunner, server_cfg: Path) -> None:
    """Another spad holds the lock: refused before the capture or firewall."""
    state = server_cfg.parent / "state"
    state.mkdir(mode=0o700)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(state / "spad.lock")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        # (an interface that does not exist: the lock is checked before it)
        result = runner.invoke(spad, ["--config", str(server_cfg), "-i", "nosuch0"])
        assert_one_line_error(
            result, 1, f"{state} is in use by another spad (pid {holder.pid})"
        )
        assert not (state / "status.json").exists()
        assert not (state / "replay.log").exists()
        # a capture file is read without taking the lock
        pcap = server_cfg.parent / "empty.pcap"
        write_pcap(pcap, 1, [])
        offline = runner.invoke(spad, ["--config", str(server_cfg), "--pcap-file",
                                       str(pcap), "--state-dir", str(state)])
        assert offline.exit_code == 0, offline.output
    finally:
        holder.kill()
        holder.wait()


_HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.write(fd, b"%d\\n" % os.getpid())
print("locked", flush=True)
time.sleep(60)
"""
