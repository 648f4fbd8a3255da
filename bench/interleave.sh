#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Interleaved comparison for one scenario: every product is started at once (with the team
# harness's own adapters, so each gets exactly the configuration it gets there) and the load
# visits them in turn, ROUNDS rounds of DURATION seconds each, the order rotated every round.
# A slow phase of the machine then lands on every product alike instead of on whichever one the
# harness happened to measure during it: on the 2-core virtual machines this project runs on,
# the direct row of one harness run moves by 2x between scenarios, so ratios between rows
# measured a minute apart are mostly the machine's. Reported per product: the median req/s and
# CPU per request over the rounds (CPU from /proc as in the harness: utime+stime of the process
# tree), and per peer the median over rounds of viaduct's ratio to it (req/s, CPU), each round's
# ratio taken from the two turns of that round.
#
#   bench/interleave.sh --scenario rev [--size 1k] [--products viaduct,haproxy,nginx]
#                       [--rounds 8] [--duration 5] [--threads 1] [--out DIR]
#
# Scenarios: fwd (absolute-form through a forward proxy), rev (no-store reverse proxy), hit
# (cache hits, warmed first), h2 (h2load over TLS, -c10 -m10). Load: wrk -t1 -c50 (h2load -t1
# -c10 -m10), one warm-up second before each turn; --threads N gives wrk N threads (the harness's
# --threads), for rows where one wrk thread is the bottleneck: the "client cores" column says
# so when it nears 1.0 per thread (wrk reads 8 KiB per call, 128 calls per 1 MiB response).
# Products stay up (idle) between their turns; whatever CPU an idle product burns between turns
# is not counted against anyone. Results:
# DIR/rounds.tsv (one line per turn) and DIR/summary.md (also printed). Every process started
# is stopped by PID on exit (the harness's launch/stop_all).
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
BENCH_DIR=${VIADUCT_HARNESS:-$root/../shared/bench}
BENCH_DIR=$(cd "$BENCH_DIR" && pwd) || exit 1
# shellcheck source=/dev/null
. "$BENCH_DIR/lib/common.sh"
# shellcheck source=/dev/null
. "$BENCH_DIR/lib/origin.sh"
for f in "$BENCH_DIR"/adapters/*.sh; do
  # shellcheck source=/dev/null
  . "$f"
done

SCEN="" SIZE=1k PRODUCTS=viaduct,haproxy,nginx ROUNDS=8 DURATION=5 THREADS=1 OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --scenario) SCEN=$2; shift ;;
    --size) SIZE=$2; shift ;;
    --products) PRODUCTS=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --threads) THREADS=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n '3,25p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
case "$SCEN" in fwd|rev|hit|h2) ;; *) die "--scenario fwd|rev|hit|h2 is required" ;; esac
case "$SIZE" in 1k) BYTES=1024 ;; 64k) BYTES=65536 ;; 1m) BYTES=1048576 ;; *) die "--size 1k|64k|1m" ;; esac
[ "$SCEN" != h2 ] || [ "$SIZE" = 1k ] || die "h2 runs 1k only (as the harness)"
[[ "$THREADS" =~ ^[1-9][0-9]?$ ]] || die "--threads takes 1-99"
[ "$SCEN" != h2 ] || [ "$THREADS" = 1 ] || die "--threads is for wrk (h2 runs h2load -t1, as the harness)"
[[ ",$PRODUCTS," == *,viaduct,* ]] || die "--products must include viaduct (ratios are viaduct's)"
[ -x "$root/build/viaduct" ] || die "build first: make build"
for t in wrk h2load curl openssl python3 nginx; do
  command -v "$t" >/dev/null || die "$t not found: run ../shared/bench/install.sh"
done

export VIADUCT_BIN="$root/build/viaduct"
export VIADUCT_CMD="exec $here/viaduct-bench.sh"
export VIADUCT_SCENARIOS="fwd rev hit h2" WORKERS=1
[ -n "$OUT" ] || OUT="$root/bench/results/interleave-$SCEN-$SIZE"
mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)
RUNDIR=$(mktemp -d -t viaduct-interleave.XXXXXX) || die "mktemp failed"
chmod 755 "$RUNDIR"
: >"$RUNDIR/pids"
trap 'stop_all; rm -rf "$RUNDIR"' EXIT
trap 'exit 130' INT TERM
ulimit -n "$(ulimit -Hn)" 2>/dev/null
CLK_TCK=$(getconf CLK_TCK)

mkdir -p "$RUNDIR/tls"
make_cert "$RUNDIR/tls"
CERT="$RUNDIR/tls/cert.pem" KEY="$RUNDIR/tls/key.pem"
chmod 644 "$CERT" "$KEY"
export CERT KEY
ORIGIN_PORT=$(free_port)
export ORIGIN_PORT
ORIGIN_PID=$(origin_start "$RUNDIR/origin" "$ORIGIN_PORT" "$(free_port)")
wait_port "$ORIGIN_PORT" 10 || die "origin nginx did not start"

loc=nostore
[ "$SCEN" = hit ] && loc=cache
declare -A PID PORT
names=()
for p in ${PRODUCTS//,/ }; do
  v="${p}_SCENARIOS"
  [[ " ${!v:-} " == *" $SCEN "* ]] || { log "$p has no $SCEN mode: left out"; continue; }
  port=$(free_port)
  dir="$RUNDIR/$p"
  mkdir -p "$dir"
  pid=$(MODE=$SCEN PORT=$port DIR=$dir "${p}_start") || pid=""
  ready=wait_port
  declare -F "${p}_ready" >/dev/null && ready="${p}_ready"
  if [ -z "$pid" ] || ! $ready "$port" 60; then
    log "$p did not start: left out"
    continue
  fi
  PID[$p]=$pid PORT[$p]=$port
  names+=("$p")
done
[ -n "${PID[viaduct]:-}" ] || die "viaduct did not start"

curl_args() { # PRODUCT
  local port=${PORT[$1]}
  case "$SCEN" in
    fwd) echo "-x http://127.0.0.1:$port http://127.0.0.1:$ORIGIN_PORT/$loc/$SIZE" ;;
    h2) echo "-k --http2 https://127.0.0.1:$port/$loc/$SIZE" ;;
    *) echo "http://127.0.0.1:$port/$loc/$SIZE" ;;
  esac
}
for p in "${names[@]}"; do
  for _ in 1 2 3; do # a hit run needs the object cached: three fetches, as the harness does
    # shellcheck disable=SC2046
    got=$(curl -s -o /dev/null --noproxy '*' --max-time 10 -w '%{http_code} %{size_download}' $(curl_args "$p"))
  done
  [ "$got" = "200 $BYTES" ] || die "$p: sanity check got '$got', want '200 $BYTES'"
done

load() { # PRODUCT SECONDS OUTFILE
  local port=${PORT[$1]}
  if [ "$SCEN" = h2 ]; then
    h2load -c 10 -m 10 -t 1 -D "$2" "https://127.0.0.1:$port/$loc/$SIZE" >"$3" 2>&1
    # "finished in 5.00s, 37000.00 req/s, ..." and "requests: ... 185000 succeeded, ..."
    awk '/^finished in/ {s = $3 + 0} /^requests:/ {n = $8} END {print n + 0, s}' "$3"
    return
  fi
  local url="http://127.0.0.1:$port/" path="/$loc/$SIZE" host=""
  if [ "$SCEN" = fwd ]; then
    path="http://127.0.0.1:$ORIGIN_PORT/$loc/$SIZE" host="127.0.0.1:$ORIGIN_PORT"
  fi
  WRK_PATH=$path WRK_HOST=$host wrk -t"$THREADS" -c50 -d"$2s" --timeout 5s \
    -s "$BENCH_DIR/tools/report.lua" "$url" >"$3" 2>&1
  if grep -q 'Non-2xx' "$3"; then echo 0 0; return; fi
  sed -n 's/^RESULT requests=\([0-9]*\) duration_us=\([0-9]*\) .*/\1 \2/p' "$3" |
    awk '{print $1, $2 / 1e6}'
}

