#!/usr/bin/env bash
# Installs the Debian packages spa needs to build, test and demo, if missing.
# Idempotent and quick when everything is there; needs root otherwise.
set -euo pipefail

pkgs=(build-essential python3 python3-dev python3-venv libpcap-dev
      nftables iptables iproute2 tcpdump time fwknop-client fwknop-server)

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" \
		|| missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
	exit 1
fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
