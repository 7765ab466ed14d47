"""Configuration files of spad (server) and spa (client), in TOML.

Every mistake raises :class:`ConfigError` with a one-line message of the form
``<file>: <key path>: <what was expected, and what was found>``, so that an
operator sees at once which line to fix.  Unknown keys and unknown tables are
mistakes too: a typo must never silently fall back to a default.

Relative paths in a file (``state_dir``, ``secret_file``) are taken relative
to the directory of that file, not to the working directory of the process.

A file that holds a secret (a config with an inline ``secret`` or a
``secret_file``) must be a regular file that neither group nor others may
read or write.  The secrets themselves never appear in a message.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ipaddress
import json
import logging
import os
import re
import secrets
import stat
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, cast

import tomlkit
import tomlkit.items

log = logging.getLogger(__name__)

Proto = Literal["tcp", "udp"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PORT: Final = 62201
DEFAULT_STATE_DIR: Final = "/var/lib/spa"
DEFAULT_WINDOW: Final = 60
DEFAULT_PROTECTED: Final = "tcp/22"
DEFAULT_REPLAY_CAPACITY: Final = 65536
DEFAULT_NFT_TABLE: Final = "spa"
DEFAULT_MAX_OPEN: Final = 300
DEFAULT_OPEN_FOR: Final = 30
MAX_OPEN_SECONDS: Final = 86400
MAX_REQUEST_PORTS: Final = 16
SECRET_BYTES: Final = 32
ID_BYTES: Final = 8

NAME_RE: Final = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
ID_RE: Final = re.compile(r"[0-9A-Fa-f]{16}")
TABLE_RE: Final = re.compile(r"[A-Za-z0-9_]{1,32}")
_IFNAME_RE: Final = re.compile(r"[^\s/:]{1,15}")
_HOST_RE: Final = re.compile(r"[^\s\x00-\x1f\x7f]{1,253}")
_PORT_RE: Final = re.compile(r"(?i)(tcp|udp)/([0-9]{1,5})")
_TOML_POS_RE: Final = re.compile(
    r"^(.*) \(at (?:line (\d+), column (\d+)|end of document)\)$"
)

_PORT_EXPECT: Final = 'expected "tcp/PORT" or "udp/PORT"'


class ConfigError(ValueError):
    """A configuration mistake; ``str()`` is one line meant for the operator."""


# ---------------------------------------------------------------------------
# Value types


@dataclass(frozen=True, order=True)
class PortSpec:
    """One transport protocol and port, written ``tcp/22`` or ``udp/53``."""

    proto: Proto
    port: int

    def __post_init__(self) -> None:
        if self.proto not in ("tcp", "udp"):
            raise ValueError(f"protocol must be tcp or udp, got {self.proto!r}")
        if type(self.port) is not int or not 1 <= self.port <= 65535:
            raise ValueError(f"port must be an integer 1..65535, got {self.port!r}")

    @classmethod
    def parse(cls, text: str) -> PortSpec:
        """Parse ``tcp/22`` (protocol case-insensitive, port 1..65535).

        Raises ValueError with a message that quotes the text.
        """
        m = _PORT_RE.fullmatch(text.strip()) if isinstance(text, str) else None
        if m is None or not 1 <= int(m.group(2)) <= 65535:
            raise ValueError(f"{_PORT_EXPECT}, got {_show(text)}")
        proto: Proto = "tcp" if m.group(1).lower() == "tcp" else "udp"
        return cls(proto, int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.proto}/{self.port}"


def parse_port_list(text: str) -> tuple[PortSpec, ...]:
    """Parse a comma-separated list such as ``tcp/22,udp/53``.

    Blanks around items are ignored, duplicates are dropped (first one
    kept), an empty list or an empty item is an error (ValueError).
    """
    items = text.split(",")
    if not text.strip():
        raise ValueError(f'expected a list such as "tcp/22,udp/53", got {_show(text)}')
    specs = [PortSpec.parse(item) for item in items]
    return tuple(dict.fromkeys(specs))


@dataclass(frozen=True)
class Credential:
    """One key and what it may open (server side)."""

    name: str
    id: bytes
    secret: bytes = field(repr=False)
    allow: tuple[PortSpec, ...]
    sources: tuple[IPNetwork, ...] = (
        ipaddress.IPv4Network("0.0.0.0/0"),
        ipaddress.IPv6Network("::/0"),
    )
    max_open: int = DEFAULT_MAX_OPEN
    allow_other_address: bool = False
    secret_file: Path | None = None


@dataclass(frozen=True)
class ServerConfig:
    """Everything read from the server's file (``spad.toml``)."""

    path: Path
    interface: str | None = None
    port: int = DEFAULT_PORT
    firewall: Literal["nftables", "none"] = "nftables"
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    window: int = DEFAULT_WINDOW
    server_ids: tuple[str, ...] = ()
    addresses: tuple[IPAddress, ...] = ()
    protected: tuple[PortSpec, ...] = (PortSpec("tcp", 22),)
    on_exit: Literal["flush", "keep"] = "flush"
    replay_capacity: int = DEFAULT_REPLAY_CAPACITY
    nft_table: str = DEFAULT_NFT_TABLE
    credentials: tuple[Credential, ...] = ()


