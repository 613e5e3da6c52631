#!/usr/bin/env bash
# Regenerates the capture fixtures in this directory from real servers and real clients.
#
#   sudo tests/data/make-fixtures.sh
#
# Two network namespaces joined by a veth pair (plus an 802.1Q VLAN and an 802.1ad/802.1Q
# QinQ pair of sub-interfaces on it), nginx and fixture_server.py in the server namespace,
# curl and fixture_client.py in the client namespace. Every capture records a fixed scenario
# (see README.md); the bytes differ from run to run (timestamps, ports, sequence numbers),
# the conversations do not. Nothing leaves the namespaces, which are removed on exit.
#
# The new files replace the old ones only once every capture has succeeded.
set -euo pipefail

DATA="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TAG="apisfx-$$"
SRV="$TAG-srv"
CLI="$TAG-cli"
WORK=""
PIDS=()

die() {
    echo "make-fixtures: $*" >&2
    exit 1
}

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    ip netns del "$SRV" 2>/dev/null || true
    ip netns del "$CLI" 2>/dev/null || true
    if [[ -n "$WORK" ]]; then
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'echo "make-fixtures: command failed at line $LINENO" >&2' ERR
trap 'exit 130' INT TERM

# --- tools -----------------------------------------------------------------------------------

[[ $EUID -eq 0 ]] || die "run as root (network namespaces and packet capture need it)"

APT_UPDATED=""
need() { # COMMAND DEBIAN-PACKAGE
    command -v "$1" >/dev/null 2>&1 && return
    command -v apt-get >/dev/null 2>&1 || die "$1 is missing (Debian package $2) and there is no apt-get"
    echo "make-fixtures: $1 is missing, installing the Debian package $2" >&2
    if [[ -z "$APT_UPDATED" ]]; then
        apt-get update -qq || die "apt-get update failed"
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null ||
        die "installing $2 failed"
    command -v "$1" >/dev/null 2>&1 || die "$1 is still missing after installing $2"
}
export PATH="$PATH:/usr/sbin:/sbin"
need ip iproute2
need tcpdump tcpdump
need dumpcap wireshark-common # writes the pcapng fixture (tcpdump writes only pcap)
need capinfos wireshark-common # counts packets (libpcap cannot read mixed link types)
need nginx nginx
need curl curl
need python3 python3

WORK="$(mktemp -d /tmp/apisessions-fixtures.XXXXXX)"
OUT="$WORK/out"
mkdir -p "$OUT" "$WORK/www"

# --- hosts -----------------------------------------------------------------------------------

# Server side is .1, client side .2:
#   fxs/fxc          10.99.0.0/24   fd00:99::/64      plain Ethernet
#   fxs.42/fxc.42    10.99.42.0/24  fd00:99:42::/64   802.1Q VLAN 42
#   fxs.100.43/...   10.99.43.0/24  fd00:99:43::/64   802.1ad VLAN 100 carrying 802.1Q VLAN 43
ip netns add "$SRV"
ip netns add "$CLI"
ip -n "$SRV" link add fxs type veth peer name fxc netns "$CLI"
ip -n "$SRV" link set fxs address 02:00:00:99:00:01
ip -n "$CLI" link set fxc address 02:00:00:99:00:02

add_addresses() { # NAMESPACE DEVICE NET HOST
    local ns="$1" dev="$2" net="$3" host="$4" v6
    if [[ $net == 0 ]]; then v6="fd00:99::$host"; else v6="fd00:99:$net::$host"; fi
    ip -n "$ns" link set "$dev" up
    ip -n "$ns" addr add "10.99.$net.$host/24" dev "$dev"
    ip -n "$ns" addr add "$v6/64" dev "$dev" nodad
}
for side in "$SRV fxs 1" "$CLI fxc 2"; do
    read -r ns dev host <<<"$side"
    ip -n "$ns" link set lo up
    add_addresses "$ns" "$dev" 0 "$host"
done

# VLAN sub-interfaces need 802.1Q in the kernel (CONFIG_VLAN_8021Q). Without it the VLAN
# scenario runs untagged and tag_vlans.py inserts the tags into the capture afterwards, where
# libpcap would have put them: IPv4 and ARP in VLAN 42, IPv6 in QinQ 100/43.
if ip -n "$SRV" link add link fxs name fxs.42 type vlan id 42 2>/dev/null; then
    VLAN_MODE=kernel
    ip -n "$SRV" link del fxs.42
    for side in "$SRV fxs 1" "$CLI fxc 2"; do
        read -r ns dev host <<<"$side"
        ip -n "$ns" link add link "$dev" name "$dev.42" type vlan id 42
        add_addresses "$ns" "$dev.42" 42 "$host"
        ip -n "$ns" link add link "$dev" name "$dev.100" type vlan proto 802.1ad id 100
        ip -n "$ns" link set "$dev.100" up
        ip -n "$ns" link add link "$dev.100" name "$dev.100.43" type vlan id 43
        add_addresses "$ns" "$dev.100.43" 43 "$host"
    done
    VLAN_V4=10.99.42.1
    VLAN_V6=fd00:99:43::1
