"""The nftables backend, through libnftables (no process spawned per knock).

spad owns one table, ``inet <table>``::

    table inet spa {
        set allow4 { type ipv4_addr . inet_proto . inet_service; flags timeout; }
        set allow6 { type ipv6_addr . inet_proto . inet_service; flags timeout; }
        set protected { type inet_proto . inet_service; elements = { tcp . 22 } }
        chain input {
            type filter hook input priority filter - 10; policy accept;
            ct state established,related accept
            ip saddr . meta l4proto . th dport @allow4 accept
            ip6 saddr . meta l4proto . th dport @allow6 accept
            meta l4proto . th dport @protected drop
            udp dport 62201 drop
        }
        chain forward { ... the same, without the SPA port rule ... }
    }

A grant is an element of ``allow4``/``allow6`` with a kernel timeout, so it
lapses on time even if spad is killed.  The last input rule keeps the SPA
port silent: nothing listens there, and without the rule the kernel would
answer each knock with an ICMP port unreachable (libpcap still sees the
packet, as AF_PACKET taps it before netfilter).

The forward chain covers traffic routed to containers or VMs (for example
ports that Docker publishes).  Destination NAT happens in prerouting, before
both chains, so a port is matched by its value *after* DNAT: to protect a
container's service published as host port 8080 to container port 80, list
``tcp/80`` in ``protected`` and grant ``tcp/80``.

Every ``allow()``, ``start()`` and ``stop()`` is one ``nft_run_cmd_from_buffer``
call, which libnftables sends as one netlink batch: one atomic transaction.
Only validated values (``ipaddress`` objects, ints, the literals tcp/udp and a
table name matching ``[A-Za-z0-9_]{1,32}``) enter the command text.
"""

from __future__ import annotations

import builtins
import ipaddress
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final

from spa.config import TABLE_RE, PortSpec
from spa.firewall.base import (
    Firewall,
    FirewallError,
    Grant,
    GrantKey,
    Proto,
    merge_grants,
)

log = logging.getLogger(__name__)

LIBNAME: Final = "libnftables.so.1"

_CDEF: Final = """
struct nft_ctx;
struct nft_ctx *nft_ctx_new(uint32_t flags);
void nft_ctx_free(struct nft_ctx *ctx);
int nft_ctx_buffer_output(struct nft_ctx *ctx);
int nft_ctx_buffer_error(struct nft_ctx *ctx);
const char *nft_ctx_get_output_buffer(struct nft_ctx *ctx);
const char *nft_ctx_get_error_buffer(struct nft_ctx *ctx);
void nft_ctx_output_set_flags(struct nft_ctx *ctx, unsigned int flags);
int nft_run_cmd_from_buffer(struct nft_ctx *nft, const char *buf);
"""
NFT_CTX_DEFAULT: Final = 0
NFT_CTX_OUTPUT_JSON: Final = 1 << 4

_PROTO_NUMBERS: Final[dict[object, Proto]] = {
    "tcp": "tcp",
    "udp": "udp",
    6: "tcp",
    17: "udp",
    "6": "tcp",
    "17": "udp",
}
_HOOKS: Final = ("input", "forward")
_FAMILIES: Final = ("ip", "ip6", "inet")
_PRUNE_INTERVAL: Final = 10.0

_lib_lock = threading.Lock()
_lib_cache: tuple[Any, Any] | None = None


def _libnftables() -> tuple[Any, Any]:
    """(ffi, lib) for libnftables, loaded once per process (cffi ABI mode)."""
    global _lib_cache
    with _lib_lock:
        if _lib_cache is None:
            import cffi  # type: ignore[import-untyped,unused-ignore]

            ffi = cffi.FFI()
            ffi.cdef(_CDEF)
            try:
                lib = ffi.dlopen(LIBNAME)
            except OSError as exc:
                raise FirewallError(
                    f"cannot load {LIBNAME} ({exc}); install libnftables "
                    "(Debian: apt-get install libnftables1)"
                ) from None
            _lib_cache = (ffi, lib)
        return _lib_cache


