#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Start command for viaduct under the team's reference harness (../shared/bench). The harness
# exports MODE (fwd|rev|hit|h2), PORT, ORIGIN_PORT, DIR, CERT, KEY and WORKERS; this writes the
# matching YAML into $DIR and execs viaduct in the foreground. Settings mirror what the harness
# gives the other products: logging off, keep-alive on both sides with 300 s idle timeouts,
# limits high enough for 5000 idle connections. VIADUCT_CACHE=disk makes hit runs use the disk
# tier with a 256 KiB memory tier (large hits come from their files); disk-only keeps nothing in
# memory, so every hit reads its file. Outside the hit scenario the cache is off (memory: 0): the
# other products do not cache there, and the harness's origin files carry a fresh Last-Modified,
# so viaduct's heuristic freshness would turn part of a "proxy" run into cache hits (or
# revalidations) and the rows would not measure the same work.
set -eu
BIN=${VIADUCT_BIN:?set VIADUCT_BIN to the viaduct binary}
if [ "${1:-}" = "--version" ]; then
  exec "$BIN" --version
fi
conf="$DIR/viaduct.yaml"
common="workers: ${WORKERS:-1}
log:
  level: warn
  access_log: off
limits:
  max_connections: 20000
timeouts:
  keepalive: 300s
  client_header: 300s
upstream:
  pool_idle_max: 1024
  pool_idle_timeout: 300s"
nocache="cache:
  memory: 0"
case "$MODE" in
  fwd)
    # Tunnel runs use fwd mode: the harness's source listens on a random port.
    printf '%s\nlisteners:\n  - address: 127.0.0.1:%s\n    mode: forward\nconnect:\n  ports: ["1-65535"]\n%s\n' \
      "$common" "$PORT" "$nocache" >"$conf"
    ;;
  rev|hit)
    printf '%s\nlisteners:\n  - address: 127.0.0.1:%s\n    mode: reverse\nroutes:\n  - upstream: http://127.0.0.1:%s\n    forwarded: none\n' \
      "$common" "$PORT" "$ORIGIN_PORT" >"$conf"
    case "$MODE:${VIADUCT_CACHE:-}" in
      rev:*) printf '%s\n' "$nocache" >>"$conf" ;;
      hit:disk-only)
        # Every hit read from its file (warm page cache): a memory tier that keeps nothing.
        printf 'cache:\n  memory: 1\n  disk_path: %s/cache\n' "$DIR" >>"$conf" ;;
      hit:disk)
        # The disk tier as deployed: a small memory tier, so large bodies stay in their files
        # (served with sendfile, headers in memory) and small ones are promoted.
        printf 'cache:\n  memory: 256k\n  disk_path: %s/cache\n' "$DIR" >>"$conf" ;;
    esac
    ;;
  h2)
    printf '%s\nlisteners:\n  - address: 127.0.0.1:%s\n    mode: reverse\n    tls:\n      certificates:\n        - cert: %s\n          key: %s\nroutes:\n  - upstream: http://127.0.0.1:%s\n    forwarded: none\n%s\n' \
      "$common" "$PORT" "$CERT" "$KEY" "$ORIGIN_PORT" "$nocache" >"$conf"
    ;;
  *) echo "viaduct-bench: unknown MODE $MODE" >&2; exit 2 ;;
esac
exec "$BIN" -c "$conf"