else
    VLAN_MODE=rewrite
    echo "make-fixtures: this kernel has no 802.1Q VLAN support; http-vlan.pcap gets its tags" \
        "inserted by tag_vlans.py after an untagged capture" >&2
    VLAN_V4=10.99.0.1
    VLAN_V6=fd00:99::1
fi

srv() { ip netns exec "$SRV" "$@"; }
cli() { ip netns exec "$CLI" "$@"; }

# --- servers ---------------------------------------------------------------------------------

# Content: a compressible page (gzip), small files, and 300 000 incompressible bytes.
python3 - "$WORK/www" <<'EOF'
import json, sys, random
root = sys.argv[1]
rows = "".join('<tr><td>%d</td><td>row number %d of the fixture table</td></tr>\n' % (i, i) for i in range(120))
open(root + "/index.html", "w").write("<!doctype html>\n<html><head><title>fixture</title></head><body>\n<table>\n%s</table>\n</body></html>\n" % rows)
open(root + "/small.txt", "w").write("hello from nginx\n")
open(root + "/data.json", "w").write(json.dumps({"users": [{"id": i, "name": "user%d" % i, "role": "reader"} for i in range(40)]}, indent=1) + "\n")
rng = random.Random(42)
open(root + "/big.bin", "wb").write(bytes(rng.getrandbits(8) for _ in range(300000)))
EOF
head -c 200000 "$WORK/www/big.bin" >"$WORK/upload-200k.bin"
head -c 20000 "$WORK/www/big.bin" >"$WORK/upload-20k.bin"

cat >"$WORK/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $WORK/body;
    proxy_temp_path $WORK/proxy;
    fastcgi_temp_path $WORK/fastcgi;
    uwsgi_temp_path $WORK/uwsgi;
    scgi_temp_path $WORK/scgi;
    types { text/html html; text/plain txt; application/json json; application/octet-stream bin; }
    default_type application/octet-stream;
    keepalive_requests 100;
    gzip on;
    gzip_types text/plain application/json;
    gzip_min_length 256;
    server {
        listen 8080;
        listen [::]:8080;
        server_name fixture;
        root $WORK/www;
    }
}
EOF
# `ip netns exec` execs the program, so $! is the server itself: cleanup can stop it.
ip netns exec "$SRV" nginx -c "$WORK/nginx.conf" -p "$WORK" >"$WORK/nginx.log" 2>&1 &
PIDS+=($!)
ip netns exec "$SRV" python3 "$DATA/fixture_server.py" 8000 >"$WORK/server.log" 2>&1 &
PIDS+=($!)

wait_for() { # DESCRIPTION COMMAND...
    local what="$1"
    shift
    for _ in $(seq 100); do
        if "$@" >/dev/null 2>&1; then
            return
        fi
        sleep 0.1
    done
    die "timed out waiting for $what"
}
wait_for "nginx" cli curl -sf -o /dev/null http://10.99.0.1:8080/small.txt
wait_for "fixture_server.py" cli curl -sf -o /dev/null http://10.99.0.1:8000/download

# --- capture ---------------------------------------------------------------------------------

# Captures run in immediate mode with a 32 MiB buffer: the ring's slots are snaplen-sized
# (256 KiB), so the default 2 MiB buffer holds only 8 packets and a burst of GSO packets on
# `any` overflows it.
CAP_PID=""
CAP_NAME=""
capture() { # OUTPUT-FILE PROGRAM ARGS... (runs in the server namespace)
    local out="$1" log="$WORK/capture.log"
    shift
    CAP_NAME="$out"
    : >"$log"
    ip netns exec "$SRV" "$@" -w "$OUT/$out" 2>"$log" &
    CAP_PID=$!
    PIDS+=("$CAP_PID")
    # tcpdump says "listening on", dumpcap "Capturing on" once the socket is open.
    for _ in $(seq 100); do
        if grep -q -E "listening on|Capturing on" "$log"; then
            return
        fi
        sleep 0.1
    done
    die "$1 did not start: $(cat "$log")"
}

