"""Silence beyond the obvious: IP fragments to the SPA port draw no ICMP.

A first fragment that reaches the kernel's reassembly queue and is never
completed draws an ICMP "reassembly time exceeded" when the queue times
out; spad's table drops such fragments before defragmentation. The server
namespace's reassembly timeout is cut to 1 s so the test need not wait 30.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.netns.conftest import Lab
from tests.netns.spad import Deployment, capture_out
from tests.pcapfile import read_pcap

pytestmark = pytest.mark.netns

_FIRST_FRAGMENT = """
import socket, struct, sys
src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
payload = bytes(64)
udp = struct.pack(">HHHH", 40000, port, 8 + 171, 0) + payload
# IPv4, id 77, MF set, offset 0: the first of fragments that never follow
ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 77, 0x2000, 64, 17, 0,
                 socket.inet_aton(src), socket.inet_aton(dst))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.sendto(ip + udp, (dst, 0))
"""


def _icmp_from_server(pcap: Path) -> list[bytes]:
    """ICMP packets the server sent (Linux cooked capture of "any")."""
    out = []
    for _, frame in read_pcap(pcap):
        for hdr in (16, 20):
            ip = frame[hdr:]
            if len(ip) >= 21 and ip[0] >> 4 == 4 and ip[9] == 1:
                out.append(ip)
                break
    return out


@pytest.mark.parametrize("with_spad", [False, True])
def test_first_fragment_draws_no_icmp(
    lab: Lab, deploy: Callable[..., Deployment], tmp_path: Path, with_spad: bool
) -> None:
    lab.run(lab.srv, ["sysctl", "-qw", "net.ipv4.ipfrag_time=1"])
    if with_spad:
        deploy().start()
    out = tmp_path / "out.pcap"
    with capture_out(lab, lab.srv, out):
        lab.run_python(lab.cli, _FIRST_FRAGMENT, lab.cli4, lab.srv4, 62201)
        time.sleep(2.5)  # reassembly gives up after 1 s
    icmp = _icmp_from_server(out)
    if with_spad:
        assert icmp == [], "the server answered a fragment"
    else:
        # the control: without spad the kernel does answer, so the probe works
        assert any(p[20] == 11 for p in icmp), icmp