@dataclass(frozen=True)
class ClientConfig:
    """Everything read from a client's file."""

    path: Path
    name: str
    id: bytes
    secret: bytes = field(repr=False)
    secret_file: Path | None = None
    server: str | None = None
    port: int = DEFAULT_PORT
    server_id: str | None = None
    allow: tuple[PortSpec, ...] = ()
    open_for: int = DEFAULT_OPEN_FOR


def new_credential_id() -> bytes:
    """A fresh random credential id (8 bytes)."""
    return secrets.token_bytes(ID_BYTES)


def new_secret() -> bytes:
    """A fresh random 32-byte secret."""
    return secrets.token_bytes(SECRET_BYTES)


def encode_secret(secret: bytes) -> str:
    """The base64 text stored in config and key files."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"a secret is {SECRET_BYTES} bytes, got {len(secret)}")
    return base64.b64encode(secret).decode("ascii")


# ---------------------------------------------------------------------------
# Messages


def _show(value: object) -> str:
    """How a found value is quoted in a message: TOML-like, on one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 80 else text[:76] + '..."'
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date or time"


def _fail(path: Path, where: str, what: str) -> ConfigError:
    text = f"{path}: {where}: {what}" if where else f"{path}: {what}"
    return ConfigError(text.replace("\r", "\\r").replace("\n", "\\n"))


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


# ---------------------------------------------------------------------------
# Reading files


