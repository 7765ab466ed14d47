"""spa.config: every mistake is one line naming file, key and expectation."""

from __future__ import annotations

import base64
import ipaddress
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from spa.config import (
    ClientConfig,
    ConfigError,
    PortSpec,
    ServerConfig,
    add_credential_to_server_config,
    load_client_config,
    load_server_config,
    new_credential_id,
    new_secret,
    parse_port_list,
    render_client_config,
    write_client_config,
    write_secret_file,
)

SECRET = bytes(range(32))
SECRET_B64 = base64.b64encode(SECRET).decode()
SHORT_B64 = base64.b64encode(bytes(31)).decode()

ALICE = f"""
[[credential]]
name = "alice"
id = "8f3a0c1d22e4b599"
secret = "{SECRET_B64}"
allow = ["tcp/22", "udp/53"]
"""

SERVER = f"""\
# bastion config
[server]
interface = "eth0"          # capture interface
port = 62201
firewall = "nftables"
state_dir = "/var/lib/spa"
window = 60
server_ids = ["Bastion.Example"]
addresses = ["192.0.2.7", "2001:db8::7"]
protected = ["tcp/22", "TCP/2222"]
on_exit = "keep"
replay_capacity = 65536
nft_table = "spa"
{ALICE}
[[credential]]
name = "bob@example"
id = "0123456789ABCDEF"
secret = "{SECRET_B64}"
allow = ["tcp/22"]
sources = ["192.0.2.0/24", "2001:db8::/32"]
max_open = 600
allow_other_address = true
"""

SEVENTEEN_PORTS = "[" + ", ".join(f'"tcp/{p}"' for p in range(1, 18)) + "]"

CLIENT = f"""\
[client]
name = "alice"
id = "8f3a0c1d22e4b599"
secret = "{SECRET_B64}"
server = "bastion.example"
port = 62202
server_id = "Bastion.Example"
allow = ["tcp/22"]
open_for = 45
"""


def write(path: Path, text: str | bytes, mode: int = 0o600) -> Path:
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)
    path.chmod(mode)
    return path


@pytest.fixture
def cfg_path(tmp_path: Path) -> Path:
    return tmp_path / "spad.toml"


# -- good files ---------------------------------------------------------------


def test_server_config_example(cfg_path: Path) -> None:
    cfg = load_server_config(write(cfg_path, SERVER))

    assert cfg == ServerConfig(
        path=cfg_path,
        interface="eth0",
        port=62201,
        firewall="nftables",
        state_dir=Path("/var/lib/spa"),
        window=60,
        server_ids=("bastion.example",),
        addresses=(
            ipaddress.IPv4Address("192.0.2.7"),
            ipaddress.IPv6Address("2001:db8::7"),
        ),
        protected=(PortSpec("tcp", 22), PortSpec("tcp", 2222)),
        on_exit="keep",
        replay_capacity=65536,
        nft_table="spa",
        credentials=cfg.credentials,
    )
    alice, bob = cfg.credentials
    assert alice.name == "alice"
    assert alice.id == bytes.fromhex("8f3a0c1d22e4b599")
    assert alice.secret == SECRET
    assert alice.allow == (PortSpec("tcp", 22), PortSpec("udp", 53))
    assert [str(n) for n in alice.sources] == ["0.0.0.0/0", "::/0"]
    assert (alice.max_open, alice.allow_other_address) == (300, False)
    assert bob.id == bytes.fromhex("0123456789abcdef")
    assert [str(n) for n in bob.sources] == ["192.0.2.0/24", "2001:db8::/32"]
    assert (bob.max_open, bob.allow_other_address) == (600, True)
    assert SECRET_B64 not in repr(cfg), "secrets stay out of reprs"


def test_server_defaults(cfg_path: Path) -> None:
    cfg = load_server_config(write(cfg_path, "", 0o644))

    assert cfg == ServerConfig(path=cfg_path)
    assert cfg.interface is None
    assert cfg.protected == (PortSpec("tcp", 22),)
    assert cfg.credentials == ()