def _summary(commands: str, limit: int = 6, width: int = 300) -> str:
    """The first commands of a transaction on one line, for a log message.

    They are joined with ``; `` (nft's own separator) and cut short.
    """
    lines = commands.strip().splitlines()
    text = "; ".join(lines[:limit])
    if len(text) > width:
        text = text[: width - 4] + " ..."
    if len(lines) > limit:
        text += f" ... ({len(lines)} commands in all)"
    return text


def _one_line(err: str) -> str:
    """nft's error report on one line: its ``Error:`` messages, in order.

    libnftables follows each message with the command it refers to and a
    line of carets under the culprit; those are left out (and with input
    from a buffer they may even show the wrong command).
    """
    messages: list[str] = []
    for line in err.splitlines():
        _, sep, message = line.partition("Error: ")
        message = message.strip()
        if sep and message and message not in messages:
            messages.append(message)
    if messages:
        return "; ".join(messages)
    return " ".join(line.strip() for line in err.splitlines() if line.strip())


class NftContext:
    """One long-lived libnftables context; each call is one transaction.

    A context is bound to the network namespace of the process when it first
    talks to the kernel.  Calls are serialised by a lock.
    """

    def __init__(self) -> None:
        self._ffi, self._lib = _libnftables()
        raw = self._lib.nft_ctx_new(NFT_CTX_DEFAULT)
        if raw == self._ffi.NULL:
            raise FirewallError("nft_ctx_new failed")
        self._ctx: Any = self._ffi.gc(raw, self._lib.nft_ctx_free)
        if self._lib.nft_ctx_buffer_output(self._ctx) or self._lib.nft_ctx_buffer_error(
            self._ctx
        ):
            raise FirewallError("cannot buffer libnftables output")
        self._lock = threading.Lock()

    def _text(self, ptr: Any) -> str:
        if ptr == self._ffi.NULL:
            return ""
        return bytes(self._ffi.string(ptr)).decode("utf-8", "replace")

    def _call(self, commands: str, flags: int, quiet: bool = False) -> str:
        if "\0" in commands:
            raise FirewallError("nft command contains a NUL byte")
        with self._lock:
            if self._ctx is None:
                raise FirewallError("libnftables context is closed")
            self._lib.nft_ctx_output_set_flags(self._ctx, flags)
            rc = self._lib.nft_run_cmd_from_buffer(self._ctx, commands.encode())
            out = self._text(self._lib.nft_ctx_get_output_buffer(self._ctx))
            err = self._text(self._lib.nft_ctx_get_error_buffer(self._ctx))
        if rc != 0:
            reason = _one_line(err) or f"rc={rc}"
            if not quiet:
                log.error("nft failed (rc=%d): %s", rc, reason)
            log.debug("the failed transaction: %s", _summary(commands))
            raise FirewallError(f"nft failed: {reason}")
        if err.strip():
            log.debug("nft said: %s", _one_line(err))
        return out

    def run(self, commands: str, *, quiet: bool = False) -> str:
        """Run commands (text, one per line) as one transaction.

        A failure raises FirewallError with nft's messages on one line, and
        is logged as one ERROR line unless ``quiet`` (the caller decides).
        """
        return self._call(commands, NFT_CTX_DEFAULT, quiet)

    def query(self, command: str) -> builtins.list[dict[str, Any]]:
        """Run a ``list`` command; return the objects of its JSON output."""
        out = self._call(command, NFT_CTX_OUTPUT_JSON)
        try:
            doc = json.loads(out)
            objects = doc["nftables"]
        except (ValueError, KeyError, TypeError):
            raise FirewallError(f"cannot parse the JSON output of: {command}") from None
        if not isinstance(objects, list):
            raise FirewallError(f"unexpected JSON output of: {command}")
        return [o for o in objects if isinstance(o, dict)]

    def close(self) -> None:
        with self._lock:
            self._ctx = None


