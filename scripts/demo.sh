#!/usr/bin/env bash
# spa demo: two network namespaces joined by a veth pair, spad guarding
# tcp/22 on the server side, one knock from the client side.  Shows the
# port closed, the knock, the nftables element with its kernel timeout, the
# port open, the element expiring and the port closed again, while a
# connection opened during the grant still works.  Namespace and interface
# names carry a random suffix, so runs side by side do not meet; each run
# cleans up its own, also on failure or Ctrl-C.
set -euo pipefail

OPEN_FOR=${OPEN_FOR:-5}
RUN=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
NS_SRV=spademo-$RUN-srv
NS_CLI=spademo-$RUN-cli
IF_SRV=spademo$RUN-s    # interface names: 15 characters at most
IF_CLI=spademo$RUN-c
SRV4=10.201.250.1
CLI4=10.201.250.2
TABLE=spa_demo
PY=${PYTHON:-python3}

[ "$(id -u)" = 0 ] || { echo "demo: run as root (network namespaces, nftables)" >&2; exit 1; }
command -v spad >/dev/null || { echo "demo: spad not on PATH; run 'make demo'" >&2; exit 1; }

TMP=$(mktemp -d -t spa-demo.XXXXXX)
SPAD_PID=""
LISTEN_PID=""
HELD_PID=""
MADE_NS=()
stop_pid() {
	if [ -n "$1" ]; then kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; fi
}
cleanup() {
	stop_pid "$HELD_PID"
	stop_pid "$SPAD_PID"
	stop_pid "$LISTEN_PID"
	for ns in "${MADE_NS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -t 1 ]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD="" PLAIN=""; fi
step() { printf '\n%s== %s%s\n' "$BOLD" "$*" "$PLAIN"; }
show() { printf '   $ %s\n' "$*"; "$@" 2>&1 | sed 's/^/   /'; }
probe() {  # prints "open" or "closed"
	ip netns exec "$NS_CLI" "$PY" -c '
import socket, sys
s = socket.socket(); s.settimeout(1.0)
try:
    s.connect((sys.argv[1], 22)); print("open")
except OSError:
    print("closed")' "$SRV4"
}
element() {
	ip netns exec "$NS_SRV" nft list set inet "$TABLE" allow4 2>/dev/null \
		| grep -o "$CLI4 . tcp . 22[^,}]*" || true
}

step "lab: namespaces $NS_SRV ($SRV4) and $NS_CLI ($CLI4) on a veth pair"
for ns in "$NS_SRV" "$NS_CLI"; do ip netns add "$ns"; MADE_NS+=("$ns"); done
# the pair is made inside the namespaces, so it never shows in the host's
ip link add "$IF_SRV" netns "$NS_SRV" type veth peer name "$IF_CLI" netns "$NS_CLI"
ip -n "$NS_SRV" addr add "$SRV4/24" dev "$IF_SRV"
ip -n "$NS_CLI" addr add "$CLI4/24" dev "$IF_CLI"
for ns in "$NS_SRV" "$NS_CLI"; do ip -n "$ns" link set lo up; done
ip -n "$NS_SRV" link set "$IF_SRV" up
ip -n "$NS_CLI" link set "$IF_CLI" up

step "credential: spa keygen writes the server's and the client's config"
cat > "$TMP/spad.toml" <<CONF
[server]
interface = "$IF_SRV"
port = 62201
firewall = "nftables"
state_dir = "$TMP/state"
protected = ["tcp/22"]
nft_table = "$TABLE"
CONF
chmod 600 "$TMP/spad.toml"
show spa keygen --name alice --allow tcp/22 --max-open 300 \
	--server-config "$TMP/spad.toml" --client-config "$TMP/alice.toml" \
	--server "$SRV4"

step "server: spad in $NS_SRV, and an ssh stand-in on tcp/22 (banner, then echo)"
ip netns exec "$NS_SRV" "$PY" -c '
import socket, sys, threading, time
def serve(c):
    with c:
        c.settimeout(60)
        try:
            c.sendall(b"SSH-2.0-demo\r\n")
            while data := c.recv(4096):
                c.sendall(data)
        except OSError:
            pass
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 22)); s.listen(16); s.settimeout(0.5)
end = time.time() + 120
while time.time() < end:
    try:
        c, _ = s.accept()
    except socket.timeout:
        continue
    threading.Thread(target=serve, args=(c,), daemon=True).start()' "$SRV4" &