printf 'round\tproduct\trequests\tseconds\trps\tcpu_us_req\tclient_us_req\tother_cores\n' >"$OUT/rounds.tsv"
n=${#names[@]}
log "interleave: $SCEN $SIZE, ${names[*]}, $ROUNDS rounds of ${DURATION}s, $THREADS load thread(s)"
for r in $(seq 1 "$ROUNDS"); do
  for i in $(seq 0 $((n - 1))); do
    p=${names[$(( (i + r - 1) % n ))]}
    load "$p" 1 "$RUNDIR/warm.log" >/dev/null
    c0=$(cpu_ticks "${PID[$p]}") o0=$(cpu_ticks "$ORIGIN_PID")
    snap_children "$RUNDIR/times0"
    m0=$(machine_busy_ticks)
    load "$p" "$DURATION" "$RUNDIR/load.log" >"$RUNDIR/load.res" # not in a subshell: times sees it
    m1=$(machine_busy_ticks)
    snap_children "$RUNDIR/times1"
    c1=$(cpu_ticks "${PID[$p]}") o1=$(cpu_ticks "$ORIGIN_PID")
    k0=$(children_cpu_ms "$RUNDIR/times0") k1=$(children_cpu_ms "$RUNDIR/times1")
    read -r reqs secs <"$RUNDIR/load.res"
    [ "${reqs:-0}" -gt 0 ] || die "$p: no successful requests in round $r: $(tail -2 "$RUNDIR/load.log")"
    # other_cores: the machine's busy time (steal included: the hypervisor running other
    # guests) that was neither this product's, the origin's nor the load generator's, in cores.
    awk -v r="$r" -v p="$p" -v n="$reqs" -v s="$secs" -v c0="$c0" -v c1="$c1" -v o0="$o0" \
      -v o1="$o1" -v m0="$m0" -v m1="$m1" -v k0="$k0" -v k1="$k1" -v hz="$CLK_TCK" 'BEGIN {
        other = ((m1 - m0) - (c1 - c0) - (o1 - o0)) / hz - (k1 - k0) / 1000
        printf "%d\t%s\t%d\t%.2f\t%.0f\t%.2f\t%.2f\t%.2f\n", r, p, n, s, n / s,
          (c1 - c0) / hz * 1e6 / n, (k1 - k0) * 1000 / n, (other > 0 ? other : 0) / s }' \
      >>"$OUT/rounds.tsv"
    log "  round $r $p: $(tail -1 "$OUT/rounds.tsv" | cut -f5-8 | tr '\t' ' ') (req/s, CPU us/req, client us/req, other cores)"
  done