def _timeout_ms(seconds: float) -> int:
    """nftables takes whole ms; never less than one second."""
    return max(1000, round(seconds * 1000))


def _parse_element(raw: object, family: int) -> tuple[GrantKey, float] | None:
    """One set element of a JSON listing -> (key, seconds left).

    Seconds left is ``math.inf`` for an element without a timeout, and the
    kernel reports it in whole seconds (rounded down).
    """
    expires: object = None
    timeout: object = None
    val = raw
    if isinstance(raw, dict) and isinstance(raw.get("elem"), dict):
        val = raw["elem"].get("val")
        expires = raw["elem"].get("expires")
        timeout = raw["elem"].get("timeout")
    if not isinstance(val, dict) or not isinstance(val.get("concat"), list):
        return None
    parts = val["concat"]
    if len(parts) != 3:
        return None
    try:
        addr = ipaddress.ip_address(str(parts[0]))
        proto = _PROTO_NUMBERS[parts[1]]
        port = int(parts[2])
    except (ValueError, KeyError, TypeError):
        return None
    if addr.version != family or not 1 <= port <= 65535:
        return None
    if isinstance(expires, int | float):
        left = float(expires)
    elif isinstance(timeout, int | float):
        left = float(timeout)
    else:
        left = math.inf
    return (addr, proto, port), left


