"""Firewall pieces that need no kernel: the default repair(), nft messages."""

from __future__ import annotations

from spa.firewall import make_firewall
from spa.firewall.nftables import _one_line, _summary

NFT_ERRORS = """\
Error: syntax error, unexpected string, expecting accept or drop or '$'
add element inet nosuch allow4 { 192.0.2.1 . tcp . 22 }
                                                               ^^^
Error: No such file or directory
add element inet nosuch allow4 { 192.0.2.1 . tcp . 22 }
                 ^^^^^^
"""


def test_a_backend_with_nothing_to_repair_says_so() -> None:
    assert make_firewall("none").repair() is False


def test_nft_errors_on_one_line() -> None:
    assert _one_line(NFT_ERRORS) == (
        "syntax error, unexpected string, expecting accept or drop or '$'; "
        "No such file or directory"
    )
    located = "/dev/stdin:1:19-24: Error: Could not process rule: No such file\n"
    assert _one_line(located + "add x\n      ^^^\n") == (
        "Could not process rule: No such file"
    )
    assert _one_line("netlink: something odd\n  happened\n") == (
        "netlink: something odd happened"
    )
    assert _one_line("") == ""


def test_failed_transaction_summary_is_one_line() -> None:
    commands = "".join(f"add element inet spa allow4 {{ 192.0.2.{i} }}\n"
                       for i in range(10))
    text = _summary(commands)
    assert "\n" not in text
    assert text.startswith("add element inet spa allow4 { 192.0.2.0 }; ")
    assert text.endswith("... (10 commands in all)")
    assert len(_summary("x" * 1000)) == 300
