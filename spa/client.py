"""The knocking side: build one packet, send one datagram, never wait.

Also the relay behind ``spa proxy``: knock, then connect and copy bytes
between the connection and stdin/stdout, as ssh expects of a ProxyCommand.
"""

from __future__ import annotations

import ipaddress
import os
import selectors
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from spa.protocol import (
    IPAddress,
    Request,
    encode_packet,
    server_id_digest,
)


class KnockError(RuntimeError):
    """The knock could not be sent; the message is one line."""


@dataclass(frozen=True)
class Target:
    address: IPAddress
    family: int


def resolve(host: str, port: int, family: int = 0) -> Target:
    """First address of HOST for UDP, honouring -4/-6."""
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)
    except socket.gaierror as e:
        raise KnockError(f"cannot resolve {host}: {e.strerror}") from e
    fam, _, _, _, sockaddr = infos[0]
    addr = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
    return Target(addr, int(fam))


def build_request(
    ports: Sequence[tuple[str, int]],
    open_for: int,
    destination: IPAddress,
    *,
    allow: IPAddress | None = None,
    server_id: str | None = None,
) -> Request:
    dest: IPAddress | bytes = server_id_digest(server_id) if server_id else destination
    return Request(
        ports=tuple((p, n) for p, n in ports),  # type: ignore[misc]
        open_for=open_for,
        allow=allow,
        destination=dest,
    )


def send_knock(
    cred_id: bytes, secret: bytes, target: Target, port: int, req: Request
) -> bytes:
    """Send one knock; returns the packet that was sent."""
    packet = encode_packet(cred_id, secret, req)
    try:
        with socket.socket(target.family, socket.SOCK_DGRAM) as s:
            s.sendto(packet, (str(target.address), port))
    except OSError as e:
        raise KnockError(
            f"cannot send to {target.address} udp/{port}: {e.strerror}"
        ) from e
    return packet


def connect_retry(
    address: IPAddress, port: int, total: float, attempt: float = 0.5
) -> socket.socket:
    """Connect, retrying until ``total`` seconds have passed.

    The grant lands a few milliseconds after the knock; until then the SYN is
    dropped silently, so each attempt is short and the next one follows.
    """
    deadline = time.monotonic() + total
    last: OSError | None = None
    while time.monotonic() < deadline:
        left = max(0.05, min(attempt, deadline - time.monotonic()))
        try:
            return socket.create_connection((str(address), port), timeout=left)
        except OSError as e:
            last = e
            time.sleep(0.05)
    reason = last.strerror or str(last) if last else "timed out"
    raise KnockError(f"cannot connect to {address} tcp/{port}: {reason}")


def relay(sock: socket.socket, stdin_fd: int = 0, stdout_fd: int = 1) -> None:
    """Copy stdin to the socket and the socket to stdout until both close."""
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    sel.register(stdin_fd, selectors.EVENT_READ)
    sock_open = True
    try:
        while sock_open:
            for key, _ in sel.select():
                if key.fileobj is sock:
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        continue
                    if not data:
                        sock_open = False
                        break
                    _write_all(stdout_fd, data)
                else:
                    data = os.read(stdin_fd, 65536)
                    if not data:
                        sel.unregister(stdin_fd)
                        sock.shutdown(socket.SHUT_WR)
                        continue
                    sock.setblocking(True)
                    sock.sendall(data)
                    sock.setblocking(False)
    finally:
        sel.close()
        sock.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
