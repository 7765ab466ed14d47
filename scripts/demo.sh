#!/usr/bin/env bash
# spa demo: two network namespaces joined by a veth pair, spad guarding
# tcp/22 on the server side, one knock from the client side.  Shows the
# port closed, the knock, the nftables element with its kernel timeout, the
# port open, the element expiring and the port closed again.  Cleans up after
# itself, also on failure or Ctrl-C.
set -euo pipefail

OPEN_FOR=${OPEN_FOR:-5}
NS_SRV=spademo-srv
NS_CLI=spademo-cli
IF_SRV=spademo-s
IF_CLI=spademo-c
SRV4=10.201.250.1
CLI4=10.201.250.2
TABLE=spa_demo
PY=${PYTHON:-python3}

[ "$(id -u)" = 0 ] || { echo "demo: run as root (network namespaces, nftables)" >&2; exit 1; }
command -v spad >/dev/null || { echo "demo: spad not on PATH; run 'make demo'" >&2; exit 1; }

TMP=$(mktemp -d -t spa-demo.XXXXXX)
SPAD_PID=""
LISTEN_PID=""
cleanup() {
	if [ -n "$SPAD_PID" ]; then kill "$SPAD_PID" 2>/dev/null; wait "$SPAD_PID" 2>/dev/null || true; fi
	if [ -n "$LISTEN_PID" ]; then kill "$LISTEN_PID" 2>/dev/null; wait "$LISTEN_PID" 2>/dev/null || true; fi
	ip netns del "$NS_SRV" 2>/dev/null || true
	ip netns del "$NS_CLI" 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
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
ip netns del "$NS_SRV" 2>/dev/null || true
ip netns del "$NS_CLI" 2>/dev/null || true
ip netns add "$NS_SRV"
ip netns add "$NS_CLI"
ip link add "$IF_SRV" type veth peer name "$IF_CLI"
ip link set "$IF_SRV" netns "$NS_SRV"
ip link set "$IF_CLI" netns "$NS_CLI"
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

step "server: spad in $NS_SRV, and an ssh stand-in listening on tcp/22"
ip netns exec "$NS_SRV" "$PY" -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 22)); s.listen(16); s.settimeout(0.5)
end = time.time() + 120
while time.time() < end:
    try:
        c, _ = s.accept(); c.sendall(b"SSH-2.0-demo\r\n"); c.close()
    except socket.timeout:
        pass' "$SRV4" &
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
sleep 1.1   # spad refreshes its status file every second
show spa status --state-dir "$TMP/state"

step "waiting for the kernel to expire the element ($OPEN_FOR s)"
for _ in $(seq 1 $((OPEN_FOR * 10 + 30))); do [ -z "$(element)" ] && break; sleep 0.1; done
T2=$(date +%s.%N)
echo "   element gone after $(awk -v a="$T1" -v b="$T2" 'BEGIN{printf "%.1f", b-a}') s; set now: '$(element)'"
echo "   tcp/22 from the client is $(probe) again"

step "spad's counters"
show spa status --state-dir "$TMP/state"

step "stop: SIGTERM removes spad's table"
kill "$SPAD_PID"; wait "$SPAD_PID" || true; SPAD_PID=""
if ip netns exec "$NS_SRV" nft list table inet "$TABLE" >/dev/null 2>&1; then
	echo "   table still present"; exit 1
fi
echo "   table $TABLE removed; demo done"