stop_capture() {
    # Let the last FIN/ACKs cross the veth and reach the capture before stopping. tcpdump runs
    # in immediate mode; dumpcap may hold packets until its ring block times out (1 s).
    sleep 2
    kill -INT "$CAP_PID"
    # A capture that ignores SIGINT must not hang the script.
    (sleep 10 && kill -KILL "$CAP_PID" 2>/dev/null) &
    local watchdog=$!
    wait "$CAP_PID" || true
    kill "$watchdog" 2>/dev/null || true
    # The capture's own statistics: packets the kernel dropped would leave holes in a fixture.
    local stats
    stats="$(grep -i -E "captured|dropped" "$WORK/capture.log" || true)"
    echo "$CAP_NAME: $(tr '\n' ';' <<<"$stats")"
    if grep -q -E "^[1-9][0-9]* packets? dropped by kernel|Packets received/dropped.*/[1-9]" <<<"$stats"; then
        die "$CAP_NAME: the capture dropped packets"
    fi
}

# Runs curl in a namespace and checks the HTTP status codes it printed, one per URL.
codes_in() { # NAMESPACE EXPECTED CURL-ARGS...
    local ns="$1" expected="$2" got
    shift 2
    got="$(ip netns exec "$ns" curl -sS -g --max-time 20 -w '%{http_code} ' "$@")"
    got="${got% }"
    [[ "$got" == "$expected" ]] || die "curl $*: got status '$got', expected '$expected'"
}
codes() { codes_in "$CLI" "$@"; }

client() { cli python3 "$DATA/fixture_client.py" "$@" || die "fixture_client.py $* failed"; }

V4=10.99.0.1
V6='[fd00:99::1]'

# 1. http-ethernet.pcap: the whole scenario on the veth, Ethernet, classic pcap (µs).
capture http-ethernet.pcap tcpdump --immediate-mode -B 32768 -i fxs -n -U -Z root --time-stamp-precision=micro
#   keep-alive: three requests on one connection (curl reuses it)
codes "200 200 200" -o /dev/null -o /dev/null -o /dev/null -A fixture-curl \
    "http://$V4:8080/" "http://$V4:8080/small.txt" "http://$V4:8080/data.json"
#   gzip-encoded response
headers="$(cli curl -sS --compressed -A fixture-curl -D - -o /dev/null "http://$V4:8080/index.html")"
grep -qi '^content-encoding: gzip' <<<"$headers" || die "nginx did not gzip index.html"
#   HEAD, then 200 and 304 by ETag
codes "200" -I -o /dev/null -A fixture-curl "http://$V4:8080/big.bin"
etag="$(cli curl -sS -I -A fixture-curl "http://$V4:8080/small.txt" | tr -d '\r' | sed -n 's/^[Ee][Tt][Aa][Gg]: //p')"
[[ -n "$etag" ]] || die "nginx sent no ETag"
codes "304" -o /dev/null -A fixture-curl -H "If-None-Match: $etag" "http://$V4:8080/small.txt"
#   300 KB download
size="$(cli curl -sS -A fixture-curl -o /dev/null -w '%{size_download}' "http://$V4:8080/big.bin")"
[[ "$size" == 300000 ]] || die "big.bin: downloaded $size bytes"
#   200 KB upload with Expect: 100-continue (the server answers 100 Continue, then 201)
answer="$(cli curl -sS -A fixture-curl -H 'Expect: 100-continue' -H 'Content-Type: application/octet-stream' \
    --data-binary "@$WORK/upload-200k.bin" "http://$V4:8000/upload")"
grep -q '"received": 200000' <<<"$answer" || die "upload: $answer"
#   a chunked request body, over IPv6
answer="$(cli curl -sS -g -A fixture-curl -H 'Transfer-Encoding: chunked' -H 'Content-Type: text/plain' \
    --data-binary 'a chunked request body' "http://$V6:8000/upload")"
grep -q '"received": 22' <<<"$answer" || die "chunked upload: $answer"
#   pipelining, keep-alive mix (chunked+trailer, 204, 304, HEAD, gzip, POST), 101 Upgrade,
#   a slow response, a close-delimited body
client pipeline 10.99.0.1 8080
client keepalive fd00:99::1 8000
client upgrade 10.99.0.1 8000
client slow fd00:99::1 8000
client close 10.99.0.1 8000
#   IPv6 to nginx, one found and one not
codes "200 404" -o /dev/null -o /dev/null -A fixture-curl \
    "http://$V6:8080/small.txt" "http://$V6:8080/missing"
