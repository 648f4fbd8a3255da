#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs viaduct side by side with the established proxies through the team's reference harness
# (../shared/bench/run.sh), in one invocation, so ratios and CPU per request compare directly.
#   bench/run.sh                       forward + reverse 1 KiB and 64 KiB, idle connections
#   bench/run.sh --products viaduct,trafficserver,squid,tinyproxy --scenarios d --label tunnel
#                                      CONNECT tunnel, 2 GiB origin->client (MB/s, CPU s/GiB)
#   bench/run.sh --scenarios a --sizes 1k --label quick      any run.sh option passes through
# Needs: make (release build in build/), ../shared/bench/install.sh run once (as root).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
harness=${VIADUCT_HARNESS:-$root/../shared/bench}
[ -x "$root/build/viaduct" ] || { echo "build first: make build" >&2; exit 1; }
export VIADUCT_BIN="$root/build/viaduct"
export VIADUCT_CMD="exec $here/viaduct-bench.sh"
export VIADUCT_SCENARIOS=${VIADUCT_SCENARIOS:-"fwd rev hit tunnel idle h2"}
export VIADUCT_IDLE_MODE=fwd
args=("$@")
if [ ${#args[@]} -eq 0 ]; then
  args=(--products viaduct,haproxy,nginx,trafficserver,squid,tinyproxy --scenarios a,b,e
        --label viaduct-vs --out "$root/bench/results/latest")
fi
# The kernel's TCP settings move every bulk figure by up to 2x (docs/performance.md, "Congestion
# control"): say which ones this run had, on stderr so the harness's tables stay as they are.
cc=$(cat /proc/sys/net/ipv4/tcp_congestion_control 2>/dev/null || echo unknown)
qdisc=$(cat /proc/sys/net/core/default_qdisc 2>/dev/null || echo unknown)
echo "bench: kernel $(uname -r), tcp_congestion_control=$cc, default_qdisc=$qdisc" >&2
exec "$harness/run.sh" "${args[@]}"
