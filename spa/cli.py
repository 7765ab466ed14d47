"""Command line: ``spa`` (keygen, knock, proxy, status) and ``spad``.

Errors are one line on stderr and a non-zero exit: 1 for a failure at run
time, 2 for a usage mistake (click's own convention).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal

import click

from spa import config as spacfg
from spa.config import ConfigError, PortSpec

DEFAULT_SERVER_CONFIG = "/etc/spa/spad.toml"
DEFAULT_STATE_DIR = "/var/lib/spa"


def default_client_config() -> str:
    env = os.environ.get("SPA_CONFIG")
    if env:
        return env
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return os.path.join(base, "spa", "client.toml")


class PortListType(click.ParamType):  # type: ignore[type-arg]
    """``tcp/22,udp/53`` -> tuple of PortSpec."""

    name = "PROTO/PORT[,...]"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[PortSpec, ...]:
        if isinstance(value, tuple):
            return value
        try:
            return spacfg.parse_port_list(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


class SourceType(click.ParamType):  # type: ignore[type-arg]
    """An IP address, or ``packet`` for the knock's own source address."""

    name = "ADDRESS|packet"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        if value is None or isinstance(
            value, ipaddress.IPv4Address | ipaddress.IPv6Address
        ):
            return value
        if str(value).lower() in ("packet", "auto", "0.0.0.0"):
            return None
        try:
            return ipaddress.ip_address(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an IP address or 'packet'", param, ctx)


PORT_LIST = PortListType()
SOURCE = SourceType()


def _setup_logging(verbose: int, quiet: bool = False) -> None:
    level = (
        logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    )
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


class UsageLine(click.ClickException):
    """A usage mistake shown as one line, like every other error; exit 2."""

    exit_code = 2


@contextmanager
def _one_line_usage() -> Iterator[None]:
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise
    except click.UsageError as e:
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx else ""
        raise UsageLine(e.format_message() + hint) from None


class _OneLineErrors:
    """Root command mix-in: click's usage errors (the usage text, a hint and
    the message on four lines) become one line on stderr, exit status 2.
    Sub-commands are parsed and run inside the root's ``invoke``."""

    def make_context(self, *args: Any, **kw: Any) -> click.Context:
        with _one_line_usage():
            return super().make_context(*args, **kw)  # type: ignore[misc, no-any-return]

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_usage():
            return super().invoke(ctx)  # type: ignore[misc]


class SpaGroup(_OneLineErrors, click.Group):
    pass


class SpaCommand(_OneLineErrors, click.Command):
    pass


def _load_client(path: str) -> spacfg.ClientConfig:
    try:
        return spacfg.load_client_config(Path(path))
    except ConfigError as e:
        raise click.ClickException(str(e)) from None


@click.group(cls=SpaGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="spa")
def cli() -> None:
    """Single Packet Authorization: knock once, get a short-lived opening.

    The server (spad) answers nothing, ever; these commands never wait for a
    reply. See `spa COMMAND --help`.
    """


# -- keygen ------------------------------------------------------------------
@cli.command()
@click.option("--name", required=True, help="Credential name, e.g. the user's.")
@click.option(
    "--allow",
    "allow",
    type=PORT_LIST,
    default="tcp/22",
    show_default=True,
    help="Ports this credential may open.",
)
@click.option(
    "--server-config",
    type=click.Path(dir_okay=False),
    default=None,
    help="Server config to add the credential to (created if missing, with "
    "its directory).",
)
@click.option(
    "--client-config",
    type=click.Path(dir_okay=False),
    default=None,
    help="Client config to write for the knocking side.",
)
@click.option(
    "--server",
    "server_host",
    default=None,
    help="Default host to knock, written into the client config.",
)
@click.option(
    "--server-id",
    default=None,
    help="Bind knocks to this server id instead of the address (also added "
    "to the server config's server_ids).",
)
@click.option(
    "--source",
    "sources",
    multiple=True,
    help="Network the credential may knock from (repeatable; default any).",
)
@click.option(
    "--max-open",
    type=click.IntRange(1, 86400),
    default=300,
    show_default=True,
    help="Longest opening the server will grant.",
)
@click.option(
    "--open-for",
    type=click.IntRange(1, 86400),
    default=30,
    show_default=True,
    help="Default opening the client asks for.",
)
@click.option(
    "--allow-other-address",
    is_flag=True,
    help="Let knocks ask for an address other than their source.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing client config.")
def keygen(
    name: str,
    allow: tuple[PortSpec, ...],
    server_config: str | None,
    client_config: str | None,
    server_host: str | None,
    server_id: str | None,
    sources: tuple[str, ...],
    max_open: int,
    open_for: int,
    allow_other_address: bool,
    force: bool,
) -> None:
    """Create a credential: a random id and a 32-byte secret.

    Writes it into the server config and a client config. With neither file
    given, prints the client config to stdout. A new server config names the
    interface of the default route as the capture interface.
    """
    cred_id = spacfg.new_credential_id()
    secret = spacfg.new_secret()
    client_kw: dict[str, Any] = dict(
        name=name,
        cred_id=cred_id,
        secret=secret,
        allow=allow,
        server=server_host,
        server_id=server_id,
        open_for=open_for,
    )
    target = server_config or client_config or "<stdout>"
    try:
        # Refuse what would fail the client side before the server config
        # changes: a credential whose secret is nowhere else is only in the
        # way of the next try with the same name.
        client_text = spacfg.render_client_config(
            **client_kw, path=client_config or "<client config>"
        )
        if client_config:
            _check_new_file(Path(client_config), force)
        if server_config:
            target = server_config
            _add_to_server_config(
                Path(server_config),
                name=name,
                cred_id=cred_id,
                secret=secret,
                allow=allow,
                sources=sources or None,
                max_open=max_open,
                allow_other_address=allow_other_address,
                server_id=server_id,
            )
        if client_config:
            target = client_config
            spacfg.write_client_config(Path(client_config), force=force, **client_kw)
            click.echo(f"wrote client config {client_config}", err=True)
        elif not server_config:
            click.echo(client_text, nl=False)
        else:
            click.echo(
                "no --client-config given: the secret is only in the server config",
                err=True,
            )
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(
            f"{target}: cannot write: {e.strerror or e}"
        ) from None


def _add_to_server_config(path: Path, **kw: Any) -> None:
    """keygen's server side: the credential, and the file (and its directory,
    mode 0700) if they are new, saying on stderr what was done."""
    made_dir = None
    if not path.parent.is_dir():
        path.parent.mkdir(mode=0o700, parents=True)
        os.chmod(path.parent, 0o700)
        made_dir = path.parent
    created = not os.path.lexists(path)
    interface = spacfg.default_route_interface() if created else None
    try:
        edit = spacfg.add_credential_to_server_config(path, interface=interface, **kw)
    except BaseException:
        if made_dir is not None:
            with suppress(OSError):
                made_dir.rmdir()
        raise
    if made_dir is not None:
        click.echo(f"created directory {made_dir} (mode 0700)", err=True)
    if edit.created and interface:
        click.echo(
            f'created {path} with interface = "{interface}" (the default '
            "route's); change it there if knocks arrive on another interface",
            err=True,
        )
    elif edit.created:
        click.echo(
            f"created {path}; no default route found, so its interface is left "
            "commented out: set [server] interface (or use spad --interface)",
            err=True,
        )
    click.echo(f"added credential {kw['name']!r} to {path}", err=True)
    if edit.server_id_added:
        click.echo(
            f"added server id {kw['server_id']!r} to server_ids in {path}", err=True
        )


def _check_new_file(path: Path, force: bool) -> None:
    if not force and os.path.lexists(path):
        raise ConfigError(f"{path}: already exists; refusing to overwrite it")
    parent = path.parent
    if not parent.is_dir():
        raise ConfigError(f"{path}: cannot write: no directory {parent}")


# -- knock -------------------------------------------------------------------
def _knock(
    cfg: spacfg.ClientConfig,
    host: str | None,
    access: tuple[PortSpec, ...] | None,
    source: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
    port: int | None,
    open_for: int | None,
    server_id: str | None,
    family: int,
) -> tuple[Any, int]:
    from spa.client import KnockError, build_request, resolve, send_knock

    host = host or cfg.server
    if not host:
        raise click.UsageError("no HOST given and no server in the client config")
    _check_family(host, family)
    spa_port = port or cfg.port
    ports = access or cfg.allow
    try:
        target = resolve(host, spa_port, family)
        req = build_request(
            [(p.proto, p.port) for p in ports],
            open_for or cfg.open_for,
            target.address,
            allow=source,
            server_id=server_id or cfg.server_id,
        )
        send_knock(cfg.id, cfg.secret, target, spa_port, req)
    except (KnockError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    return target, spa_port


def _check_family(host: str, family: int) -> None:
    """-4 with an IPv6 literal (or -6 with IPv4) is a usage mistake."""
    if not family:
        return
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return  # a name: -4/-6 picks which of its addresses
    want = 4 if family == socket.AF_INET else 6
    if addr.version != want:
        raise click.UsageError(
            f"-{want} given but {host} is an IPv{addr.version} address: "
            "the address family does not match",
            click.get_current_context(silent=True),
        )


_knock_options = [
    click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=default_client_config,
        show_default="~/.config/spa/client.toml",
        help="Client config (or $SPA_CONFIG).",
    ),
    click.option(
        "--port",
        "spa_port",
        type=click.IntRange(1, 65535),
        default=None,
        help="Server's SPA port [config, else 62201].",
    ),
    click.option(
        "--open-for",
        type=click.IntRange(1, 86400),
        default=None,
        metavar="SECONDS",
        help="How long to ask for [config].",
    ),
    click.option(
        "--server-id",
        default=None,
        help="Bind the knock to this server id, not to its address.",
    ),
    click.option("-4", "family", flag_value=socket.AF_INET, help="IPv4 only."),
    click.option("-6", "family", flag_value=socket.AF_INET6, help="IPv6 only."),
]


def knock_options(f: Any) -> Any:
    for opt in reversed(_knock_options):
        f = opt(f)
    return f


@cli.command()
@click.argument("host", required=False)
@click.option(
    "-A",
    "--access",
    type=PORT_LIST,
    default=None,
    help="Ports to open, e.g. tcp/22,udp/53 [config].",
)
@click.option(
    "-s",
    "--source",
    type=SOURCE,
    default=None,
    help="Address to open for: an IP, or 'packet' (default) for the "
    "address the knock comes from.",
)
@knock_options
def knock(
    host: str | None,
    access: tuple[PortSpec, ...] | None,
    source: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
    config_path: str,
    spa_port: int | None,
    open_for: int | None,
    server_id: str | None,
    family: int | None,
) -> None:
    """Send one authorization packet to HOST and exit.

    There is no answer to wait for: the server stays silent whether it
    accepted the knock or not. Connect right after.
    """
    cfg = _load_client(config_path)
    _knock(cfg, host, access, source, spa_port, open_for, server_id, family or 0)


@cli.command()
@click.argument("host")
@click.argument("port", type=click.IntRange(1, 65535))
@click.option(
    "--connect-timeout",
    type=click.FloatRange(0.1, 60),
    default=5.0,
    show_default=True,
    help="Seconds to keep trying to connect.",
)
@knock_options
def proxy(
    host: str,
    port: int,
    connect_timeout: float,
    config_path: str,
    spa_port: int | None,
    open_for: int | None,
    server_id: str | None,
    family: int | None,
) -> None:
    """Knock for tcp/PORT on HOST, then relay stdin/stdout to it.

    For ssh: `ProxyCommand spa proxy --config alice.toml %h %p`.
    """
    from spa.client import KnockError, connect_retry, relay

    cfg = _load_client(config_path)
    target, _ = _knock(
        cfg,
        host,
        (PortSpec("tcp", port),),
        None,
        spa_port,
        open_for,
        server_id,
        family or 0,
    )
    try:
        sock = connect_retry(target.address, port, connect_timeout)
    except KnockError as e:
        raise click.ClickException(str(e)) from None
    relay(sock)


# -- status ------------------------------------------------------------------
class NotRunning(click.ClickException):
    """``spa status`` of a spad that is not running: exit status 3."""

    exit_code = 3


@cli.command()
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False),
    default=None,
    help=f"spad's state directory [from --config, else {DEFAULT_STATE_DIR}].",
)
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Server config to take the state directory from.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the raw status object.")
@click.pass_context
def status(
    ctx: click.Context, state_dir: str | None, config_path: str | None, as_json: bool
) -> None:
    """Show a running spad's live grants and drop counters.

    Exit status 0 if spad is running, 3 if it is not (like systemctl status),
    1 if its status cannot be read.
    """
    if state_dir is None and config_path:
        try:
            state_dir = str(spacfg.load_server_config(Path(config_path)).state_dir)
        except ConfigError as e:
            raise click.ClickException(str(e)) from None
    path = Path(state_dir or DEFAULT_STATE_DIR) / "status.json"
    try:
        st = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotRunning(
            f"{path}: no status file; spad is not running "
            "(or uses another state directory)"
        ) from None
    except (OSError, ValueError) as e:
        raise click.ClickException(f"{path}: {e}") from None
    alive = st.get("running") and _pid_alive(int(st.get("pid", 0)))
    if as_json:
        st["alive"] = bool(alive)
        click.echo(json.dumps(st, indent=2, sort_keys=True))
    else:
        _show_status(st, bool(alive))
    ctx.exit(0 if alive else NotRunning.exit_code)