def _os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _read_private_aware(path: Path) -> tuple[bytes, os.stat_result]:
    """Read a file without blocking on FIFOs; return its bytes and fstat."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _fail(path, "", f"cannot read: {_os_reason(exc)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _fail(
                path, "", f"expected a regular file, got {_file_kind(st.st_mode)}"
            )
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks), st
    except OSError as exc:
        raise _fail(path, "", f"cannot read: {_os_reason(exc)}") from None
    finally:
        os.close(fd)


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def _check_private(path: Path, st: os.stat_result, where: str, shown: Path) -> None:
    """A file holding a secret: regular, no access for group or others."""
    name = "this file" if shown == path else str(shown)
    if not stat.S_ISREG(st.st_mode):
        kind = _file_kind(st.st_mode)
        raise _fail(path, where, f"{name} must be a regular file, got {kind}")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise _fail(
            path,
            where,
            f"{name} holds a secret, so group and others must have no access; "
            f"got mode {mode:04o}, fix with: chmod 600 {shown}",
        )


def _parse_toml(path: Path, data: bytes) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _fail(
            path,
            f"line {line}",
            f"expected UTF-8 text, got an invalid byte 0x{data[exc.start]:02x}",
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = _TOML_POS_RE.match(msg)
        if m is None:
            raise _fail(path, "", f"invalid TOML: {msg}") from None
        if m.group(2) is None:
            where = f"line {text.count(chr(10)) + 1}"
            detail = f"{m.group(1)} (at end of file)"
        else:
            where = f"line {m.group(2)}"
            detail = f"{m.group(1)} (column {m.group(3)})"
        raise _fail(path, where, f"invalid TOML: {detail}") from None


# ---------------------------------------------------------------------------
# Typed access to one table


T = TypeVar("T")


class _Table:
    """A TOML table being validated: tracks the keys consumed."""

    def __init__(self, path: Path, where: str, data: Mapping[str, Any]) -> None:
        self.path = path
        self.where = where
        self.data = data
        self.seen: set[str] = set()

    def fail(self, key: str, what: str) -> ConfigError:
        return _fail(self.path, _join(self.where, key), what)

    def has(self, key: str) -> bool:
        return key in self.data

    def _get(self, key: str, expected: str, required: bool) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if required:
                raise self.fail(key, f"expected {expected}, but the key is missing")
            return None
        return self.data[key]

    def string(
        self,
        key: str,
        expected: str,
        *,
        required: bool = False,
        pattern: re.Pattern[str] | None = None,
    ) -> str | None:
        value = self._get(key, expected, required)
        if value is None:
            return None
        if not isinstance(value, str) or (
            pattern is not None and pattern.fullmatch(value) is None
        ):
            raise self.fail(key, f"expected {expected}, got {_show(value)}")
        return value

    def integer(self, key: str, low: int, high: int, default: int) -> int:
        expected = f"an integer {low}..{high}"
        value = self._get(key, expected, False)
        if value is None:
            return default
        if type(value) is not int or not low <= value <= high:
            raise self.fail(
                key,
                f"expected {expected}, got {_show(value)}"
                + ("" if type(value) is int else f" ({_kind(value)})"),
            )
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, "true or false", False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {_show(value)}")
        return value

    def choice(self, key: str, choices: Sequence[str], default: str) -> str:
        expected = " or ".join(json.dumps(c) for c in choices)
        value = self._get(key, expected, False)
        if value is None:
            return default
        if not isinstance(value, str) or value not in choices:
            raise self.fail(key, f"expected {expected}, got {_show(value)}")
        return value

    def array(
        self,
        key: str,
        expected: str,
        convert: Callable[[Any], T],
        *,
        default: tuple[T, ...],
        nonempty: bool = False,
        limit: int | None = None,
    ) -> tuple[T, ...]:
        """An array of items, each checked by ``convert`` (ValueError: bad)."""
        outer = f"an array of {expected}"
        if nonempty:
            outer = f"a non-empty array of {expected}"
        value = self._get(key, outer, False)
        if value is None:
            return default
        if not isinstance(value, list):
            raise self.fail(key, f"expected {outer}, got {_show(value)}")
        if nonempty and not value:
            raise self.fail(key, f"expected {outer}, got an empty array")
        if limit is not None and len(value) > limit:
            raise self.fail(key, f"expected at most {limit} items, got {len(value)}")
        out: list[T] = []
        for i, item in enumerate(value):
            try:
                out.append(convert(item))
            except ValueError as exc:
                raise self.fail(f"{key}[{i}]", str(exc)) from None
        return tuple(dict.fromkeys(out))

    def finish(self, known: Iterable[str]) -> None:
        """Refuse keys that were not consumed."""
        expected = ", ".join(sorted(set(known)))
        for key, value in self.data.items():
            if key in self.seen:
                continue
            is_table = isinstance(value, dict) or (
                isinstance(value, list) and any(isinstance(x, dict) for x in value)
            )
            kind = "table" if is_table else "key"
            raise self.fail(key, f"unknown {kind}; expected one of: {expected}")


def _port_item(value: object) -> PortSpec:
    if not isinstance(value, str):
        raise ValueError(f"{_PORT_EXPECT}, got {_show(value)}")
    return PortSpec.parse(value)


def _address_item(value: object) -> IPAddress:
    if isinstance(value, str):
        try:
            return ipaddress.ip_address(value)
        except ValueError:
            pass
    raise ValueError(f"expected an IPv4 or IPv6 address, got {_show(value)}")


def _network_item(value: object) -> IPNetwork:
    if not isinstance(value, str):
        raise ValueError(
            f'expected an address range such as "192.0.2.0/24", got {_show(value)}'
        )
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(
            f'expected an address range such as "192.0.2.0/24", got {_show(value)}'
        ) from None
    raise ValueError(
        f"expected a range with no host bits set (did you mean "
        f'"{loose}"?), got {_show(value)}'
    )


def _server_id_item(value: object) -> str:
    if not isinstance(value, str) or _HOST_RE.fullmatch(value) is None:
        raise ValueError(
            f"expected a server name (1..253 characters, no blanks), got {_show(value)}"
        )
    return value.lower()


# ---------------------------------------------------------------------------
# Secrets


def _decode_secret(path: Path, where: str, text: str, source: str = "") -> bytes:
    expected = (
        f"base64 of {SECRET_BYTES} bytes (44 characters, as written "
        f'by "spa keygen"){source}'
    )
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _fail(
            path, where, f"expected {expected}, got text that is not valid base64"
        ) from None
    if len(raw) != SECRET_BYTES:
        raise _fail(path, where, f"expected {expected}, got {len(raw)} bytes")
    if base64.b64encode(raw).decode("ascii") != text:
        raise _fail(path, where, f"expected {expected}, got a non-canonical encoding")
    return raw


def _resolve(path: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else path.parent / p


def _load_secret(t: _Table, st: os.stat_result) -> tuple[bytes, Path | None]:
    """The secret of a credential: inline (file must be private) or in a file."""
    inline = t.string("secret", "a base64 secret")
    keyfile = t.string("secret_file", "a path to a key file")
    if inline is not None and keyfile is not None:
        raise t.fail("secret_file", "expected either secret or secret_file, got both")
    if inline is not None:
        where = _join(t.where, "secret")
        _check_private(t.path, st, where, t.path)
        return _decode_secret(t.path, where, inline), None
    if keyfile is None:
        raise t.fail(
            "secret", "expected secret or secret_file, but both keys are missing"
        )
    where = _join(t.where, "secret_file")
    if not keyfile:
        raise t.fail("secret_file", 'expected a path to a key file, got ""')
    kpath = _resolve(t.path, keyfile)
    try:
        fd = os.open(kpath, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _fail(t.path, where, f"cannot read {kpath}: {_os_reason(exc)}") from None
    try:
        kst = os.fstat(fd)
        _check_private(t.path, kst, where, kpath)
        data = os.read(fd, 4096)
    except OSError as exc:
        raise _fail(t.path, where, f"cannot read {kpath}: {_os_reason(exc)}") from None
    finally:
        os.close(fd)
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        text = "\x00"
    return _decode_secret(t.path, where, text, f" in {kpath}"), kpath


def _cred_id(t: _Table) -> bytes:
    value = t.string("id", "16 hexadecimal digits", required=True, pattern=ID_RE)
    assert value is not None
    return bytes.fromhex(value)


def _table(path: Path, where: str, value: object) -> _Table:
    if not isinstance(value, dict):
        raise _fail(path, where, f"expected a table, got {_show(value)}")
    return _Table(path, where, value)


# ---------------------------------------------------------------------------
# Server


_SERVER_KEYS: Final = (
    "interface",
    "port",
    "firewall",
    "state_dir",
    "window",
    "server_ids",
    "addresses",
    "protected",
    "on_exit",
    "replay_capacity",
    "nft_table",
)
_CREDENTIAL_KEYS: Final = (
    "name",
    "id",
    "secret",
    "secret_file",
    "allow",
    "sources",
    "max_open",
    "allow_other_address",
)
_CLIENT_KEYS: Final = (
    "name",
    "id",
    "secret",
    "secret_file",
    "server",
    "port",
    "server_id",
    "allow",
    "open_for",
)


def load_server_config(path: str | os.PathLike[str]) -> ServerConfig:
    """Read and check the server's config file."""
    p = Path(path)
    data, st = _read_private_aware(p)
    return _server_from_dict(p, _parse_toml(p, data), st)


