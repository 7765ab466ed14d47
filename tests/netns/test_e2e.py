"""spa end to end: real spad, real libpcap capture, real nftables, real knocks.

Each test builds its own lab (server and client namespaces on a veth pair,
IPv4 and IPv6; see conftest.py), runs the installed ``spad`` in the server
namespace and the installed ``spa`` in the client namespace, and judges by
what a user would see: TCP connects that succeed or time out, elements in
the namespace's nftables sets, and packets on the wire.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from spa import protocol as P
from tests import frames as fr
from tests.netns.conftest import Lab
from tests.netns.spad import (
    SPA,
    SPA_PORT,
    SPAD,
    TABLE,
    Deployment,
    _is_housekeeping,
    _knock_verdicts,
    agent,
    capture_out,
    set_static_neighbours,
    wait_listening,
)
from tests.pcapfile import read_pcap

pytestmark = pytest.mark.netns

@pytest.mark.parametrize("family", [4, 6])
def test_knock_opens_for_the_sender_then_closes(
    lab: Lab, deploy: Callable[..., Deployment], family: int
) -> None:
    srv = str(lab.srv4 if family == 4 else lab.srv6)
    open_for = 3
    lab.tcp_listen(lab.srv, 22)
    d = deploy()
    d.start()
    cli = agent(lab, lab.cli)

    assert not lab.tcp_connect(lab.cli, srv, 22, timeout=0.5)
    assert d.elements() == []

    d.knock(srv, f"-{family}", "-A", "tcp/22", "--open-for", str(open_for))
    waited = cli.eval(f"wait_open({srv!r}, 22, 1.0)")
    assert waited is not None, f"not open within 1 s\n{d.log_text()}"
    cli_addr = str(lab.cli4 if family == 4 else lab.cli6)
    assert d.elements() == [(cli_addr, "tcp", 22)]
    assert f"granted alice: {cli_addr} tcp/22 for {open_for}s" in d.log_text()

    # a connection made inside the window outlives it (conntrack)
    cli.exec(f"keep = socket.create_connection(({srv!r}, 22), 1)")

    deadline = time.monotonic() + open_for + 2
    while d.elements() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert d.elements() == [], "grant outlived its time"
    assert not lab.tcp_connect(lab.cli, srv, 22, timeout=0.5)
    cli.exec("keep.sendall(b'still here')")
    assert cli.eval("keep.recv(64).decode()") == "still here"

    assert d.stop() == 0
    assert not d.table_exists(), "SIGTERM must remove spad's table"


def test_hostile_packets_open_nothing_and_get_no_answer(
    lab: Lab, deploy: Callable[..., Deployment], tmp_path: Path
) -> None:
    set_static_neighbours(lab)
    lab.tcp_listen(lab.srv, 22)
    # the spoofing attacker sits on its own link into the server namespace,
    # so spad listens on "any" (Linux cooked capture) to see both links
    atk = lab.netns()
    atk_if, srv_atk_if = f"{lab.srv_if[:-1]}a", f"{lab.srv_if[:-1]}b"
    subprocess.run(
        ["ip", "link", "add", atk_if, "netns", atk, "type", "veth",
         "peer", "name", srv_atk_if, "netns", lab.srv],
        check=True, capture_output=True,
    )  # fmt: skip
    lab.run(atk, ["ip", "link", "set", atk_if, "up"])
    lab.run(lab.srv, ["ip", "link", "set", srv_atk_if, "up"])

    d = deploy(interface="any")
    d.start()
    cli = agent(lab, lab.cli)
    srv4 = str(lab.srv4)

    def send(payload: bytes) -> None:
        cli.exec(f"send_udp({srv4!r}, {SPA_PORT}, {payload.hex()!r})")

    # one genuine knock, short, to have something to replay
    genuine = d.packet(open_for=1)
    send(genuine)
    d.wait_status(lambda s: s["outcomes"].get("granted") == 1)
    deadline = time.monotonic() + 4
    while d.elements() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert d.elements() == []

    now = time.time_ns() // 1000
    hostile: dict[str, list[bytes]] = {
        "replay": [genuine],
        "flipped": [],
        "unknown": [d.packet(cred_id=os.urandom(8))],
        "stale": [d.packet(timestamp_us=now - 120 * 10**6)],
        "future": [d.packet(timestamp_us=now + 120 * 10**6)],
        "port": [d.packet(ports=(("tcp", 23),))],
        "destination": [d.packet(dest=ipaddress.ip_address("10.201.254.254"))],
        "other address": [d.packet(allow=ipaddress.ip_address("10.201.254.7"))],
    }
    for i in range(P.WIRE_LEN):
        pkt = bytearray(d.packet())
        pkt[i] ^= 1 << (i % 8)
        hostile["flipped"].append(bytes(pkt))

    out = tmp_path / "server-out.pcap"
    with capture_out(lab, lab.srv, out):
        for packets in hostile.values():
            for pkt in packets:
                send(pkt)
        # the replay again, spoofed from the client's address, over the
        # attacker's own link, as a raw Ethernet frame
        srv_mac = json.loads(
            lab.run(lab.srv, ["ip", "-j", "link", "show", srv_atk_if]).stdout
        )[0]["address"]
        frame = (
            bytes.fromhex(srv_mac.replace(":", ""))
            + bytes.fromhex("020000000001")
            + struct.pack(">H", 0x0800)
            + fr.udp4(lab.cli4, lab.srv4, 40000, SPA_PORT, genuine)
        )
        lab.run_python(
            atk,
            """
            import socket, sys
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            s.bind((sys.argv[1], 0))
            s.send(bytes.fromhex(sys.argv[2]))
            """,
            atk_if, frame.hex(),
        )
        # every packet reaches the core but those the kernel filter refuses:
        # the flipped version byte, and the unknown ids (8 flipped id bytes
        # and the made-up credential); plus the genuine and the spoof
        seen = 1 + sum(map(len, hostile.values())) - 1 - 8 - 1 + 1
        st = d.wait_status(lambda s: _knock_verdicts(s["counters"]) >= seen)
        # the port stays shut
        assert not lab.tcp_connect(lab.cli, srv4, 22, timeout=0.5)

    assert d.elements() == []
    c, o = st["counters"], st["outcomes"]
    assert c["drop_replay"] == 2
    # flips in the timestamp's high bytes move it out of the 60 s window,
    # which the core checks before the tag
    stale_flips = sum(
        1 for i in range(9, 17) if 2 ** (8 * (16 - i) + i % 8) > 60 * 10**6
    )
    assert c["drop_stale"] == 2 + stale_flips
    assert _knock_verdicts(c) == seen
    # flips: id bytes make the id unknown (the kernel drops those), the
    # rest break the tag
    assert c["drop_unknown_id"] == 0
    assert c["drop_mac"] == P.WIRE_LEN - 1 - 8 - stale_flips
    assert o.get("granted") == 1
    assert o.get("refused: port not allowed") == 1
    assert o.get("refused: wrong destination") == 1
    assert o.get("refused: other address not allowed") == 1

    answers = [f for _, f in read_pcap(out) if not _is_housekeeping(f)]
    assert answers == [], f"the server sent {len(answers)} packets"


def test_kill9_leaves_nothing_open_and_restart_refuses_old_knock(
    lab: Lab, deploy: Callable[..., Deployment], tmp_path: Path
) -> None:
    lab.tcp_listen(lab.srv, 22)
    d = deploy()
    d.start()
    srv4 = str(lab.srv4)

    cap = tmp_path / "knock.pcap"
    dump = lab.popen(
        lab.srv,
        ["tcpdump", "-i", lab.srv_if, "-n", "-U", "-c", "1", "-w", str(cap),
         f"udp dst port {SPA_PORT}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    wait_listening(dump)

    d.knock("-A", "tcp/22", "--open-for", "3")
    dump.wait(10)
    (_, frame), = list(read_pcap(cap))
    knock = frame[-P.WIRE_LEN :]
    assert P.decode_packet(knock, d.secret).request.ports == (("tcp", 22),)

    cli = agent(lab, lab.cli)
    assert cli.eval(f"wait_open({srv4!r}, 22, 1.0)") is not None

    t_kill = time.monotonic()
    assert d.stop(signal.SIGKILL) == -signal.SIGKILL
    assert d.elements() == [(str(lab.cli4), "tcp", 22)]  # the kernel still holds it
    while d.elements() and time.monotonic() - t_kill < 5:
        time.sleep(0.1)
    assert d.elements() == [], "a grant outlived its time after kill -9"
    assert not lab.tcp_connect(lab.cli, srv4, 22, timeout=0.5)

    d.start()  # adopts the table left behind, reads the replay journal
    cli.exec(f"send_udp({srv4!r}, {SPA_PORT}, {knock.hex()!r})")
    st = d.wait_status(lambda s: s["counters"]["drop_replay"] == 1)
    assert st["counters"]["accepted"] == 0
    assert d.elements() == []
    assert not lab.tcp_connect(lab.cli, srv4, 22, timeout=0.5)
    assert "replay state: 1 live entries restored" in d.log_text()


def test_proxy_command_reaches_the_protected_port(
    lab: Lab, deploy: Callable[..., Deployment]
) -> None:
    lab.tcp_listen(lab.srv, 22)
    d = deploy()
    d.start()
    assert not lab.tcp_connect(lab.cli, str(lab.srv4), 22, timeout=0.5)

    proxy = lab.popen(
        lab.cli,
        [SPA, "proxy", "--config", str(d.client_cfg), str(lab.srv4), "22"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = proxy.communicate(b"SSH-2.0-probe\r\n", timeout=20)
    assert proxy.returncode == 0, err
    assert out == b"SSH-2.0-probe\r\n"
    assert d.elements() == [(str(lab.cli4), "tcp", 22)]


def test_table_flushed_under_a_running_spad_is_rebuilt(
    lab: Lab, deploy: Callable[..., Deployment]
) -> None:
    """``nft flush ruleset`` (systemctl restart nftables) must not leave the
    protected port open: within a tick spad puts its table back, grants and
    all."""
    lab.tcp_listen(lab.srv, 22)
    d = deploy()
    d.start()
    cli = agent(lab, lab.cli)
    srv4, srv6 = str(lab.srv4), str(lab.srv6)
    d.knock(srv4, "-4", "-A", "tcp/22", "--open-for", "120")
    assert cli.eval(f"wait_open({srv4!r}, 22, 1.0)") is not None
    assert not lab.tcp_connect(lab.cli, srv6, 22, timeout=0.5), "cli6 not granted"

    lab.run(lab.srv, ["nft", "flush", "ruleset"])
    flushed = time.monotonic()
    while not d.table_exists() and time.monotonic() - flushed < 5:
        time.sleep(0.05)
    assert time.monotonic() - flushed < 2.0, f"not rebuilt in time\n{d.log_text()}"

    assert not lab.tcp_connect(lab.cli, srv6, 22, timeout=0.5), "others dropped"
    assert d.elements() == [(str(lab.cli4), "tcp", 22)], "the live grant is back"
    assert lab.tcp_connect(lab.cli, srv4, 22, timeout=1.0)
    assert lab.udp_probe(lab.cli, srv4, SPA_PORT) == "silent"
    said = [line for line in d.log_text().splitlines() if "vanished" in line]
    assert len(said) == 1, said
    assert said[0].endswith(
        f"WARNING spa.firewall.nftables: nftables table inet {TABLE} vanished; "
        "rebuilt with 1 grants"
    )
    d.wait_status(lambda s: s["outcomes"].get("firewall_repaired") == 1)
    assert d.stop() == 0
    assert not d.table_exists()


def test_second_spad_on_the_same_state_dir_is_refused(
    lab: Lab, deploy: Callable[..., Deployment]
) -> None:
    lab.tcp_listen(lab.srv, 22)
    d = deploy()
    d.start()
    assert d.proc is not None
    first = d.proc.pid
    cli = agent(lab, lab.cli)
    srv4 = str(lab.srv4)
    d.knock(srv4, "-A", "tcp/22", "--open-for", "120")
    assert cli.eval(f"wait_open({srv4!r}, 22, 1.0)") is not None

    second = lab.run(
        lab.srv, [SPAD, "--config", str(d.server_cfg), "-v"], check=False, timeout=30
    )
    assert second.returncode == 1, second.stderr
    assert second.stderr.splitlines() == [
        f"Error: {d.state} is in use by another spad (pid {first})"
    ]
    assert second.stdout == ""

    # the first one's table, grant and protection are untouched
    assert d.table_exists()
    assert d.elements() == [(str(lab.cli4), "tcp", 22)]
    assert not lab.tcp_connect(lab.cli, str(lab.srv6), 22, timeout=0.5)
    assert d.proc.poll() is None
    time.sleep(1.1)
    assert d.status()["pid"] == first and d.status()["running"]
    assert "vanished" not in d.log_text()
    assert d.stop() == 0


def test_spad_warns_about_a_chain_that_drops_what_it_grants(
    lab: Lab, deploy: Callable[..., Deployment]
) -> None:
    lab.run(
        lab.srv,
        ["nft", "add table inet foreign; add chain inet foreign input "
         "{ type filter hook input priority 0; policy drop; }"],
    )  # fmt: skip
    d = deploy()
    d.start()
    warnings = [
        line for line in d.log_text().splitlines()
        if " WARNING " in line and "inet foreign input" in line
    ]  # fmt: skip
    assert len(warnings) == 1, d.log_text()
    assert "policy drop" in warnings[0]
    assert "a drop in any base chain is final" in warnings[0]