def _show_status(st: dict[str, Any], alive: bool) -> None:
    now = time.time()
    age = now - float(st.get("updated", 0))
    state = "running" if alive else "not running"
    click.echo(
        f"spad {state} (pid {st.get('pid')}), {st.get('interface')} "
        f"udp/{st.get('port')}, firewall {st.get('firewall')}, "
        f"status {age:.0f}s old"
    )
    grants = [g for g in st.get("grants", []) if g["expires"] > now]
    click.echo(f"grants: {len(grants)}")
    for g in grants:
        left = g["expires"] - now
        click.echo(
            f"  {g['address']:<39} {g['proto']}/{g['port']:<5}  {left:6.1f}s left"
        )
    counters = st.get("counters", {})
    click.echo(
        f"accepted: {counters.get('accepted', 0)}  "
        + "  ".join(f"{k}={v}" for k, v in sorted(st.get("outcomes", {}).items()))
    )
    drops = {k: v for k, v in counters.items() if k.startswith("drop_") and v}
    click.echo(
        "dropped: " + (", ".join(f"{k[5:]}={v}" for k, v in drops.items()) or "none")
    )
    pcap = st.get("pcap") or {}
    if pcap:
        click.echo(
            f"kernel: received={pcap.get('received')} "
            f"dropped={pcap.get('dropped')} if_dropped={pcap.get('if_dropped')}"
        )


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- spad --------------------------------------------------------------------
@click.command(cls=SpaCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=DEFAULT_SERVER_CONFIG,
    show_default=True,
    help="Server config.",
)
@click.option("-i", "--interface", default=None, help="Capture interface [config].")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="UDP port to sniff [config, else 62201].",
)
@click.option(
    "--firewall",
    type=click.Choice(["nftables", "none"]),
    default=None,
    help="Firewall backend [config, else nftables].",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Replay state and status file [config].",
)
@click.option(
    "--pcap-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Read this capture instead of an interface, print a summary "
    "of the counters and exit. Firewall defaults to 'none' here.",
)
@click.option(
    "--clock",
    type=click.Choice(["real", "pcap"]),
    default="real",
    show_default=True,
    help="Judge packet age against the real clock "
    "or, for --pcap-file, against each frame's capture time.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="With --pcap-file: print the summary as a JSON object.",
)
@click.option("-v", "--verbose", count=True, help="More logging (-vv: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only.")
@click.version_option(package_name="spa")
def spad(
    config_path: str,
    interface: str | None,
    port: int | None,
    firewall: str | None,
    state_dir: str | None,
    pcap_file: str | None,
    clock: Literal["real", "pcap"],
    as_json: bool,
    verbose: int,
    quiet: bool,
) -> None:
    """The spa daemon: sniff the SPA port, verify knocks, open the firewall.

    Runs in the foreground and logs to stderr; SIGTERM or SIGINT stops it and
    removes the firewall state it owns (unless on_exit = "keep").
    """
    from dataclasses import replace

    from spa.daemon import Daemon, DaemonError, RunOptions

    if pcap_file is None:
        for given, what in ((as_json, "--json"), (clock == "pcap", "--clock pcap")):
            if given:
                raise click.UsageError(
                    f"{what} only applies to --pcap-file",
                    click.get_current_context(silent=True),
                )
    _setup_logging(verbose, quiet or (pcap_file is not None and not verbose))
    try:
        cfg = spacfg.load_server_config(Path(config_path))
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    if port is not None:
        cfg = replace(cfg, port=port)
    opts = RunOptions(
        interface=interface,
        pcap_file=pcap_file,
        firewall=firewall,
        state_dir=Path(state_dir) if state_dir else None,
        clock=clock,
    )
    if pcap_file is not None and not os.path.isfile(pcap_file):
        raise click.ClickException(f"{pcap_file}: no such file")
    daemon = Daemon(cfg, opts)
    try:
        rc = daemon.run()
    except DaemonError as e:
        raise click.ClickException(str(e)) from None
    if pcap_file is not None:
        summary = daemon.summary()
        if as_json:
            click.echo(json.dumps(summary, sort_keys=True))
        else:
            click.echo(" ".join(f"{k}={v}" for k, v in summary.items()))
    sys.exit(rc)