def test_relative_paths_follow_the_config_file(tmp_path: Path) -> None:
    write(tmp_path / "alice.key", SECRET_B64 + "\n")
    cfg = load_server_config(
        write(
            tmp_path / "spad.toml",
            '[server]\nstate_dir = "state"\n'
            '[[credential]]\nname = "a"\nid = "0000000000000001"\n'
            'secret_file = "alice.key"\nallow = ["tcp/22"]\n',
            0o644,
        )
    )
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.credentials[0].secret == SECRET
    assert cfg.credentials[0].secret_file == tmp_path / "alice.key"


def test_client_config_example(tmp_path: Path) -> None:
    path = write(tmp_path / "alice.toml", CLIENT)

    assert load_client_config(path) == ClientConfig(
        path=path,
        name="alice",
        id=bytes.fromhex("8f3a0c1d22e4b599"),
        secret=SECRET,
        server="bastion.example",
        port=62202,
        server_id="bastion.example",
        allow=(PortSpec("tcp", 22),),
        open_for=45,
    )


# -- bad server files ---------------------------------------------------------

CRED = f'name = "alice"\nid = "8f3a0c1d22e4b599"\nsecret = "{SECRET_B64}"\n'

SERVER_KEYS = (
    "addresses, firewall, interface, nft_table, on_exit, port, protected, "
    "replay_capacity, server_ids, state_dir, window"
)
CRED_KEYS = (
    "allow, allow_other_address, id, max_open, name, secret, secret_file, sources"
)
SECRET_EXPECT = (
    'expected base64 of 32 bytes (44 characters, as written by "spa keygen")'
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nport = 99999",
         "server.port: expected an integer 1..65535, got 99999"),
        ('[server]\nport = "62201"',
         'server.port: expected an integer 1..65535, got "62201" (a string)'),
        ("[server]\nport = true",
         "server.port: expected an integer 1..65535, got true (a boolean)"),
        ("[server]\nport = 22.5",
         "server.port: expected an integer 1..65535, got 22.5 (a float)"),
        ('[server]\nfirewall = "iptables"',
         'server.firewall: the "iptables" backend is not available yet; '
         'expected "nftables" or "none"'),
        ('[server]\nfirewall = "pf"',
         'server.firewall: expected "nftables" or "none", got "pf"'),
        ("[server]\nwindow = 0", "server.window: expected an integer 1..3600, got 0"),
        ("[server]\nwindow = 3601",
         "server.window: expected an integer 1..3600, got 3601"),
        ('[server]\non_exit = "drop"',
         'server.on_exit: expected "flush" or "keep", got "drop"'),
        ("[server]\nreplay_capacity = 1023",
         "server.replay_capacity: expected an integer 1024..16777216, got 1023"),
        ('[server]\nnft_table = "spa-1"',
         "server.nft_table: expected a table name of 1..32 letters, digits or _, "
         'got "spa-1"'),
        ('[server]\ninterface = "eth 0"',
         'server.interface: expected an interface name such as "eth0", got "eth 0"'),
        ('[server]\ninterface = "sixteen-chars-xx"',
         'server.interface: expected an interface name such as "eth0", '
         'got "sixteen-chars-xx"'),
        ('[server]\nstate_dir = ""',
         'server.state_dir: expected a directory path, got ""'),
        ('[server]\naddresses = ["192.0.2.300"]',
         'server.addresses[0]: expected an IPv4 or IPv6 address, got "192.0.2.300"'),
        ('[server]\naddresses = "192.0.2.1"',
         'server.addresses: expected an array of IP addresses, got "192.0.2.1"'),
        ('[server]\nserver_ids = ["a b"]',
         "server.server_ids[0]: expected a server name (1..253 characters, no "
         'blanks), got "a b"'),
        ('[server]\nprotected = ["tcp/22", "tcp/0"]',
         'server.protected[1]: expected "tcp/PORT" or "udp/PORT", got "tcp/0"'),
        ('[server]\nprotected = ["icmp/8"]',
         'server.protected[0]: expected "tcp/PORT" or "udp/PORT", got "icmp/8"'),
        ("[server]\nprotected = [22]",
         'server.protected[0]: expected "tcp/PORT" or "udp/PORT", got 22'),
        ('[server]\nprotected = "tcp/22"',
         'server.protected: expected an array of "tcp/PORT" or "udp/PORT" strings, '
         'got "tcp/22"'),
        ("[server]\nprot = 1",
         f"server.prot: unknown key; expected one of: {SERVER_KEYS}"),
        ("[server.extra]\na = 1",
         f"server.extra: unknown table; expected one of: {SERVER_KEYS}"),
        ("[servre]\nport = 1",
         "servre: unknown table; expected one of: credential, server"),
        ("port = 1", "port: unknown key; expected one of: credential, server"),
        ("server = 5", "server: expected a table, got 5"),
        (f"[credential]\n{CRED}allow = ['tcp/22']",
         "credential: expected an array of tables ([[credential]]), got a table"),
        (f"{ALICE}\n[[credential]]\nname = \"bob\"\nid = \"0000000000000002\"\n"
         f"secret = \"{SECRET_B64}\"\nallow = [\"tcp/22\", \"tcp/99999\"]",
         'credential[1].allow[1]: expected "tcp/PORT" or "udp/PORT", got "tcp/99999"'),
        (f"[[credential]]\n{CRED}",
         'credential[0].allow: expected a non-empty array of "tcp/PORT" or '
         '"udp/PORT" strings, but the key is missing'),
        (f"[[credential]]\n{CRED}allow = []",
         'credential[0].allow: expected a non-empty array of "tcp/PORT" or '
         '"udp/PORT" strings, got an empty array'),
        (f"[[credential]]\n{CRED}allow = ['tcp/22']\nsources = ['192.0.2.1/24']",
         "credential[0].sources[0]: expected a range with no host bits set (did you "
         'mean "192.0.2.0/24"?), got "192.0.2.1/24"'),
        (f"[[credential]]\n{CRED}allow = ['tcp/22']\nsources = ['2001:db8::/129']",
         'credential[0].sources[0]: expected an address range such as '
         '"192.0.2.0/24", got "2001:db8::/129"'),
        (f"[[credential]]\n{CRED}allow = ['tcp/22']\nsources = []",
         "credential[0].sources: expected a non-empty array of address ranges, "
         "got an empty array"),
        (f"[[credential]]\n{CRED}allow = ['tcp/22']\nmax_open = 0",
         "credential[0].max_open: expected an integer 1..86400, got 0"),
        (f"[[credential]]\n{CRED}allow = ['tcp/22']\nmax_open = 86401",
         "credential[0].max_open: expected an integer 1..86400, got 86401"),
        (f"[[credential]]\n{CRED}allow = ['tcp/22']\nallow_other_address = 'yes'",
         'credential[0].allow_other_address: expected true or false, got "yes"'),
        (f"[[credential]]\n{CRED}allow = ['tcp/22']\ndefault_open = 30",
         f"credential[0].default_open: unknown key; expected one of: {CRED_KEYS}"),
        ('[[credential]]\nname = "al ice"',
         "credential[0].name: expected a name of 1..64 characters from A-Z a-z 0-9 "
         '_ . @ -, got "al ice"'),
        ('[[credential]]\nid = "8f3a0c1d22e4b599"',
         "credential[0].name: expected a name of 1..64 characters from A-Z a-z 0-9 "
         "_ . @ -, but the key is missing"),
        ('[[credential]]\nname = "a"\nid = "8f3a0c1d"',
         'credential[0].id: expected 16 hexadecimal digits, got "8f3a0c1d"'),
        ('[[credential]]\nname = "a"\nid = "8f3a0c1d22e4b59g"',
         'credential[0].id: expected 16 hexadecimal digits, got "8f3a0c1d22e4b59g"'),
        ('[[credential]]\nname = "a"\nid = "8f3a0c1d22e4b599"\nallow = ["tcp/22"]',
         "credential[0].secret: expected secret or secret_file, but both keys are "
         "missing"),
        (f"[[credential]]\n{CRED}secret_file = 'k'\nallow = ['tcp/22']",
         "credential[0].secret_file: expected either secret or secret_file, got both"),
        (f'[[credential]]\nname = "a"\nid = "8f3a0c1d22e4b599"\nsecret = "{SHORT_B64}"',
         f"credential[0].secret: {SECRET_EXPECT}, got 31 bytes"),
        ('[[credential]]\nname = "a"\nid = "8f3a0c1d22e4b599"\nsecret = "not base64!"',
         f"credential[0].secret: {SECRET_EXPECT}, got text that is not valid base64"),
        (f'[[credential]]\nname = "a"\nid = "8f3a0c1d22e4b599"\n'
         f'secret = "{SECRET_B64[:-2]}B="',
         f"credential[0].secret: {SECRET_EXPECT}, got a non-canonical encoding"),
        (f'{ALICE}\n[[credential]]\nname = "alice"\nid = "0000000000000002"\n'
         f'secret = "{SECRET_B64}"\nallow = ["tcp/22"]',
         'credential[1].name: expected a unique name, got "alice" (also '
         "credential[0])"),
        (f'{ALICE}\n[[credential]]\nname = "bob"\nid = "8F3A0C1D22E4B599"\n'
         f'secret = "{SECRET_B64}"\nallow = ["tcp/22"]',
         'credential[1].id: expected a unique id, got "8f3a0c1d22e4b599" (also '
         "credential[0])"),
        ("[server\nport = 1\n",
         "line 1: invalid TOML: Expected ']' at the end of a table declaration "
         "(column 8)"),
        ("[server]\nport = \n", "line 2: invalid TOML: Invalid value (column 8)"),
        ("[server]\nport = ", "line 2: invalid TOML: Invalid value (at end of file)"),
        (b"[server]\n# caf\xe9\n",
         "line 2: expected UTF-8 text, got an invalid byte 0xe9"),
    ],
)  # fmt: skip
def test_bad_server_config(cfg_path: Path, text: str | bytes, message: str) -> None:
    write(cfg_path, text)

    with pytest.raises(ConfigError) as err:
        load_server_config(cfg_path)

    assert str(err.value) == f"{cfg_path}: {message}"
    assert "\n" not in str(err.value)
    assert SECRET_B64 not in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "client: expected a [client] table, but it is missing"),
        ("[server]\n", "server: unknown table; expected one of: client"),
        (CLIENT.replace("open_for = 45", "open_for = 0"),
         "client.open_for: expected an integer 1..86400, got 0"),
        (CLIENT.replace('allow = ["tcp/22"]', f"allow = [{', '.join(['1'] * 3)}]"),
         'client.allow[0]: expected "tcp/PORT" or "udp/PORT", got 1'),
        (CLIENT.replace('allow = ["tcp/22"]', f"allow = {SEVENTEEN_PORTS}"),
         "client.allow: expected at most 16 items, got 17"),
        (CLIENT.replace('server = "bastion.example"', 'server = ""'),
         'client.server: expected a host name or address, got ""'),
        (CLIENT.replace("port = 62202", "default_open = 30"),
         "client.default_open: unknown key; expected one of: allow, id, name, "
         "open_for, port, secret, secret_file, server, server_id"),
        (CLIENT.replace('name = "alice"\n', ""),
         "client.name: expected a name of 1..64 characters from A-Z a-z 0-9 _ . @ -, "
         "but the key is missing"),
    ],
)  # fmt: skip
def test_bad_client_config(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "client.toml", text)

    with pytest.raises(ConfigError) as err:
        load_client_config(path)

    assert str(err.value) == f"{path}: {message}"


