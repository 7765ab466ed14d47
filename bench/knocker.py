"""Sends pre-made knocks at a steady pace and says when each left.

Runs inside the client namespace. Input (stdin, JSON): {"dst", "port",
"start_delay", "interval", "knocks": [[tag, hexpayload], ...]}. Output: one
JSON line per knock, {"tag", "sent"}, with ``sent`` on CLOCK_MONOTONIC, which
all namespaces share, so the caller can compare it with its own stamps.
"""

from __future__ import annotations

import json
import socket
import sys
import time


def main() -> None:
    spec = json.load(sys.stdin)
    knocks = [(tag, bytes.fromhex(h)) for tag, h in spec["knocks"]]
    dst = (spec["dst"], int(spec["port"]))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t0 = time.monotonic() + float(spec["start_delay"])
    for i, (tag, payload) in enumerate(knocks):
        due = t0 + i * float(spec["interval"])
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent = time.monotonic()
        s.sendto(payload, dst)
        print(json.dumps({"tag": tag, "sent": sent}), flush=True)


if __name__ == "__main__":
    main()