LISTEN_PID=$!
ip netns exec "$NS_SRV" spad --config "$TMP/spad.toml" > "$TMP/spad.log" 2>&1 &
SPAD_PID=$!
for _ in $(seq 1 100); do
	grep -q "spad listening" "$TMP/spad.log" && break
	kill -0 "$SPAD_PID" 2>/dev/null || { cat "$TMP/spad.log" >&2; exit 1; }
	sleep 0.05
done
sed 's/^/   spad: /' "$TMP/spad.log"
show ip netns exec "$NS_SRV" nft list table inet "$TABLE"

step "before the knock: tcp/22 from the client is $(probe)"

step "knock: spa knock -A tcp/22 --open-for $OPEN_FOR"
T0=$(date +%s.%N)
show ip netns exec "$NS_CLI" spa knock --config "$TMP/alice.toml" -A tcp/22 \
	--open-for "$OPEN_FOR"
for _ in $(seq 1 100); do [ -n "$(element)" ] && break; sleep 0.01; done
T1=$(date +%s.%N)
echo "   grant visible after $(awk -v a="$T0" -v b="$T1" 'BEGIN{printf "%.0f", (b-a)*1000}') ms:"
echo "   nft set element: $(element)"
grep "granted" "$TMP/spad.log" | tail -1 | sed 's/^/   spad: /'
echo "   tcp/22 from the client is now $(probe)"
echo "   the client opens a connection now and keeps it (an ssh session):"
ip netns exec "$NS_CLI" "$PY" -c '
import os, socket, sys, time
s = socket.create_connection((sys.argv[1], 22), 2); s.settimeout(5)
print("   connected; the server says:", s.recv(64).decode().strip(), flush=True)
for _ in range(600):  # until the demo says the element has expired
    if os.path.exists(sys.argv[2]):
        break
    time.sleep(0.1)
s.sendall(b"still here\n")
print("   sent \"still here\" on that connection; echo:",
      repr(s.recv(64).decode().strip()), flush=True)' "$SRV4" "$TMP/expired" \
	> "$TMP/held.log" 2>&1 &
HELD_PID=$!
for _ in $(seq 1 50); do [ -s "$TMP/held.log" ] && break; sleep 0.02; done
cat "$TMP/held.log"
sleep 1.1   # spad refreshes its status file every second
show spa status --state-dir "$TMP/state"

step "waiting for the kernel to expire the element ($OPEN_FOR s)"
for _ in $(seq 1 $((OPEN_FOR * 10 + 30))); do [ -z "$(element)" ] && break; sleep 0.1; done
T2=$(date +%s.%N)
echo "   element gone after $(awk -v a="$T1" -v b="$T2" 'BEGIN{printf "%.1f", b-a}') s; set now: '$(element)'"
echo "   tcp/22 from the client is $(probe) again for new connections"

step "the connection opened during the grant outlives it (conntrack)"
: > "$TMP/expired"
wait "$HELD_PID" || { cat "$TMP/held.log" >&2; exit 1; }
HELD_PID=""
tail -n +2 "$TMP/held.log"

step "spad's counters"
show spa status --state-dir "$TMP/state"

step "stop: SIGTERM removes spad's table"
kill "$SPAD_PID"; wait "$SPAD_PID" || true; SPAD_PID=""
if ip netns exec "$NS_SRV" nft list table inet "$TABLE" >/dev/null 2>&1; then
	echo "   table still present"; exit 1
fi
echo "   table $TABLE removed; demo done"