def _server_from_dict(p: Path, doc: dict[str, Any], st: os.stat_result) -> ServerConfig:
    top = _Table(p, "", doc)
    top.seen.update(("server", "credential"))
    top.finish(("server", "credential"))

    s = _table(p, "server", doc.get("server", {}))
    interface = s.string(
        "interface", 'an interface name such as "eth0"', pattern=_IFNAME_RE
    )
    if interface in (".", ".."):
        raise s.fail(
            "interface",
            f'expected an interface name such as "eth0", got {_show(interface)}',
        )
    port = s.integer("port", 1, 65535, DEFAULT_PORT)
    firewall = s.string("firewall", 'a firewall backend, "nftables" or "none"')
    if firewall == "iptables":
        raise s.fail(
            "firewall",
            'the "iptables" backend is not available yet; '
            'expected "nftables" or "none"',
        )
    if firewall is not None and firewall not in ("nftables", "none"):
        raise s.fail(
            "firewall", f'expected "nftables" or "none", got {_show(firewall)}'
        )
    state_dir = s.string("state_dir", "a directory path")
    if state_dir == "":
        raise s.fail("state_dir", 'expected a directory path, got ""')
    window = s.integer("window", 1, 3600, DEFAULT_WINDOW)
    server_ids = s.array("server_ids", "server names", _server_id_item, default=())
    addresses = s.array("addresses", "IP addresses", _address_item, default=())
    protected = s.array(
        "protected",
        '"tcp/PORT" or "udp/PORT" strings',
        _port_item,
        default=(PortSpec("tcp", 22),),
    )
    on_exit = s.choice("on_exit", ("flush", "keep"), "flush")
    capacity = s.integer("replay_capacity", 1024, 16777216, DEFAULT_REPLAY_CAPACITY)
    table = s.string(
        "nft_table", "a table name of 1..32 letters, digits or _", pattern=TABLE_RE
    )
    s.finish(_SERVER_KEYS)

    raw_creds = doc.get("credential", [])
    if not isinstance(raw_creds, list):
        raise _fail(
            p,
            "credential",
            f"expected an array of tables ([[credential]]), got {_show(raw_creds)}",
        )
    creds: list[Credential] = []
    names: dict[str, int] = {}
    ids: dict[bytes, int] = {}
    for i, raw in enumerate(raw_creds):
        cred = _credential(p, f"credential[{i}]", raw, st)
        if cred.name in names:
            raise _fail(
                p,
                f"credential[{i}].name",
                f"expected a unique name, got "
                f"{_show(cred.name)} (also credential[{names[cred.name]}])",
            )
        if cred.id in ids:
            raise _fail(
                p,
                f"credential[{i}].id",
                f"expected a unique id, got "
                f'"{cred.id.hex()}" (also credential[{ids[cred.id]}])',
            )
        names[cred.name] = i
        ids[cred.id] = i
        creds.append(cred)

    return ServerConfig(
        path=p,
        interface=interface,
        port=port,
        firewall="none" if firewall == "none" else "nftables",
        state_dir=_resolve(p, state_dir or DEFAULT_STATE_DIR),
        window=window,
        server_ids=server_ids,
        addresses=addresses,
        protected=protected,
        on_exit="keep" if on_exit == "keep" else "flush",
        replay_capacity=capacity,
        nft_table=table or DEFAULT_NFT_TABLE,
        credentials=tuple(creds),
    )