# -- files and modes ----------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o660])
def test_inline_secret_needs_private_file(cfg_path: Path, mode: int) -> None:
    write(cfg_path, SERVER, mode)

    with pytest.raises(ConfigError) as err:
        load_server_config(cfg_path)

    assert str(err.value) == (
        f"{cfg_path}: credential[0].secret: this file holds a secret, so group and "
        f"others must have no access; got mode {mode:04o}, fix with: "
        f"chmod 600 {cfg_path}"
    )


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_private_file_is_accepted(cfg_path: Path, mode: int) -> None:
    assert load_server_config(write(cfg_path, SERVER, mode)).credentials


def test_client_inline_secret_needs_private_file(tmp_path: Path) -> None:
    path = write(tmp_path / "client.toml", CLIENT, 0o644)

    with pytest.raises(ConfigError, match=r"client\.secret: this file holds a secret"):
        load_client_config(path)


def secret_file_config(cfg_path: Path, keyfile: Path | str) -> Path:
    return write(
        cfg_path,
        f'[[credential]]\nname = "a"\nid = "0000000000000001"\n'
        f'secret_file = "{keyfile}"\nallow = ["tcp/22"]\n',
        0o644,
    )


def test_secret_file(cfg_path: Path, tmp_path: Path) -> None:
    keyfile = write(tmp_path / "a.key", SECRET_B64 + "\n", 0o600)

    cfg = load_server_config(secret_file_config(cfg_path, keyfile))

    assert cfg.credentials[0].secret == SECRET


