#!/usr/bin/env bash
# By hand (docs/BENCHMARKS.md, "what the body bytes past the body cap cost" and lever 1's entry):
# the sensor's CPU per exchange by response size. nginx (one worker) on a private network
# namespace's loopback, `apisessions run --iface lo --port 8080`; the daemon's CPU from /proc, the
# capture programs' run time from the kernel's BPF statistics, each divided by the exchanges the
# daemon decoded, and the share of response bytes the kernel skipped (lever 1). Three loads:
#   small.json  512 bytes, wrk -t1 -c10 for RUN_SECONDS
#   big.bin     256 KiB,   wrk -t1 -c10 for RUN_SECONDS (nginx sends each in one go)
#   large.bin   8 MiB,     DOWNLOADS curl downloads, 4 at a time, each at most RATE bytes/s (a
#               client on a real network, still receiving when the daemon has read the head)
# As root, after `cargo xtask build --release`; needs nginx, wrk, bpftool, curl. ROUNDS (default
# 3) rounds; BIN picks the binary (compare two builds side by side by running it for each).
set -eu
BIN=${BIN:-$(cd "$(dirname "$0")/../.." && pwd)/target/release/apisessions}
ROUNDS=${ROUNDS:-3}
# Not SECONDS: bash keeps its own count of seconds under that name.
RUN_SECONDS=${RUN_SECONDS:-8}
DOWNLOADS=${DOWNLOADS:-24}
RATE=${RATE:-100M}
NS=apis-body-$$
D=$(mktemp -d)
STATS_WAS=$(sysctl -n kernel.bpf_stats_enabled)
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  sleep 1
  ip netns del "$NS" 2>/dev/null || true
  sysctl -qw kernel.bpf_stats_enabled="$STATS_WAS"
  rm -rf "$D"
}
trap cleanup EXIT
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
mkdir -p "$D/root" "$D/data"
head -c 512 /dev/zero | tr '\0' 'a' >"$D/root/small.json"
head -c 262144 /dev/zero | tr '\0' 'b' >"$D/root/big.bin"
head -c 8388608 /dev/zero | tr '\0' 'c' >"$D/root/large.bin"
cat >"$D/nginx.conf" <<CONF
user root; daemon off; worker_processes 1; pid $D/nginx.pid; error_log $D/error.log;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 100000; server { listen 127.0.0.1:8080; root $D/root; } }
CONF
ip netns exec "$NS" nginx -c "$D/nginx.conf" &
sleep 1
sysctl -qw kernel.bpf_stats_enabled=1
ip netns exec "$NS" "$BIN" run --iface lo --port 8080 --user root --summary-interval 0 \
  --data-dir "$D/data" >"$D/daemon.log" 2>&1 &
DAEMON=$!
sleep 3
ip netns exec "$NS" curl -s -o /dev/null -w "check: big.bin %{http_code}, %{size_download} bytes\n" \
  http://127.0.0.1:8080/big.bin
bpf_ns() {
  bpftool prog show -j | python3 -c "import json, sys; \
print(sum(p.get('run_time_ns', 0) for p in json.load(sys.stdin) if p.get('name', '').startswith('apis_tc')))"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$DAEMON/stat"; }
# Exchanges decoded, and body bytes the kernel skipped (0 on a build without lever 1).
counters() {
  "$BIN" stats --json --data-dir "$D/data" | python3 -c "import json, sys; \
s = json.load(sys.stdin)['stages']; print(s['http']['exchanges'], s['kernel'].get('skipped_bytes', 0))"
}
load() {
  case $1 in
  large.bin)
    for _ in $(seq $((DOWNLOADS / 4))); do
      pids=()
      for _ in 1 2 3 4; do
        ip netns exec "$NS" curl -s -o /dev/null --limit-rate "$RATE" http://127.0.0.1:8080/large.bin &
        pids+=($!)
      done
      wait "${pids[@]}"
    done
    ;;
  *) ip netns exec "$NS" wrk -t1 -c10 -d"${RUN_SECONDS}s" "http://127.0.0.1:8080/$1" >/dev/null ;;
  esac
}
hz=$(getconf CLK_TCK)
for round in $(seq "$ROUNDS"); do
  for file in small.json big.bin large.bin; do
    size=$(stat -c %s "$D/root/$file")
    c0=$(cpu_ticks); b0=$(bpf_ns); read -r e0 s0 <<<"$(counters)"; t0=$(date +%s.%N)
    load "$file"
    t1=$(date +%s.%N)
    sleep 2 # the statistics file is written every second
    c1=$(cpu_ticks); b1=$(bpf_ns); read -r e1 s1 <<<"$(counters)"
    python3 -c "
n = $e1 - $e0; daemon = ($c1 - $c0) / $hz * 1e6 / n; bpf = ($b1 - $b0) / 1e3 / n
skipped = ($s1 - $s0) / (n * $size)
print(f'round $round $file: {n} exchanges ({n / ($t1 - $t0):.0f}/s), daemon {daemon:.2f} us, '
      f'BPF {bpf:.2f} us, total {daemon + bpf:.2f} us per exchange, {skipped:.1%} of the bodies skipped')"
  done
done