def _credential(p: Path, where: str, raw: object, st: os.stat_result) -> Credential:
    t = _table(p, where, raw)
    name = t.string(
        "name",
        "a name of 1..64 characters from A-Z a-z 0-9 _ . @ -",
        required=True,
        pattern=NAME_RE,
    )
    assert name is not None
    cred_id = _cred_id(t)
    secret, secret_file = _load_secret(t, st)
    allow = t.array(
        "allow",
        '"tcp/PORT" or "udp/PORT" strings',
        _port_item,
        default=(),
        nonempty=True,
    )
    if not t.has("allow"):
        raise t.fail(
            "allow",
            'expected a non-empty array of "tcp/PORT" or '
            '"udp/PORT" strings, but the key is missing',
        )
    sources = t.array(
        "sources",
        "address ranges",
        _network_item,
        default=Credential.sources,
        nonempty=True,
    )
    max_open = t.integer("max_open", 1, MAX_OPEN_SECONDS, DEFAULT_MAX_OPEN)
    other = t.boolean("allow_other_address", False)
    t.finish(_CREDENTIAL_KEYS)
    return Credential(
        name=name,
        id=cred_id,
        secret=secret,
        allow=allow,
        sources=sources,
        max_open=max_open,
        allow_other_address=other,
        secret_file=secret_file,
    )