def test_secret_file_needs_private_mode(cfg_path: Path, tmp_path: Path) -> None:
    keyfile = write(tmp_path / "a.key", SECRET_B64, 0o644)

    with pytest.raises(ConfigError) as err:
        load_server_config(secret_file_config(cfg_path, keyfile))

    assert str(err.value) == (
        f"{cfg_path}: credential[0].secret_file: {keyfile} holds a secret, so group "
        "and others must have no access; got mode 0644, fix with: "
        f"chmod 600 {keyfile}"
    )


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "cannot read {key}: No such file or directory"),
        (lambda p: p.mkdir(mode=0o700),
         "{key} must be a regular file, got a directory"),
        (lambda p: write(p, SHORT_B64),
         f"{SECRET_EXPECT} in {{key}}, got 31 bytes"),
        (lambda p: write(p, b"\xff" * 44),
         f"{SECRET_EXPECT} in {{key}}, got text that is not valid base64"),
    ],
)  # fmt: skip
def test_bad_secret_file(
    cfg_path: Path, tmp_path: Path, setup: Callable[[Path], object], message: str
) -> None:
    keyfile = tmp_path / "a.key"
    setup(keyfile)

    with pytest.raises(ConfigError) as err:
        load_server_config(secret_file_config(cfg_path, keyfile))

    expected = message.format(key=keyfile)
    assert str(err.value) == f"{cfg_path}: credential[0].secret_file: {expected}"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"

    with pytest.raises(ConfigError) as err:
        load_server_config(path)

    assert str(err.value) == f"{path}: cannot read: No such file or directory"


