#!/usr/bin/env bash
# By hand (docs/BENCHMARKS.md, "what the body bytes past the body cap cost"): the sensor's CPU per
# exchange for 512-byte and 256 KiB responses, which is what lever 1 of the performance issue (the
# kernel skipping body bytes past the body cap) could save. nginx (one worker) and wrk on a
# private network namespace's loopback, `apisessions run --iface lo --port 8080`; the daemon's CPU
# from /proc, the capture programs' run time from the kernel's BPF statistics, each divided by the
# exchanges the daemon decoded. As root, after `cargo xtask build --release`; needs nginx, wrk,
# bpftool, curl. ROUNDS (default 3) rounds of SECONDS (default 8) per file.
set -eu
BIN=${BIN:-$(cd "$(dirname "$0")/../.." && pwd)/target/release/apisessions}
ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS:-8}
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
exchanges() {
  "$BIN" stats --json --data-dir "$D/data" |
    python3 -c "import json, sys; print(json.load(sys.stdin)['stages']['http']['exchanges'])"
}
hz=$(getconf CLK_TCK)
for round in $(seq "$ROUNDS"); do
  for file in small.json big.bin; do
    c0=$(cpu_ticks); b0=$(bpf_ns); e0=$(exchanges)
    ip netns exec "$NS" wrk -t1 -c10 -d"${SECONDS_PER_RUN}s" "http://127.0.0.1:8080/$file" >/dev/null
    sleep 2 # the statistics file is written every second
    c1=$(cpu_ticks); b1=$(bpf_ns); e1=$(exchanges)
    python3 -c "
n = $e1 - $e0; daemon = ($c1 - $c0) / $hz * 1e6 / n; bpf = ($b1 - $b0) / 1e3 / n
print(f'round $round $file: {n} exchanges ({n / $SECONDS_PER_RUN:.0f}/s), daemon {daemon:.2f} us, '
      f'BPF {bpf:.2f} us, total {daemon + bpf:.2f} us per exchange')"
  done
done