def _walk(node: object) -> Iterator[tuple[str, object]]:
    """Every (key, value) pair in a JSON tree, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


class NftablesFirewall(Firewall):
    """Grants as nftables set elements with kernel timeouts.

    "Never shorten" is computed from an in-memory map of deadlines
    (monotonic clock) rather than from the kernel's ``expires``: spad is the
    only writer of its table, ``start()`` seeds the map from the kernel, and
    reading the sets back on every batch would cost a dump of up to tens of
    thousands of elements per knock (and JSON reports whole seconds only).
    Each grant is written with ``max(asked, remembered time left)``, so a
    stale map can only err towards a time that was granted before.
    """

    name = "nftables"

    def __init__(
        self,
        *,
        table: str = "spa",
        spa_port: int = 62201,
        protected: Iterable[PortSpec] = (PortSpec("tcp", 22),),
        clock: Callable[[], float] = time.monotonic,
        context: NftContext | None = None,
    ) -> None:
        if not isinstance(table, str) or TABLE_RE.fullmatch(table) is None:
            raise FirewallError(
                f"table name must be 1..32 of A-Z a-z 0-9 _, got {table!r}"
            )
        if type(spa_port) is not int or not 1 <= spa_port <= 65535:
            raise FirewallError(f"SPA port must be 1..65535, got {spa_port!r}")
        specs = tuple(dict.fromkeys(protected))
        for spec in specs:
            if not isinstance(spec, PortSpec):
                raise FirewallError(f"protected ports must be PortSpecs, got {spec!r}")
        self.table = table
        self.spa_port = spa_port
        self.protected = specs
        self._clock = clock
        self._ctx = context
        self._lock = threading.RLock()
        self._deadlines: dict[GrantKey, float] = {}
        self._last_prune = 0.0

    # -- plumbing

    @property
    def ctx(self) -> NftContext:
        if self._ctx is None:
            self._ctx = NftContext()
        return self._ctx

    def _table_exists(self) -> bool:
        for obj in self.ctx.query("list tables"):
            t = obj.get("table")
            if (
                isinstance(t, dict)
                and t.get("family") == "inet"
                and t.get("name") == self.table
            ):
                return True
        return False

    def _read_sets(self) -> dict[GrantKey, float]:
        """Elements of allow4/allow6 in the kernel, with seconds left."""
        found: dict[GrantKey, float] = {}
        families = {"allow4": 4, "allow6": 6}
        for obj in self.ctx.query(f"list table inet {self.table}"):
            s = obj.get("set")
            if not isinstance(s, dict) or s.get("name") not in families:
                continue
            if s.get("family") != "inet" or s.get("table") != self.table:
                continue
            family = families[str(s["name"])]
            for raw in s.get("elem", []) or []:
                parsed = _parse_element(raw, family)
                if parsed is None:
                    log.warning("ignoring an element of %s: %r", s["name"], raw)
                    continue
                key, left = parsed
                found[key] = max(found.get(key, 0.0), left)
        return found

    def _elements(self, items: Iterable[tuple[GrantKey, int]], family: int) -> str:
        return ", ".join(
            f"{addr} . {proto} . {port} timeout {ms}ms"
            for (addr, proto, port), ms in items
            if addr.version == family
        )

    def _table_text(self, grants: dict[GrantKey, int]) -> str:
        """The whole table, with ``grants`` (key -> timeout ms) as elements."""
        t = self.table
        lines = [f"table inet {t} {{"]
        for name, family, addr_type in (
            ("allow4", 4, "ipv4_addr"),
            ("allow6", 6, "ipv6_addr"),
        ):
            lines += [
                f"  set {name} {{",
                f"    type {addr_type} . inet_proto . inet_service",
                "    flags timeout",
            ]
            elements = self._elements(grants.items(), family)
            if elements:
                lines.append(f"    elements = {{ {elements} }}")
            lines.append("  }")
        lines += ["  set protected {", "    type inet_proto . inet_service"]
        if self.protected:
            ports = ", ".join(f"{p.proto} . {p.port}" for p in self.protected)
            lines.append(f"    elements = {{ {ports} }}")
        lines.append("  }")
        for chain in _HOOKS:
            lines += [
                f"  chain {chain} {{",
                f"    type filter hook {chain} priority filter - 10; policy accept;",
                "    ct state established,related accept",
                "    ip saddr . meta l4proto . th dport @allow4 accept",
                "    ip6 saddr . meta l4proto . th dport @allow6 accept",
                "    meta l4proto . th dport @protected drop",
            ]
            if chain == "input":
                lines.append(f"    udp dport {self.spa_port} drop")
            lines.append("  }")
        # Before defragmentation (priority -400): a first fragment to the SPA
        # port that reached the reassembly queue would, once it timed out,
        # draw an ICMP "reassembly time exceeded". Dropped here, it draws
        # nothing and the flood never reaches conntrack. libpcap has seen it
        # already.
        lines += [
            "  chain knock {",
            "    type filter hook prerouting priority -450; policy accept;",
            f"    fib daddr type local udp dport {self.spa_port} drop",
            "  }",
        ]
        lines.append("}")
        return "\n".join(lines) + "\n"

    def _live(self, now: float) -> dict[GrantKey, int]:
        """Remembered grants still open, as key -> timeout ms."""
        return {
            k: _timeout_ms(d - now) for k, d in self._deadlines.items() if d - now >= 1
        }

    def _prune(self, now: float) -> None:
        if now - self._last_prune >= _PRUNE_INTERVAL:
            self._deadlines = {k: d for k, d in self._deadlines.items() if d > now}
            self._last_prune = now

    # -- the Firewall interface

    def start(self) -> builtins.list[Grant]:
        """Create the table, or adopt the grants of a crashed run.

        An existing table is replaced in one transaction by a fresh one that
        holds its surviving allow4/allow6 elements with the time they had
        left (in whole seconds, rounded down; an element with less than a
        second left, or with no timeout at all, is not carried over).
        """
        with self._lock:
            adopted: dict[GrantKey, int] = {}
            commands = ""
            if self._table_exists():
                for key, left in self._read_sets().items():
                    if math.isinf(left):
                        log.warning("dropping %s %s/%d: it had no timeout", *key)
                    elif left >= 1:
                        adopted[key] = _timeout_ms(left)
                commands = f"delete table inet {self.table}\n"
                log.warning(
                    "table inet %s was left by a previous run; replacing it, "
                    "adopting %d grant(s)",
                    self.table,
                    len(adopted),
                )
            self.ctx.run(commands + self._table_text(adopted))
            now = self._clock()
            self._deadlines = {k: now + ms / 1000 for k, ms in adopted.items()}
            self._last_prune = now
            log.info(
                "nftables table inet %s ready: protected %s, SPA port udp/%d",
                self.table,
                ", ".join(str(p) for p in self.protected) or "nothing",
                self.spa_port,
            )
            return [
                Grant(addr, proto, port, ms / 1000)
                for (addr, proto, port), ms in adopted.items()
            ]

    def allow(self, grants: Sequence[Grant]) -> None:
        """Open the grants in one transaction.

        Each element is written as ``add`` + ``delete`` + ``add ... timeout``:
        on kernels that update the timeout of an existing element on ``add``
        and on kernels that ignore it alike, the result is one element with
        exactly the new timeout, and at no point one without a timeout.
        """
        merged = merge_grants(grants)
        if not merged:
            return
        with self._lock:
            now = self._clock()
            self._prune(now)
            final = {
                key: _timeout_ms(max(secs, self._deadlines.get(key, now) - now))
                for key, secs in merged.items()
            }
            commands = self._allow_text(final)
            try:
                self.ctx.run(commands, quiet=True)
            except FirewallError as exc:
                if self._table_exists():
                    log.error("%s", exc)
                    raise
                self._rebuild(now, commands, final)
            for key, ms in final.items():
                self._deadlines[key] = now + ms / 1000
            for (addr, proto, port), ms in final.items():
                log.debug("allowed %s %s/%d for %.1fs", addr, proto, port, ms / 1000)

    def _allow_text(self, final: dict[GrantKey, int]) -> str:
        t = self.table
        lines: builtins.list[str] = []
        for name, family in (("allow4", 4), ("allow6", 6)):
            timed = self._elements(final.items(), family)
            if not timed:
                continue
            bare = ", ".join(
                f"{addr} . {proto} . {port}"
                for (addr, proto, port) in final
                if addr.version == family
            )
            lines += [
                f"add element inet {t} {name} {{ {timed} }}",
                f"delete element inet {t} {name} {{ {bare} }}",
                f"add element inet {t} {name} {{ {timed} }}",
            ]
        return "\n".join(lines) + "\n"

    def _rebuild(
        self, now: float, then: str = "", adding: Iterable[GrantKey] = ()
    ) -> None:
        """Recreate the vanished table with the remembered live grants.

        ``then`` runs in the same transaction, once the table is back (the
        grants ``adding`` that were being opened).  Logs one WARNING line; a
        failure is left to the caller to report.
        """
        live = self._live(now)
        self.ctx.run(self._table_text(live) + then, quiet=True)
        log.warning(
            "nftables table inet %s vanished; rebuilt with %d grants",
            self.table,
            len(live.keys() | set(adding)),
        )

    def repair(self) -> bool:
        """Recreate the table if it has gone (``nft flush ruleset``, a restart
        of nftables.service, another process deleting it); True if it had.

        Costs one ``list tables`` (no set elements) when all is well.
        """
        with self._lock:
            if self._table_exists():
                return False
            now = self._clock()
            self._prune(now)
            self._rebuild(now)
            return True

    def list(self) -> builtins.list[Grant]:
        """Grants in the kernel now; ``seconds`` left in whole seconds.

        An element without a timeout (never written by spad) shows as
        ``math.inf``.
        """
        with self._lock:
            if not self._table_exists():
                return []
            return [
                Grant(addr, proto, port, left)
                for (addr, proto, port), left in self._read_sets().items()
            ]

    def stop(self, keep: bool) -> None:
        """Delete the table, or with ``keep`` leave it to expire on its own.

        With ``keep`` the protected-port drop rules stay as well, so ports
        remain closed to everyone else while the grants run out.
        """
        with self._lock:
            if keep:
                log.info(
                    "leaving table inet %s in place; its grants expire on their own",
                    self.table,
                )
                return
            if self._table_exists():
                self.ctx.run(f"delete table inet {self.table}\n")
                log.info("deleted table inet %s", self.table)
            self._deadlines.clear()

    def close(self) -> None:
        """Free the libnftables context (the kernel state is not touched)."""
        with self._lock:
            if self._ctx is not None:
                self._ctx.close()
                self._ctx = None

    def check(self) -> builtins.list[str]:
        """Base chains elsewhere that may drop what spad allows.

        nftables runs every base chain on a hook; an accept ends only the
        chain it is in, while a drop (or reject) in any of them is final.  So
        a packet spad accepts is still dropped by another table's input or
        forward chain that drops it, whatever the priorities.
        """
        with self._lock:
            ruleset = self.ctx.query("list ruleset")
        chains: dict[tuple[str, str, str], dict[str, Any]] = {}
        rules: dict[tuple[str, str, str], builtins.list[object]] = {}
        for obj in ruleset:
            if isinstance(obj.get("chain"), dict):
                c = obj["chain"]
                chains[
                    (str(c.get("family")), str(c.get("table")), str(c.get("name")))
                ] = c
            elif isinstance(obj.get("rule"), dict):
                r = obj["rule"]
                key = (str(r.get("family")), str(r.get("table")), str(r.get("chain")))
                rules.setdefault(key, []).append(r.get("expr"))

        problems: builtins.list[str] = []
        for (family, table, name), chain in sorted(chains.items()):
            hook = chain.get("hook")
            if hook not in _HOOKS or family not in _FAMILIES:
                continue
            if family == "inet" and table == self.table:
                continue
            reasons: builtins.list[str] = []
            if chain.get("policy") == "drop":
                reasons.append("policy drop")
            reasons += self._drops(family, table, name, rules, set())
            if reasons:
                problems.append(
                    f"{family} {table} {name} ({hook} hook, priority "
                    f"{chain.get('prio')}): {', '.join(reasons)}; a drop in any "
                    "base chain is final, so traffic spa allows is dropped there "
                    "unless that chain accepts it too"
                )
        problems += _legacy_iptables()
        return problems

    def _drops(
        self,
        family: str,
        table: str,
        chain: str,
        rules: dict[tuple[str, str, str], builtins.list[object]],
        seen: set[str],
    ) -> builtins.list[str]:
        """What in a chain (and the chains it jumps to) drops or rejects."""
        seen.add(chain)
        found: builtins.list[str] = []
        via = "" if len(seen) == 1 else f" (in {chain})"
        for expr in rules.get((family, table, chain), []):
            for key, value in _walk(expr):
                what = ""
                if key == "drop":
                    what = "rules that drop"
                elif key == "reject":
                    what = "rules that reject"
                elif key == "xt" and isinstance(value, dict):
                    target = str(value.get("name", "")).upper()
                    if value.get("type") == "target" and target in ("DROP", "REJECT"):
                        what = f"rules with target {target}"
                elif key in ("jump", "goto") and isinstance(value, dict):
                    target = str(value.get("target"))
                    if target not in seen:
                        found += self._drops(family, table, target, rules, seen)
                if what and what + via not in found:
                    found.append(what + via)
        return found


def _legacy_iptables() -> builtins.list[str]:
    """Legacy (non-nftables) iptables tables cannot be inspected from here."""
    problems = []
    for proc, tool in (
        ("/proc/net/ip_tables_names", "iptables-legacy"),
        ("/proc/net/ip6_tables_names", "ip6tables-legacy"),
    ):
        try:
            with open(proc, encoding="ascii") as fh:
                names = fh.read().split()
        except OSError:
            continue
        if "filter" in names:
            problems.append(
                f"legacy {tool.split('-')[0]} filter table present: its DROP and "
                f"REJECT rules are final as well; inspect them with {tool} -S"
            )
    return problems
