#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# User-space instructions per request of viaduct, counted by valgrind's callgrind: a figure that
# does not move with the machine's load (CPU time per request does, by ±20 % here), for telling
# whether a change to the request path made it cheaper. Kernel time is not counted.
#
#   bench/instr.sh [rev|fwd|h2|hit|hit-disk] [SECONDS]     (default: rev 10)
#
# Starts an nginx origin serving a 1 KiB file, viaduct (build/viaduct, or $VIADUCT_BIN) under
# callgrind with one worker and the cache off (hit: on, memory tier; hit-disk: every hit read from
# its file in the disk tier, as VIADUCT_CACHE=disk-only in the harness), warms up for 2 s, then counts for SECONDS (wrk
# -c 50 for rev/fwd, h2load -c 10 -m 10 for h2 over TLS), and prints instructions per request
# and the 15 costliest functions. Everything listens on
# 127.0.0.1 and is stopped on exit. Needs valgrind, nginx, wrk, h2load (tools/install-deps.sh
# bench, plus valgrind). INSTR_OUT=FILE keeps the callgrind profile for callgrind_annotate.
set -euo pipefail
mode=${1:-rev}
secs=${2:-10}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${VIADUCT_BIN:-$here/build/viaduct}
for t in valgrind callgrind_annotate callgrind_control nginx wrk h2load openssl; do
  command -v "$t" >/dev/null || { echo "instr.sh: $t is missing" >&2; exit 2; }
done
[ -x "$bin" ] || { echo "instr.sh: no viaduct binary at $bin (make build)" >&2; exit 2; }
dir=$(mktemp -d /tmp/vd-instr.XXXXXX)
chmod 755 "$dir" # nginx's workers run as nobody
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
oport=$(free_port)
vport=$(free_port)
mkdir -p "$dir/www" "$dir/tmp"
head -c 1024 /dev/urandom >"$dir/www/1k"
cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile off;
  keepalive_requests 100000000;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  server {
    listen 127.0.0.1:$oport; root $dir/www;
    location /cache/ { alias $dir/www/; add_header Cache-Control "max-age=3600"; }
  }
}
EOF
nginx -p "$dir" -e "$dir/nginx-error.log" -c "$dir/nginx.conf" &
pids+=($!)

common="workers: 1
log:
  level: warn
  access_log: off
timeouts:
  keepalive: 300s
upstream:
  pool_idle_max: 1024
  pool_idle_timeout: 300s
cache:
  memory: 0"
case "$mode" in
  hit|hit-disk)
    common=${common%cache:*}
    if [ "$mode" = hit ]; then
      common+="cache:
  memory: 64m"
    else
      common+="cache:
  memory: 1
  disk_path: $dir/cache"
    fi
    printf '%s\nlisteners:\n  - address: 127.0.0.1:%s\n    mode: reverse\nroutes:\n  - upstream: http://127.0.0.1:%s\n    forwarded: none\n' \
      "$common" "$vport" "$oport" >"$dir/v.yaml"
    url="http://127.0.0.1:$vport/cache/1k" ;;
  rev)
    printf '%s\nlisteners:\n  - address: 127.0.0.1:%s\n    mode: reverse\nroutes:\n  - upstream: http://127.0.0.1:%s\n    forwarded: none\n' \
      "$common" "$vport" "$oport" >"$dir/v.yaml"
    url="http://127.0.0.1:$vport/1k" ;;
  fwd)
    printf '%s\nlisteners:\n  - address: 127.0.0.1:%s\n    mode: forward\n' "$common" "$vport" >"$dir/v.yaml"
    url="http://127.0.0.1:$oport/1k" ;;
  h2)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$dir/key.pem" \
      -out "$dir/cert.pem" -days 2 -subj /CN=127.0.0.1 >/dev/null 2>&1
    printf '%s\nlisteners:\n  - address: 127.0.0.1:%s\n    mode: reverse\n    tls:\n      certificates:\n        - cert: %s\n          key: %s\nroutes:\n  - upstream: http://127.0.0.1:%s\n    forwarded: none\n' \
      "$common" "$vport" "$dir/cert.pem" "$dir/key.pem" "$oport" >"$dir/v.yaml"
    url="https://127.0.0.1:$vport/1k" ;;
  *) echo "usage: $0 [rev|fwd|h2|hit|hit-disk] [SECONDS]" >&2; exit 2 ;;
esac

valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$bin" -c "$dir/v.yaml" \
  >"$dir/viaduct.log" 2>&1 &
vpid=$!
pids+=($vpid)
# Under valgrind the start (CA store, certificates) takes seconds: wait for the port.
for _ in $(seq 120); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1',$vport),1)" 2>/dev/null && break
  sleep 0.5
done

load() { # SECONDS; prints the request count
  if [ "$mode" = h2 ]; then
    h2load -c 10 -m 10 -t 1 -D "$1" "$url" >"$dir/load.log" 2>&1
    awk '/^requests:/ {print $8}' "$dir/load.log"
  else
    local target=$url
    if [ "$mode" = fwd ]; then
      # Absolute-form targets: wrk talks to the proxy and asks for the origin's URL, with the
      # origin's authority as Host, as a client of a proxy sends it (and the harness does).
      printf 'wrk.path = "%s"\nwrk.headers["Host"] = "%s"\n' "$url" "$(echo "$url" | cut -d/ -f3)" \
        >"$dir/fwd.lua"
      target="http://127.0.0.1:$vport/"
      set -- "$1" -s "$dir/fwd.lua"
    fi
    wrk -c 50 -t 1 -d "$1" "${@:2}" "$target" >"$dir/load.log"
    if grep -q 'Non-2xx' "$dir/load.log"; then
      echo 0 # counted answers must be the 200s of the 1 KiB file
    else
      awk '/requests in/ {print $1}' "$dir/load.log"
    fi
  fi
}
load 2 >/dev/null
callgrind_control -z "$vpid" >/dev/null
done_n=$(load "$secs")
callgrind_control -d "$vpid" >/dev/null
sleep 1
[ "${done_n:-0}" -gt 0 ] || { echo "instr.sh: no requests completed" >&2; cat "$dir/load.log" >&2; exit 1; }
out=$(ls -t "$dir"/cg.out.* | head -1)
total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
[ -z "${INSTR_OUT:-}" ] || cp "$out" "$INSTR_OUT"
echo "mode $mode: $done_n requests, $total user-space instructions, $((total / done_n)) per request"
callgrind_annotate --threshold=100 "$out" 2>/dev/null | awk '/file:function/ {on=1; next} on && NF' |
  grep -v -E 'vd_worker_run|clone.S|start_thread' | head -15