# ---------------------------------------------------------------------------
# Client


def load_client_config(path: str | os.PathLike[str]) -> ClientConfig:
    """Read and check a client's config file."""
    p = Path(path)
    data, st = _read_private_aware(p)
    return _client_from_dict(p, _parse_toml(p, data), st)


def _client_from_dict(p: Path, doc: dict[str, Any], st: os.stat_result) -> ClientConfig:
    top = _Table(p, "", doc)
    top.seen.add("client")
    top.finish(("client",))
    if "client" not in doc:
        raise _fail(p, "client", "expected a [client] table, but it is missing")
    c = _table(p, "client", doc["client"])
    name = c.string(
        "name",
        "a name of 1..64 characters from A-Z a-z 0-9 _ . @ -",
        required=True,
        pattern=NAME_RE,
    )
    assert name is not None
    cred_id = _cred_id(c)
    secret, secret_file = _load_secret(c, st)
    server = c.string("server", "a host name or address", pattern=_HOST_RE)
    port = c.integer("port", 1, 65535, DEFAULT_PORT)
    server_id = c.string(
        "server_id", "a server name (1..253 characters, no blanks)", pattern=_HOST_RE
    )
    allow = c.array(
        "allow",
        '"tcp/PORT" or "udp/PORT" strings',
        _port_item,
        default=(),
        nonempty=True,
        limit=MAX_REQUEST_PORTS,
    )
    open_for = c.integer("open_for", 1, MAX_OPEN_SECONDS, DEFAULT_OPEN_FOR)
    c.finish(_CLIENT_KEYS)
    return ClientConfig(
        path=p,
        name=name,
        id=cred_id,
        secret=secret,
        secret_file=secret_file,
        server=server,
        port=port,
        server_id=server_id.lower() if server_id else None,
        allow=allow,
        open_for=open_for,
    )


# ---------------------------------------------------------------------------
# Writing (spa keygen)


ROUTE_TABLE: Final = Path("/proc/net/route")
_RTF_UP: Final = 0x1


def default_route_interface(route_table: Path | None = None) -> str | None:
    """The interface of the IPv4 default route, or None if there is none.

    Read from ``/proc/net/route``; among several default routes the one with
    the lowest metric wins.
    """
    try:
        text = (route_table or ROUTE_TABLE).read_text(
            encoding="ascii", errors="replace"
        )
    except OSError:
        return None
    best: tuple[int, str] | None = None
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        iface, dest, flags, metric, mask = (fields[i] for i in (0, 1, 3, 6, 7))
        try:
            if int(dest, 16) or int(mask, 16) or not int(flags, 16) & _RTF_UP:
                continue
            rank = int(metric)
        except ValueError:
            continue
        if _IFNAME_RE.fullmatch(iface) is None or iface in (".", ".."):
            continue
        if best is None or rank < best[0]:
            best = (rank, iface)
    return best[1] if best else None


def _server_skeleton(interface: str | None) -> str:
    if interface is not None and (
        _IFNAME_RE.fullmatch(interface) is None or interface in (".", "..")
    ):
        raise ValueError(f"not an interface name: {interface!r}")
    iface = (
        f"interface = {json.dumps(interface)}  # capture interface (the default "
        "route's, found by spa keygen)"
        if interface
        else '# interface = "eth0"      # capture interface (or spad --interface)'
    )
    return f"""\
# spad configuration (created by "spa keygen").
# This file holds secrets: keep it mode 0600.

[server]
{iface}
port = 62201
firewall = "nftables"
protected = ["tcp/22"]
"""


