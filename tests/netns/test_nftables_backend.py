"""The nftables backend against a real kernel, in network namespaces.

The backend runs in an interpreter inside the server namespace (see
conftest: libnftables talks to the namespace of its own process); traffic
comes from the client namespace; the kernel's view is read back with the
``nft`` command line tool, independently of the code under test.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Lab, NsPython

pytestmark = pytest.mark.netns

TABLE = "spa"
SPA_PORT = 62201


def backend(lab: Lab, *, start: bool = True, protected: str = "tcp/22") -> NsPython:
    """An interpreter in srv holding ``fw``, an NftablesFirewall."""
    py = lab.python(lab.srv)
    py.exec(
        f"""
        import ipaddress, logging
        logging.basicConfig(level=logging.DEBUG)
        from spa.config import parse_port_list
        from spa.firewall import Grant, make_firewall
        fw = make_firewall(
            "nftables", table={TABLE!r}, spa_port={SPA_PORT},
            protected=parse_port_list({protected!r}),
        )

        def grant(addr, proto, port, seconds):
            fw.allow([Grant(ipaddress.ip_address(addr), proto, port, seconds)])

        def grants():
            return sorted(
                (str(g.address), g.proto, g.port, g.seconds) for g in fw.list()
            )
        """
    )
    if start:
        assert py.eval("fw.start()") == []
    return py


def elements(lab: Lab, family: int) -> list[tuple[str, str, int, int]]:
    """(address, proto, port, expires) of allow4/allow6 as ``nft -j`` shows it."""
    objs = lab.nft_json(lab.srv, "list", "set", "inet", TABLE, f"allow{family}")
    found = []
    for obj in objs:
        for raw in obj.get("set", {}).get("elem", []):
            elem = raw["elem"]
            addr, proto, port = elem["val"]["concat"]
            found.append((addr, proto, port, elem["expires"]))
    return sorted(found)


def tables(lab: Lab) -> list[tuple[str, str]]:
    objs = lab.nft_json(lab.srv, "list", "tables")
    return [(o["table"]["family"], o["table"]["name"]) for o in objs if "table" in o]


def addrs(lab: Lab, family: int) -> tuple[Any, Any]:
    """(client address, server address) of one family."""
    return (lab.cli4, lab.srv4) if family == 4 else (lab.cli6, lab.srv6)


def sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.monotonic()))


def test_start_drops_protected_port(lab: Lab) -> None:
    lab.tcp_listen(lab.srv, 22)
    assert lab.tcp_connect(lab.cli, lab.srv4, 22), "lab broken: no table, no drop"
    assert lab.tcp_connect(lab.cli, lab.srv6, 22)

    backend(lab)

    assert not lab.tcp_connect(lab.cli, lab.srv4, 22)
    assert not lab.tcp_connect(lab.cli, lab.srv6, 22)
    listing = lab.run(lab.srv, ["nft", "list", "table", "inet", TABLE]).stdout
    for text in (
        "set allow4",
        "set allow6",
        "set protected",
        "hook input priority filter - 10",
        "hook forward priority filter - 10",
        f"udp dport {SPA_PORT} drop",
    ):
        assert text in listing


@pytest.mark.parametrize("family", [4, 6])
def test_grant_opens_then_expires_keeping_established(lab: Lab, family: int) -> None:
    cli, srv = addrs(lab, family)
    lab.tcp_listen(lab.srv, 22)
    fw = backend(lab)
    assert not lab.tcp_connect(lab.cli, srv, 22)

    fw.exec(f"grant({str(cli)!r}, 'tcp', 22, 3)")
    granted = time.monotonic()

    assert lab.tcp_connect(lab.cli, srv, 22, timeout=1.0)
    assert [e[:3] for e in elements(lab, family)] == [(str(cli), "tcp", 22)]
    held = lab.python(lab.cli)
    held.exec(f"import socket; s = socket.create_connection(({str(srv)!r}, 22), 2)")

    sleep_until(granted + 4.0)
    assert elements(lab, family) == []
    assert not lab.tcp_connect(lab.cli, srv, 22)
    assert held.eval("s.sendall(b'still here') or s.recv(64).decode()") == (
        "still here"
    )


def test_second_grant_extends_never_shortens(lab: Lab) -> None:
    fw = backend(lab)
    cli = str(lab.cli4)

    fw.exec(f"grant({cli!r}, 'tcp', 22, 10)")
    [(_, _, _, first)] = elements(lab, 4)
    assert 8 <= first <= 10

    fw.exec(f"grant({cli!r}, 'tcp', 22, 30)")
    [(addr, proto, port, longer)] = elements(lab, 4)
    assert (addr, proto, port) == (cli, "tcp", 22)
    assert 28 <= longer <= 30

    fw.exec(f"grant({cli!r}, 'tcp', 22, 5)")
    [(_, _, _, kept)] = elements(lab, 4)
    assert 27 <= kept <= 30
    [(_, _, _, seconds)] = fw.eval("grants()")
    assert 27 <= seconds <= 30


def test_kernel_expires_grant_after_sigkill(lab: Lab) -> None:
    lab.tcp_listen(lab.srv, 22)
    fw = backend(lab)
    fw.exec(
        f"""
        grant({str(lab.cli4)!r}, 'tcp', 22, 3)
        grant({str(lab.cli6)!r}, 'tcp', 22, 3)
        """
    )
    granted = time.monotonic()
    fw.kill()

    assert lab.tcp_connect(lab.cli, lab.srv4, 22)
    assert lab.tcp_connect(lab.cli, lab.srv6, 22)
    sleep_until(granted + 4.0)
    assert ("inet", TABLE) in tables(lab), "the table outlives its owner"
    assert elements(lab, 4) == elements(lab, 6) == []
    assert not lab.tcp_connect(lab.cli, lab.srv4, 22)
    assert not lab.tcp_connect(lab.cli, lab.srv6, 22)


def test_start_adopts_grants_of_a_killed_run(lab: Lab) -> None:
    lab.tcp_listen(lab.srv, 22)
    first = backend(lab)
    first.exec(
        f"""
        grant({str(lab.cli4)!r}, 'tcp', 22, 30)
        grant({str(lab.cli6)!r}, 'tcp', 22, 30)
        grant({str(lab.cli6)!r}, 'udp', 53, 1)
        """
    )
    first.kill()
    time.sleep(1.5)

    second = backend(lab, start=False)
    adopted = sorted(
        tuple(a)
        for a in second.eval(
            "[(str(g.address), g.proto, g.port, g.seconds) for g in fw.start()]"
        )
    )
    assert [a[:3] for a in adopted] == [
        (str(lab.cli4), "tcp", 22),
        (str(lab.cli6), "tcp", 22),
    ]
    assert all(25 <= a[3] <= 29 for a in adopted)
    assert [e[:3] for e in elements(lab, 4)] == [(str(lab.cli4), "tcp", 22)]
    assert [e[:3] for e in elements(lab, 6)] == [(str(lab.cli6), "tcp", 22)]
    assert lab.tcp_connect(lab.cli, lab.srv4, 22)
    assert lab.tcp_connect(lab.cli, lab.srv6, 22)

    # Adopting again (a restart of a clean run) still leaves one of each.
    assert len(second.eval("fw.start()")) == 2
    assert len(elements(lab, 4)) == len(elements(lab, 6)) == 1
    listing = lab.run(lab.srv, ["nft", "list", "table", "inet", TABLE]).stdout
    assert listing.count("@allow4 accept") == 2, "one rule per chain, no more"


def test_stop(lab: Lab) -> None:
    lab.tcp_listen(lab.srv, 22)
    fw = backend(lab)
    fw.exec(f"grant({str(lab.cli4)!r}, 'tcp', 22, 60)")

    fw.exec("fw.stop(keep=True)")
    assert ("inet", TABLE) in tables(lab)
    assert len(elements(lab, 4)) == 1
    assert not lab.tcp_connect(lab.cli, lab.srv6, 22), "still protected"

    fw.exec("fw.stop(keep=False)")
    assert ("inet", TABLE) not in tables(lab)
    assert fw.eval("grants()") == []
    assert lab.tcp_connect(lab.cli, lab.srv6, 22)


@pytest.mark.parametrize("family", [4, 6])
def test_spa_port_is_silent(lab: Lab, family: int) -> None:
    _, srv = addrs(lab, family)
    assert lab.udp_probe(lab.cli, srv, SPA_PORT) == "refused", "probe is blind"

    fw = backend(lab)
    assert lab.udp_probe(lab.cli, srv, SPA_PORT) == "silent"

    fw.exec("fw.stop(keep=False)")
    assert lab.udp_probe(lab.cli, srv, SPA_PORT) == "refused"


def test_ten_thousand_grants(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    fw = backend(lab)
    fw.exec(
        """
        import time
        logging.getLogger("spa.firewall").setLevel(logging.INFO)

        def bulk():
            t0 = time.monotonic()
            for batch in range(20):
                fw.allow([
                    Grant(
                        ipaddress.IPv4Address(0xC6120000 + i)  # 198.18.0.0/15
                        if i % 2
                        else ipaddress.IPv6Address((0x20010DB8 << 96) + i),
                        "tcp", 22, 120,
                    )
                    for i in range(batch * 500, batch * 500 + 500)
                ])
            return time.monotonic() - t0
        """
    )
    elapsed = fw.eval("bulk()", timeout=120)
    with capsys.disabled():
        print(f"\n  10,000 nftables grants in 20 batches of 500: {elapsed:.2f}s")
    assert elapsed < 60
    assert len(fw.eval("fw.list()")) == 10_000
    assert len(elements(lab, 4)) == len(elements(lab, 6)) == 5_000


def test_check_reports_foreign_drops(lab: Lab) -> None:
    fw = backend(lab)
    assert fw.eval("fw.check()") == []

    lab.run(
        lab.srv,
        ["nft", "add table inet foreign; "
         "add chain inet foreign input "
         "{ type filter hook input priority 0; policy drop; }; "
         "add table ip other; "
         "add chain ip other deny; add rule ip other deny reject; "
         "add chain ip other routed { type filter hook forward priority 0; }; "
         "add rule ip other routed tcp dport 80 jump deny; "
         "add table ip6 harmless; "
         "add chain ip6 harmless input { type filter hook input priority 0; }; "
         "add rule ip6 harmless input tcp dport 22 accept"],
    )  # fmt: skip
    problems = fw.eval("fw.check()")
    assert len(problems) == 2, problems
    foreign = next(p for p in problems if p.startswith("inet foreign input "))
    assert "policy drop" in foreign and "final" in foreign
    other = next(p for p in problems if p.startswith("ip other routed "))
    assert "rules that reject (in deny)" in other


def test_allow_recreates_a_table_flushed_by_hand(lab: Lab) -> None:
    lab.tcp_listen(lab.srv, 22)
    fw = backend(lab)
    fw.exec(f"grant({str(lab.cli6)!r}, 'tcp', 22, 60)")
    lab.run(lab.srv, ["nft", "flush", "ruleset"])
    assert lab.tcp_connect(lab.cli, lab.srv4, 22), "nothing protects port 22 now"

    fw.exec(f"grant({str(lab.cli4)!r}, 'udp', 53, 60)")

    assert not lab.tcp_connect(lab.cli, lab.srv4, 22), "protection is back"
    assert lab.tcp_connect(lab.cli, lab.srv6, 22), "remembered grant is back"
    assert [e[:3] for e in elements(lab, 4)] == [(str(lab.cli4), "udp", 53)]
    said = [line for line in log_lines(fw) if "vanished" in line]
    assert said == [
        f"WARNING:spa.firewall.nftables:nftables table inet {TABLE} vanished; "
        "rebuilt with 2 grants"
    ]
    assert not [line for line in log_lines(fw) if line.startswith("ERROR")]


def log_lines(py: NsPython) -> list[str]:
    """What the interpreter's logging wrote (basicConfig: LEVEL:name:message)."""
    return py.log.read_text().splitlines()