def test_config_must_be_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)

    with pytest.raises(ConfigError) as err:
        load_client_config(fifo)

    assert str(err.value) == f"{fifo}: expected a regular file, got a FIFO"
    with pytest.raises(ConfigError, match="got a directory"):
        load_server_config(tmp_path)


# -- ports ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("tcp/22", PortSpec("tcp", 22)),
        ("UDP/53", PortSpec("udp", 53)),
        ("Tcp/1", PortSpec("tcp", 1)),
        (" tcp/65535 ", PortSpec("tcp", 65535)),
    ],
)
def test_port_spec_parse(text: str, spec: PortSpec) -> None:
    assert PortSpec.parse(text) == spec
    assert PortSpec.parse(str(spec)) == spec
    assert str(spec) == text.strip().lower()


@pytest.mark.parametrize(
    "text",
    ["tcp/0", "tcp/65536", "tcp/99999", "icmp/8", "tcp/", "22", "tcp/22/1", "tcp/-1",
     "tcp / 22", "tcp/\uff12\uff12", "", "tcp/0x16"],
)  # fmt: skip
def test_port_spec_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError) as err:
        PortSpec.parse(text)

    assert str(err.value).startswith('expected "tcp/PORT" or "udp/PORT", got "')


def test_port_spec_checks_fields() -> None:
    with pytest.raises(ValueError):
        PortSpec("sctp", 22)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PortSpec("tcp", 0)


def test_parse_port_list() -> None:
    assert parse_port_list("tcp/22,udp/53") == (
        PortSpec("tcp", 22),
        PortSpec("udp", 53),
    )
    assert parse_port_list(" tcp/22 , TCP/22,udp/53 ") == (
        PortSpec("tcp", 22),
        PortSpec("udp", 53),
    )
    for bad in ("", "tcp/22,", "tcp/22,,udp/53", "tcp/22;udp/53"):
        with pytest.raises(ValueError):
            parse_port_list(bad)


# -- keygen helpers -------------------------------------------------------------


def test_new_ids_and_secrets() -> None:
    ids = {new_credential_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 8 for i in ids)
    assert len(new_secret()) == 32 and new_secret() != new_secret()


