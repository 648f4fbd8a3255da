#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Start command for viaduct under the team's reference harness (../shared/bench). The harness
# exports MODE (fwd|rev|hit|h2), PORT, ORIGIN_PORT, DIR, CERT, KEY and WORKERS; this writes the
# matching YAML into $DIR and execs viaduct in the foreground. Settings mirror what the harness
# gives the other products: logging off, keep-alive on both sides with 300 s idle timeouts,
# limits high enough for 5000 idle connections. VIADUCT_CACHE=disk makes hit runs serve from the
# disk tier (a memory tier that keeps nothing).
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
case "$MODE" in
  fwd)
    # Tunnel runs use fwd mode: the harness's source listens on a random port.
    printf '%s\nlisteners:\n  - address: 127.0.0.1:%s\n    mode: forward\nconnect:\n  ports: ["1-65535"]\n' \
      "$common" "$PORT" >"$conf"
    ;;
  rev|hit)
    printf '%s\nlisteners:\n  - address: 127.0.0.1:%s\n    mode: reverse\nroutes:\n  - upstream: http://127.0.0.1:%s\n    forwarded: none\n' \
      "$common" "$PORT" "$ORIGIN_PORT" >"$conf"
    if [ "$MODE" = hit ] && [ "${VIADUCT_CACHE:-}" = disk ]; then
      # Disk-tier hits: a memory tier too small to keep any object, so every hit is read from
      # its file (warm page cache).
      printf 'cache:\n  memory: 1\n  disk_path: %s/cache\n' "$DIR" >>"$conf"
    fi
    ;;
  h2)
    printf '%s\nlisteners:\n  - address: 127.0.0.1:%s\n    mode: reverse\n    tls:\n      certificates:\n        - cert: %s\n          key: %s\nroutes:\n  - upstream: http://127.0.0.1:%s\n    forwarded: none\n' \
      "$common" "$PORT" "$CERT" "$KEY" "$ORIGIN_PORT" >"$conf"
    ;;
  *) echo "viaduct-bench: unknown MODE $MODE" >&2; exit 2 ;;
esac
exec "$BIN" -c "$conf"