stop_capture

# 2. http-any.pcap: `tcpdump -i any` (Linux cooked v2, nanosecond timestamps): the veth and
#    loopback traffic inside the server namespace (ARPHRD_LOOPBACK in the cooked header).
capture http-any.pcap tcpdump --immediate-mode -B 32768 -i any -y LINUX_SLL2 -n -U -Z root --time-stamp-precision=nano
codes "200 200" -o /dev/null -o /dev/null -A fixture-curl \
    "http://$V4:8080/small.txt" "http://$V4:8080/data.json"
client pipeline 10.99.0.1 8080
client keepalive 10.99.0.1 8000
codes_in "$SRV" "200 404" -o /dev/null -o /dev/null -A fixture-curl-lo \
    http://127.0.0.1:8080/small.txt http://127.0.0.1:8080/missing
srv python3 "$DATA/fixture_client.py" upgrade ::1 8000 || die "upgrade over lo failed"
srv python3 "$DATA/fixture_client.py" keepalive ::1 8000 || die "keepalive over lo failed"
stop_capture

# 3. http-vlan.pcap: IPv4 over 802.1Q VLAN 42 and IPv6 over QinQ (802.1ad 100, 802.1Q 43),
#    captured on the parent veth, where the tags are on the wire.
if [[ $VLAN_MODE == kernel ]]; then
    capture http-vlan.pcap tcpdump --immediate-mode -B 32768 -i fxs -n -U -Z root
else
    capture untagged-vlan.pcap tcpdump --immediate-mode -B 32768 -i fxs -n -U -Z root
fi
codes "200 200" -o /dev/null -o /dev/null -A fixture-curl \
    "http://$VLAN_V4:8080/small.txt" "http://$VLAN_V4:8080/data.json"
client pipeline "$VLAN_V4" 8080
client upgrade "$VLAN_V4" 8000
client keepalive "$VLAN_V6" 8000
codes "200" -o /dev/null -A fixture-curl "http://[$VLAN_V6]:8080/small.txt"
stop_capture
if [[ $VLAN_MODE == rewrite ]]; then
    python3 "$DATA/tag_vlans.py" "$OUT/untagged-vlan.pcap" "$OUT/http-vlan.pcap" ||
        die "tag_vlans.py failed"
    rm "$OUT/untagged-vlan.pcap"
fi

# 4. http-multi.pcapng: dumpcap with two interfaces of different link types in one file:
#    the veth (Ethernet) and `any` (Linux cooked v1) filtered to loopback traffic.
capture http-multi.pcapng dumpcap -q -B 32 -i fxs -B 32 -i any -y LINUX_SLL -f 'host 127.0.0.1 or host ::1'
codes "200 304" -o /dev/null -A fixture-curl "http://$V4:8080/small.txt" \
    --next -sS -w '%{http_code} ' -o /dev/null -A fixture-curl -H "If-None-Match: $etag" \
    "http://$V4:8080/small.txt"
client keepalive fd00:99::1 8000
client slow 10.99.0.1 8000
codes_in "$SRV" "200" -o /dev/null -A fixture-curl-lo http://127.0.0.1:8080/data.json
srv python3 "$DATA/fixture_client.py" close ::1 8000 || die "close over lo failed"
stop_capture

# 5. http-snaplen.pcap: captured with a 200-byte snaplen, so payloads are cut (missing > 0).
capture http-snaplen.pcap tcpdump --immediate-mode -B 32768 -i fxs -n -U -Z root -s 200
codes "200 200" -o /dev/null -o /dev/null -A fixture-curl \
    "http://$V4:8080/data.json" "http://$V4:8080/index.html"
answer="$(cli curl -sS -A fixture-curl --data-binary "@$WORK/upload-20k.bin" "http://$V4:8000/upload")"
grep -q '"received": 20000' <<<"$answer" || die "upload: $answer"
stop_capture

# --- results ---------------------------------------------------------------------------------

for file in "$OUT"/*; do
    size=$(stat -c %s "$file")
    ((size < 2 * 1024 * 1024)) || die "$(basename "$file") is $size bytes: too big for a fixture"
    packets=$(capinfos -M -c -r -T "$file" | cut -f2)
    ((packets > 0)) || die "$(basename "$file") holds no packets"
    printf '%-20s %8d bytes %5d packets\n' "$(basename "$file")" "$size" "$packets"
done
cp "$OUT"/* "$DATA"/
chmod 644 "$DATA"/http-*
echo "make-fixtures: fixtures written to $DATA"