@dataclass(frozen=True)
class ServerConfigEdit:
    """What ``add_credential_to_server_config`` did besides the credential."""

    created: bool = False
    server_id_added: bool = False


def _atomic_write(path: Path, text: str, *, replace: bool) -> None:
    """Write ``text`` to ``path`` with mode 0600 through a temp file.

    With ``replace`` false the final link fails if ``path`` exists, so an
    existing file is never overwritten, not even by a racing writer.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            os.unlink(tmp)
    except FileExistsError:
        os.unlink(tmp)
        raise _fail(path, "", "already exists; refusing to overwrite it") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _secret_fields(
    table: tomlkit.items.Table,
    secret: bytes | None,
    secret_file: str | os.PathLike[str] | None,
) -> None:
    if (secret is None) == (secret_file is None):
        raise ValueError("give exactly one of secret and secret_file")
    if secret is not None:
        table.add("secret", encode_secret(secret))
    else:
        table.add("secret_file", os.fspath(cast(os.PathLike[str] | str, secret_file)))


def _string_array(values: Iterable[object]) -> tomlkit.items.Array:
    arr = tomlkit.array()
    arr.extend(str(v) for v in values)
    return arr


def add_credential_to_server_config(
    path: str | os.PathLike[str],
    *,
    name: str,
    cred_id: bytes,
    allow: Sequence[PortSpec],
    secret: bytes | None = None,
    secret_file: str | os.PathLike[str] | None = None,
    sources: Sequence[IPNetwork | str] | None = None,
    max_open: int | None = None,
    allow_other_address: bool | None = None,
    server_id: str | None = None,
    interface: str | None = None,
) -> ServerConfigEdit:
    """Append a ``[[credential]]`` table to the server config at ``path``.

    The file keeps its comments and layout (tomlkit); it is created with a
    minimal ``[server]`` table if missing, naming ``interface`` as the
    capture interface if given (else leaving the key commented out).  A
    ``server_id`` is added to ``[server] server_ids`` unless already there
    (names compare case-insensitively).  A credential with the same name or
    id is refused.  The result is checked like ``load_server_config`` before
    it replaces the file (atomically, mode 0600); otherwise nothing changes.
    """
    p = Path(path)
    if len(cred_id) != ID_BYTES:
        raise ValueError(f"a credential id is {ID_BYTES} bytes, got {len(cred_id)}")
    created = not os.path.lexists(p)
    if not created:
        data, _ = _read_private_aware(p)
        _parse_toml(p, data)
        text = data.decode("utf-8")
    else:
        text = _server_skeleton(interface)
    doc = tomlkit.parse(text.rstrip() + "\n\n")
    id_added = server_id is not None and _add_server_id(p, doc, server_id)

    creds = doc.get("credential")
    if creds is None:
        creds = tomlkit.aot()
        doc.append("credential", creds)
    if not isinstance(creds, tomlkit.items.AoT):
        raise _fail(
            p,
            "credential",
            "expected [[credential]] tables to append "
            "to, got another form (rewrite it as [[credential]] tables)",
        )
    for i, old in enumerate(creds):
        if old.get("name") == name:
            raise _fail(
                p,
                f"credential[{i}].name",
                f"a credential named {_show(name)} already exists",
            )
        if str(old.get("id", "")).lower() == cred_id.hex():
            raise _fail(
                p,
                f"credential[{i}].id",
                f'a credential with id "{cred_id.hex()}" already exists',
            )

    table = tomlkit.table()
    table.add("name", name)
    table.add("id", cred_id.hex())
    _secret_fields(table, secret, secret_file)
    table.add("allow", _string_array(allow))
    if sources is not None:
        table.add("sources", _string_array(sources))
    if max_open is not None:
        table.add("max_open", max_open)
    if allow_other_address is not None:
        table.add("allow_other_address", allow_other_address)
    creds.append(table)

    new_text = tomlkit.dumps(doc)
    _server_from_dict(p, _parse_toml(p, new_text.encode("utf-8")), _private_stat())
    _atomic_write(p, new_text, replace=True)
    log.info("added credential %s to %s", name, p)
    return ServerConfigEdit(created=created, server_id_added=id_added)


def _add_server_id(p: Path, doc: tomlkit.TOMLDocument, server_id: str) -> bool:
    """Add ``server_id`` to ``[server] server_ids``; False if already there."""
    server = doc.get("server")
    if server is None:
        server = tomlkit.table()
        doc.add("server", server)
    if not isinstance(server, tomlkit.items.Table):
        raise _fail(p, "server", "expected a [server] table to add server_ids to")
    ids = server.get("server_ids")
    if ids is None:
        server.add("server_ids", _string_array([server_id]))
        return True
    if not isinstance(ids, tomlkit.items.Array):
        raise _fail(
            p,
            "server.server_ids",
            f"expected an array of server names, got {_show(ids.unwrap())}",
        )
    if server_id.lower() in (str(v).lower() for v in ids):
        return False
    ids.append(server_id)
    return True


def render_client_config(
    *,
    name: str,
    cred_id: bytes,
    secret: bytes | None = None,
    secret_file: str | os.PathLike[str] | None = None,
    server: str | None = None,
    port: int = DEFAULT_PORT,
    server_id: str | None = None,
    allow: Sequence[PortSpec] = (),
    open_for: int = DEFAULT_OPEN_FOR,
    path: str | os.PathLike[str] = "<client config>",
) -> str:
    """The text of a client config, checked like ``load_client_config``.

    ``path`` names the file in messages; a relative ``secret_file`` is
    checked relative to its directory.
    """
    p = Path(path)
    if len(cred_id) != ID_BYTES:
        raise ValueError(f"a credential id is {ID_BYTES} bytes, got {len(cred_id)}")
    doc = tomlkit.document()
    doc.add(tomlkit.comment('spa client configuration (created by "spa keygen").'))
    doc.add(tomlkit.comment("This file holds a secret: keep it mode 0600."))
    doc.add(tomlkit.nl())
    table = tomlkit.table()
    table.add("name", name)
    table.add("id", cred_id.hex())
    _secret_fields(table, secret, secret_file)
    if server is not None:
        table.add("server", server)
    table.add("port", port)
    if server_id is not None:
        table.add("server_id", server_id)
    if allow:
        table.add("allow", _string_array(allow))
    table.add("open_for", open_for)
    doc.add("client", table)

    text = tomlkit.dumps(doc)
    _client_from_dict(p, _parse_toml(p, text.encode("utf-8")), _private_stat())
    return text


def write_client_config(
    path: str | os.PathLike[str],
    *,
    name: str,
    cred_id: bytes,
    secret: bytes | None = None,
    secret_file: str | os.PathLike[str] | None = None,
    server: str | None = None,
    port: int = DEFAULT_PORT,
    server_id: str | None = None,
    allow: Sequence[PortSpec] = (),
    open_for: int = DEFAULT_OPEN_FOR,
    force: bool = False,
) -> None:
    """Write a client config (mode 0600); refuse an existing file unless force."""
    p = Path(path)
    text = render_client_config(
        name=name,
        cred_id=cred_id,
        secret=secret,
        secret_file=secret_file,
        server=server,
        port=port,
        server_id=server_id,
        allow=allow,
        open_for=open_for,
        path=p,
    )
    if not force and os.path.lexists(p):
        raise _fail(p, "", "already exists; refusing to overwrite it")
    _atomic_write(p, text, replace=force)
    log.info("wrote client config %s", p)


def write_secret_file(
    path: str | os.PathLike[str], secret: bytes, *, force: bool = False
) -> None:
    """Write a key file (base64 and a newline, mode 0600)."""
    p = Path(path)
    if not force and os.path.lexists(p):
        raise _fail(p, "", "already exists; refusing to overwrite it")
    _atomic_write(p, encode_secret(secret) + "\n", replace=force)


def _private_stat() -> os.stat_result:
    """A stat result that passes the privacy check, for text not yet written."""
    return os.stat_result((stat.S_IFREG | 0o600, 0, 0, 1, 0, 0, 0, 0, 0, 0))
