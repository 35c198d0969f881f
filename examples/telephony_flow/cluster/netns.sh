#!/usr/bin/env bash
# `make cluster-netns`: the cluster across four network namespaces, as four hosts.
#
#   caller (sipp) 198.18.0.100 --+
#   agent #1      198.18.0.11  --+-- br0 in "proxy": Kamailio on 198.18.0.1:5060
#   agent #2      198.18.0.12  --+
#
# 198.18.0.0/24 is in the benchmarking range (RFC 2544) and exists only inside
# the namespaces: one veth pair per host, its peer on a bridge in the proxy's
# namespace; nothing is added to the root namespace. The namespaces (and any
# process left in them) are removed on every exit path: success, failure,
# Ctrl+C, SIGTERM. Root only; otherwise it says so and exits 0 (skipped).
# Usage: netns.sh [PYTHON] [CALLS]
set -euo pipefail
python=${1:-python3}
calls=${2:-16}
cd "$(dirname "$0")/../../.."
if [ "$(id -u)" != 0 ]; then
    echo "cluster-netns: skipped: needs root (ip netns add); run it as root" >&2
    exit 0
fi
for tool in ip sipp; do
    command -v "$tool" >/dev/null || { echo "cluster-netns: $tool is missing" >&2; exit 2; }
done
suffix=$$
proxy=bcl-proxy-$suffix caller=bcl-caller-$suffix ua1=bcl-ua1-$suffix ua2=bcl-ua2-$suffix
namespaces=("$proxy" "$caller" "$ua1" "$ua2")

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for ns in "${namespaces[@]}"; do
        if ip netns list | grep -qw "$ns"; then
            ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
            ip netns del "$ns"
        fi
    done
    echo "cluster-netns: namespaces removed" >&2
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for ns in "${namespaces[@]}"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
done
ip -n "$proxy" link add br0 type bridge
ip -n "$proxy" addr add 198.18.0.1/24 dev br0
ip -n "$proxy" link set br0 up
attach() {  # attach NAMESPACE ADDRESS: a veth from NAMESPACE to the bridge
    ip -n "$proxy" link add "v-$3" type veth peer name eth0 netns "$1"
    ip -n "$proxy" link set "v-$3" master br0 up
    ip -n "$1" addr add "$2/24" dev eth0
    ip -n "$1" link set eth0 up
}
attach "$caller" 198.18.0.100 caller
attach "$ua1" 198.18.0.11 ua1
attach "$ua2" 198.18.0.12 ua2
echo "cluster-netns: namespaces $proxy, $ua1, $ua2, $caller on 198.18.0.0/24" >&2

"$python" -m examples.telephony_flow.cluster.netns \
    --proxy-netns "$proxy" --agent-netns "$ua1" "$ua2" --caller-netns "$caller" --calls "$calls"