def test_add_credential_keeps_comments(cfg_path: Path) -> None:
    write(cfg_path, SERVER, 0o640)
    cred_id = new_credential_id()
    secret = new_secret()

    add_credential_to_server_config(
        cfg_path,
        name="carol",
        cred_id=cred_id,
        secret=secret,
        allow=parse_port_list("tcp/22,udp/53"),
        sources=[ipaddress.ip_network("192.0.2.0/24"), "2001:db8::/32"],
        max_open=120,
    )

    text = cfg_path.read_text()
    assert text.startswith(SERVER), "the old text is kept as it was"
    assert "# bastion config" in text and "# capture interface" in text
    assert stat.S_IMODE(cfg_path.stat().st_mode) == 0o600
    carol = load_server_config(cfg_path).credentials[-1]
    assert (carol.name, carol.id, carol.secret) == ("carol", cred_id, secret)
    assert carol.allow == (PortSpec("tcp", 22), PortSpec("udp", 53))
    assert [str(n) for n in carol.sources] == ["192.0.2.0/24", "2001:db8::/32"]
    assert carol.max_open == 120
    assert not [p for p in cfg_path.parent.iterdir() if p.name.endswith(".tmp")]


def test_add_credential_twice_is_refused(cfg_path: Path) -> None:
    kw: dict[str, Any] = {
        "name": "dave",
        "secret": new_secret(),
        "allow": (PortSpec("tcp", 22),),
    }
    add_credential_to_server_config(cfg_path, cred_id=new_credential_id(), **kw)
    before = cfg_path.read_text()

    with pytest.raises(ConfigError) as err:
        add_credential_to_server_config(cfg_path, cred_id=new_credential_id(), **kw)

    assert str(err.value) == (
        f'{cfg_path}: credential[0].name: a credential named "dave" already exists'
    )
    assert cfg_path.read_text() == before


def test_add_credential_creates_a_minimal_file(cfg_path: Path) -> None:
    add_credential_to_server_config(
        cfg_path, name="erin", cred_id=bytes(8), secret=SECRET,
        allow=(PortSpec("tcp", 22),),
    )  # fmt: skip
    add_credential_to_server_config(
        cfg_path, name="frank", cred_id=bytes(7) + b"\x01", secret=SECRET,
        allow=(PortSpec("tcp", 22),),
    )  # fmt: skip

    cfg = load_server_config(cfg_path)
    assert [c.name for c in cfg.credentials] == ["erin", "frank"]
    assert cfg.protected == (PortSpec("tcp", 22),)
    assert stat.S_IMODE(cfg_path.stat().st_mode) == 0o600
    assert "\n\n[[credential]]\n" in cfg_path.read_text()


def test_add_credential_refuses_what_would_not_load(cfg_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"credential\[0\]\.name: expected a name"):
        add_credential_to_server_config(
            cfg_path, name="no spaces", cred_id=bytes(8), secret=SECRET,
            allow=(PortSpec("tcp", 22),),
        )  # fmt: skip
    assert not cfg_path.exists()


def test_add_credential_with_secret_file(cfg_path: Path, tmp_path: Path) -> None:
    write_secret_file(tmp_path / "g.key", SECRET)
    assert stat.S_IMODE((tmp_path / "g.key").stat().st_mode) == 0o600
    with pytest.raises(ConfigError, match="already exists"):
        write_secret_file(tmp_path / "g.key", SECRET)

    add_credential_to_server_config(
        cfg_path, name="gus", cred_id=bytes(8), secret_file="g.key",
        allow=(PortSpec("udp", 53),),
    )  # fmt: skip

    assert load_server_config(cfg_path).credentials[0].secret == SECRET


def test_client_config_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "alice.toml"
    cred_id, secret = new_credential_id(), new_secret()
    kw: dict[str, Any] = {
        "name": "alice", "cred_id": cred_id, "secret": secret,
        "server": "bastion.example", "server_id": "bastion.example",
        "allow": parse_port_list("tcp/22,udp/53"), "open_for": 60,
    }  # fmt: skip

    write_client_config(path, **kw)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_client_config(path) == ClientConfig(
        path=path, name="alice", id=cred_id, secret=secret,
        server="bastion.example", server_id="bastion.example",
        allow=(PortSpec("tcp", 22), PortSpec("udp", 53)), open_for=60,
    )  # fmt: skip
    assert render_client_config(**kw, path=path) == path.read_text()

    with pytest.raises(ConfigError) as err:
        write_client_config(path, **kw)
    assert str(err.value) == f"{path}: already exists; refusing to overwrite it"

    kw["open_for"] = 90
    write_client_config(path, force=True, **kw)
    assert load_client_config(path).open_for == 90
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
