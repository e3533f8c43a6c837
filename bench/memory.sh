#!/usr/bin/env bash
# Memory benchmark (issue 16, point 5): bytes per session in the embedded store, and the
# gateway's resident memory while it streams a 1 GiB upload and a 1 GiB download.
#
#   bench/memory.sh                       # 100k and 1M sessions, 1 GiB each way
#   SESSIONS="10000 100000" SIZE=256M bench/memory.sh
#
# Sessions are made by the development login (demo mode) at full speed with wrk (one POST
# a session); bytes per session = (RSS after - RSS before) / sessions. The upload goes to
# `varco echo` (which counts and drops the body), the download comes from nginx serving a
# sparse file; VmHWM (peak RSS) is read before and after each. Everything on loopback; the
# script installs wrk and nginx when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bench_needs nginx=nginx-light wrk=wrk curl=curl
bench_varco

SESSIONS=${SESSIONS:-"100000 1000000"}
SIZE=${SIZE:-1G}
UP_PORT=${UP_PORT:-19200}
FILE_PORT=${FILE_PORT:-19201}
GW_PORT=${GW_PORT:-19202}
bench_workdir

"$VARCO" echo --listen "127.0.0.1:$UP_PORT" 2>/dev/null &
pids+=($!)
truncate -s "$SIZE" "$OUT/big.bin"
chmod 755 "$OUT" && chmod 644 "$OUT/big.bin"   # nginx's workers read it
cat > "$OUT/nginx.conf" <<NGINX
worker_processes 1;
pid $OUT/nginx.pid;
error_log $OUT/nginx-error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  server { listen 127.0.0.1:$FILE_PORT; root $OUT; }
}
NGINX
nginx -c "$OUT/nginx.conf" -p "$OUT" -e "$OUT/nginx-error.log"

max=1000000
for n in $SESSIONS; do [ "$n" -gt "$max" ] && max=$n; done
cat > "$OUT/varco.toml" <<TOML
mode = "demo"
[server]
max_body_bytes = 4294967296
request_timeout = "10m"
[[server.listener]]
address = "127.0.0.1:$GW_PORT"
[log]
format = "json"
access_log = false
level = "warn"
[session]
cookie_name = "varco-mem"
secure = false
capacity = $((2 * max))
idle_timeout = "8h"
absolute_timeout = "12h"
[upstream.echo]
url = "http://127.0.0.1:$UP_PORT"
[upstream.files]
url = "http://127.0.0.1:$FILE_PORT"
[[route]]
path = "/upload"
upstream = "echo"
public = true
[[route]]
path = "/big.bin"
upstream = "files"
public = true
[[route]]
path = "/"
upstream = "echo"
public = false
TOML
"$VARCO" serve --config "$OUT/varco.toml" > "$OUT/varco.log" 2>&1 &
gw=$!
pids+=($gw)
for _ in $(seq 100); do
  curl -fsS -o /dev/null "http://127.0.0.1:$GW_PORT/_varco/healthz" 2>/dev/null && break
  sleep 0.1
done
rss() { awk '/^VmRSS/ {print $2}' "/proc/$gw/status"; }   # KiB
hwm() { awk '/^VmHWM/ {print $2}' "/proc/$gw/status"; }   # KiB

echo "== sessions in the embedded store (development login, one POST a session)"
cat > "$OUT/login.lua" <<'LUA'
wrk.method = "POST"
wrk.body = "user=cittadino&return=%2F"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
LUA
made=0
base=$(rss)
for n in $SESSIONS; do
  todo=$((n - made))
  # wrk runs for a time, not a count: run in slices until the store holds n sessions.
  while [ "$todo" -gt 0 ]; do
    wrk -t2 -c32 -d1s -s "$OUT/login.lua" "http://127.0.0.1:$GW_PORT/_varco/dev-login" > "$OUT/wrk.txt"
    done_now=$(awk '/requests in/ {print $1}' "$OUT/wrk.txt")
    made=$((made + done_now))
    todo=$((n - made))
  done
  sleep 2
  now=$(rss)
  awk -v n="$made" -v a="$base" -v b="$now" 'BEGIN {
    printf "  %9d sessions: RSS %7.1f MiB (+%7.1f MiB), %.0f bytes a session\n", n, b/1024, (b-a)/1024, (b-a)*1024/n }'
done

echo "== streaming $SIZE through the gateway"
before=$(hwm)
curl -s -o /dev/null -w "  upload:   %{size_upload} bytes in %{time_total} s, status %{http_code}\n" \
  -T "$OUT/big.bin" "http://127.0.0.1:$GW_PORT/upload"
after=$(hwm)
awk -v a="$before" -v b="$after" 'BEGIN { printf "  peak RSS before %.1f MiB, after the upload %.1f MiB (+%.1f MiB)\n", a/1024, b/1024, (b-a)/1024 }'
before=$after
curl -s -o /dev/null -w "  download: %{size_download} bytes in %{time_total} s, status %{http_code}\n" \
  "http://127.0.0.1:$GW_PORT/big.bin"
after=$(hwm)
awk -v a="$before" -v b="$after" 'BEGIN { printf "  peak RSS before %.1f MiB, after the download %.1f MiB (+%.1f MiB)\n", a/1024, b/1024, (b-a)/1024 }'