done

python3 - "$OUT/rounds.tsv" "$SCEN" "$SIZE" "$ROUNDS" "$DURATION" "$THREADS" "$(uname -r)" \
  "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)" >"$OUT/summary.md" <<'EOF'
import csv, statistics, sys
path, scen, size, rounds, dur, threads, kernel, model = sys.argv[1:]
rows = list(csv.DictReader(open(path), delimiter="\t"))
by = {}
for r in rows:
    by.setdefault(r["product"], {})[int(r["round"])] = (float(r["rps"]), float(r["cpu_us_req"]),
                                                         float(r["client_us_req"]),
                                                         float(r["other_cores"]))
med = statistics.median
tl = "1 load thread" if threads == "1" else f"{threads} load threads"
print(f"### Interleaved: {scen} {size}, {rounds} rounds of {dur} s, {tl} ({model}, kernel {kernel})\n")
print("| product | req/s, median (min-max) | CPU µs/req, median (min-max) | client CPU µs/req "
      "| client cores | other load (cores), median (max) |")
print("|---|---:|---:|---:|---:|---:|")
for p in sorted(by, key=lambda p: -med(v[0] for v in by[p].values())):
    rps = [v[0] for v in by[p].values()]
    cpu = [v[1] for v in by[p].values()]
    cli = [v[2] for v in by[p].values()]
    oth = [v[3] for v in by[p].values()]
    # the load generator's busy cores: near 1.0 per thread, it is what bounds the row
    ccores = [v[0] * v[2] / 1e6 for v in by[p].values()]
    print(f"| {p} | {med(rps):,.0f} ({min(rps):,.0f}-{max(rps):,.0f}) "
          f"| {med(cpu):.1f} ({min(cpu):.1f}-{max(cpu):.1f}) | {med(cli):.1f} "
          f"| {med(ccores):.2f} | {med(oth):.2f} ({max(oth):.2f}) |")
v = by["viaduct"]
peers = [p for p in by if p != "viaduct"]
if peers:
    print("\n| viaduct against | req/s ratio, median (min-max) | CPU ratio, median (min-max) |"
          " rounds with req/s ≥ 1 and CPU ≤ 0.8 |")
    print("|---|---:|---:|---:|")
    for p in peers:
        common = sorted(set(v) & set(by[p]))
        rr = [v[k][0] / by[p][k][0] for k in common]
        cr = [v[k][1] / by[p][k][1] for k in common]
        meet = sum(1 for a, b in zip(rr, cr) if a >= 1 and b <= 0.8)
        print(f"| {p} | {med(rr):.2f}× ({min(rr):.2f}-{max(rr):.2f}) "
              f"| {med(cr):.2f}× ({min(cr):.2f}-{max(cr):.2f}) | {meet} of {len(common)} |")
EOF
cat "$OUT/summary.md"