def test_repair_rebuilds_a_vanished_table_with_live_grants(lab: Lab) -> None:
    lab.tcp_listen(lab.srv, 22)
    fw = backend(lab)
    fw.exec(f"grant({str(lab.cli4)!r}, 'tcp', 22, 60)")
    fw.exec(f"grant({str(lab.cli6)!r}, 'udp', 53, 1)")
    assert fw.eval("fw.repair()") is False, "nothing to repair"
    time.sleep(1.1)  # the udp/53 grant has run out

    lab.run(lab.srv, ["nft", "flush", "ruleset"])
    assert lab.tcp_connect(lab.cli, lab.srv6, 22), "fails open until repaired"
    assert fw.eval("fw.repair()") is True

    assert not lab.tcp_connect(lab.cli, lab.srv6, 22), "protection is back"
    assert lab.tcp_connect(lab.cli, lab.srv4, 22), "the live grant is back"
    assert [e[:3] for e in elements(lab, 4)] == [(str(lab.cli4), "tcp", 22)]
    assert elements(lab, 6) == []
    assert lab.udp_probe(lab.cli, lab.srv4, SPA_PORT) == "silent"
    assert fw.eval("fw.repair()") is False
    said = [line for line in log_lines(fw) if "vanished" in line]
    assert said == [
        f"WARNING:spa.firewall.nftables:nftables table inet {TABLE} vanished; "
        "rebuilt with 1 grants"
    ]


def test_a_failed_transaction_is_reported_on_one_line(lab: Lab) -> None:
    fw = backend(lab)
    bad = (
        "add element inet nosuch allow4 { 192.0.2.1 . tcp . 22 }\n"
        "add chain inet spa x { type filter hook input priority 0; policy dro; }\n"
    )
    fw.exec(
        f"""
        try:
            fw.ctx.run({bad!r})
        except Exception as e:
            failure = str(e)
        """
    )
    failure = fw.eval("failure")
    assert "\n" not in failure
    assert failure.startswith("nft failed: ")
    assert "No such file or directory" in failure and "syntax error" in failure
    errors = [line for line in log_lines(fw) if line.startswith("ERROR")]
    logged = failure.replace("nft failed:", "nft failed (rc=-1):")
    assert errors == [f"ERROR:spa.firewall.nftables:{logged}"]
    assert not [line for line in log_lines(fw) if "^" in line]
