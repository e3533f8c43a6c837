#!/usr/bin/env bash
# Load-and-fault benchmark (issue 14): two varco replicas sharing one Redis, loaded by wrk
# for DURATION seconds (one wrk per replica, the same session cookie on both), with Redis
# stopped and restarted a third of the way in and a SIGHUP reload of both replicas two
# thirds in. The upstream is `varco echo --jwks`: it verifies every request's identity
# header against the gateway's JWKS (signature, aud, iss, exp, method and URL binding), as
# a backend must, and counts what verified and what did not — the proof that no request
# reached it without a valid signed header, whatever the faults. nginx as a plain proxy in
# front of a plain echo upstream is loaded in the same run for the ratios.
#
#   bench/scaleout.sh                    # 60 s fault run, 20 s nginx baseline
#   DURATION=30 BASE_DURATION=10 bench/scaleout.sh
#   VARCO=/tmp/varco-other bench/scaleout.sh
#   FAULTS=0 bench/scaleout.sh           # the same load without the Redis restart and reload
#   FAULTS=redis / FAULTS=reload         # one of the two only
#
# Everything runs on loopback; the script starts and stops its own processes and installs
# redis-server, nginx and wrk (Debian packages) when missing. Exit status 1 when any
# request reached the upstream without a valid header, or nothing was served.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-60}
BASE_DURATION=${BASE_DURATION:-20}
CONNS=${CONNS:-32}
REDIS_PORT=${REDIS_PORT:-19379}
UP_PORT=${UP_PORT:-19100}
PLAIN_UP_PORT=${PLAIN_UP_PORT:-19104}
A_PORT=${A_PORT:-19101}
B_PORT=${B_PORT:-19102}
NGINX_PORT=${NGINX_PORT:-19103}
FAULTS=${FAULTS:-1}

. bench/lib.sh
bench_needs nginx=nginx-light wrk=wrk redis-server=redis-server redis-cli=redis-tools bc=bc
bench_varco

OUT=$(mktemp -d)
pids=()
redis_pid=""
cleanup() {
  for p in "${pids[@]}" $redis_pid; do kill "$p" 2>/dev/null || true; done
  [ -f "$OUT/nginx.pid" ] && kill "$(cat "$OUT/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$OUT"
}
trap cleanup EXIT

start_redis() { # append-only file on disk: sessions survive the restart
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$OUT" --appendonly yes \
    --appendfsync everysec --save "" > "$OUT/redis.log" 2>&1 &
  redis_pid=$!
  for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return; sleep 0.05; done
  echo "redis-server did not start"; cat "$OUT/redis.log"; exit 1
}
start_redis

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$OUT/key.pem" 2>/dev/null
replica() { # name port
  cat > "$OUT/$1.toml" <<TOML
mode = "demo"
[server]
drain_timeout = "2s"
[[server.listener]]
address = "127.0.0.1:$2"
[log]
format = "json"
access_log = false
[session]
cookie_name = "varco-bench"
secure = false
store = "redis"
[session.redis]
url = "redis://127.0.0.1:$REDIS_PORT/0"
key_prefix = "bench:"
[assertion]
issuer = "https://bench/"
[[assertion.key]]
kid = "bench"
private_key = "$OUT/key.pem"
[upstream.echo]
url = "http://127.0.0.1:$UP_PORT"
[[route]]
path = "/"
upstream = "echo"
public = false
TOML
  "$VARCO" serve --config "$OUT/$1.toml" > "$OUT/$1.log" 2>&1 &
  pids+=($!)
  eval "${1}_pid=$!"
}
replica a "$A_PORT"
replica b "$B_PORT"
"$VARCO" echo --listen "127.0.0.1:$UP_PORT" --jwks "http://127.0.0.1:$A_PORT/_varco/jwks.json" \
  --aud echo --iss https://bench/ 2>/dev/null &
pids+=($!)
"$VARCO" echo --listen "127.0.0.1:$PLAIN_UP_PORT" 2>/dev/null &
pids+=($!)

cat > "$OUT/nginx.conf" <<NGINX
worker_processes auto;
pid $OUT/nginx.pid;
error_log $OUT/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream echo { server 127.0.0.1:$PLAIN_UP_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$remote_addr;
    }
  }
}
NGINX
nginx -c "$OUT/nginx.conf" -p "$OUT" -e "$OUT/nginx-error.log"

for port in $A_PORT $B_PORT $NGINX_PORT; do
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/_varco/healthz" 2>/dev/null && break
    curl -fsS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && break
    sleep 0.1
  done
done
COOKIE=$(curl -s -o /dev/null -D - -d 'user=operatore&return=/' "http://127.0.0.1:$A_PORT/_varco/dev-login" \
  | awk -F'[ ;]' 'tolower($1)=="set-cookie:" {print $2}')
[ -n "$COOKIE" ] || { echo "could not log in on replica A"; cat "$OUT/a.log"; exit 1; }
for port in $A_PORT $B_PORT; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $COOKIE" "http://127.0.0.1:$port/fascicolo")
  [ "$code" = 200 ] || { echo "replica on $port answered $code with A's session"; exit 1; }
done

wrk_field() { # file what
  case $2 in
    rps) awk '/^Requests\/sec:/ {print $2}' "$1" ;;
    total) awk '/requests in/ {print $1}' "$1" ;;
    non2xx) awk '/Non-2xx or 3xx responses:/ {print $5}' "$1" | grep . || echo 0 ;;
    p50) awk '$1=="50%" {print $2}' "$1" | to_ms ;;
    p99) awk '$1=="99%" {print $2}' "$1" | to_ms ;;
    sockerr) grep 'Socket errors' "$1" || echo "none" ;;
  esac
}
# Requests by status on both replicas' routes (the gateway's own counters).
by_status() {
  for port in $A_PORT $B_PORT; do
    curl -s "http://127.0.0.1:$port/_varco/metrics"
  done | awk '/^varco_requests_total\{/ && !/route="internal"/ {
      match($0, /status="[0-9]+"/); s = substr($0, RSTART + 8, 3); n[s] += $NF }
    END { for (s in n) printf "%s %d\n", s, n[s] }' | sort
}
counts() { curl -s "http://127.0.0.1:$UP_PORT/_echo/counts"; }
json_field() { sed -E "s/.*\"$1\":([0-9]+).*/\\1/"; }

echo "== nginx baseline: plain proxy, wrk -t2 -c$((2 * CONNS)) -d${BASE_DURATION}s, $(nproc) cores"
wrk -t2 -c$((2 * CONNS)) -d"${BASE_DURATION}s" --latency "http://127.0.0.1:$NGINX_PORT/bench" > "$OUT/nginx.wrk"
nginx_rps=$(wrk_field "$OUT/nginx.wrk" rps); nginx_p99=$(wrk_field "$OUT/nginx.wrk" p99)
printf "nginx  %10s req/s   p50 %8s ms   p99 %8s ms\n" "$nginx_rps" "$(wrk_field "$OUT/nginx.wrk" p50)" "$nginx_p99"

echo "== two replicas + Redis, protected route, one wrk per replica (-t1 -c$CONNS) for ${DURATION}s;"
echo "   faults ($FAULTS): Redis stopped at $((DURATION / 3))s and restarted 3 s later; SIGHUP to both at $((2 * DURATION / 3))s"
before_status=$(by_status)
before=$(counts)
wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -H "Cookie: $COOKIE" "http://127.0.0.1:$A_PORT/fascicolo" > "$OUT/a.wrk" &
wa=$!
wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -H "Cookie: $COOKIE" "http://127.0.0.1:$B_PORT/fascicolo" > "$OUT/b.wrk" &
wb=$!
sleep $((DURATION / 3))
if [ "$FAULTS" = 1 ] || [ "$FAULTS" = redis ]; then
t0=$(date +%s.%N)
kill "$redis_pid"; wait "$redis_pid" 2>/dev/null || true
echo "   $(date +%T) Redis stopped"
sleep 3
start_redis
echo "   $(date +%T) Redis restarted"
# Service is back when a protected request on each replica passes again.
for port in $A_PORT $B_PORT; do
  until [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $COOKIE" "http://127.0.0.1:$port/fascicolo")" = 200 ]; do sleep 0.05; done
done
t1=$(date +%s.%N)
printf "   service on both replicas again %.1f s after Redis stopped (3 s of it Redis was down)\n" "$(echo "$t1 - $t0" | bc)"
else
  sleep 3
fi
gap=$((2 * DURATION / 3 - DURATION / 3 - 3))
[ "$gap" -gt 0 ] && sleep "$gap"
if [ "$FAULTS" = 1 ] || [ "$FAULTS" = reload ]; then
  kill -HUP "$a_pid" "$b_pid"
  echo "   $(date +%T) SIGHUP to both replicas"
fi
wait "$wa" "$wb"
after=$(counts)
after_status=$(by_status)

reloads=0
for r in a b; do
  grep -q '"configuration reloaded"' "$OUT/$r.log" && reloads=$((reloads + 1))
done
total=$(( $(wrk_field "$OUT/a.wrk" total) + $(wrk_field "$OUT/b.wrk" total) ))
non2xx=$(( $(wrk_field "$OUT/a.wrk" non2xx) + $(wrk_field "$OUT/b.wrk" non2xx) ))
rps=$(echo "$(wrk_field "$OUT/a.wrk" rps) + $(wrk_field "$OUT/b.wrk" rps)" | bc)
verified=$(( $(echo "$after" | json_field verified) - $(echo "$before" | json_field verified) ))
refused=$(( $(echo "$after" | json_field refused) - $(echo "$before" | json_field refused) ))
echo
echo "results (${DURATION}s, both replicas):"
printf "  requests          %d   (%.0f req/s together)\n" "$total" "$rps"
printf "  not 2xx           %d\n" "$non2xx"
echo   "  by status (the replicas' own counters, this run):"
join -a1 -a2 -e0 -o 0,1.2,2.2 <(echo "$before_status") <(echo "$after_status") \
  | awk '{ d = $3 - $2; if (d > 0) printf "    %s  %d\n", $1, d }'
printf "  p99               A %s ms, B %s ms   (p50 A %s ms, B %s ms)\n" \
  "$(wrk_field "$OUT/a.wrk" p99)" "$(wrk_field "$OUT/b.wrk" p99)" "$(wrk_field "$OUT/a.wrk" p50)" "$(wrk_field "$OUT/b.wrk" p50)"
echo   "  socket errors     A: $(wrk_field "$OUT/a.wrk" sockerr); B: $(wrk_field "$OUT/b.wrk" sockerr)"
echo   "  reloads logged    $reloads of 2"
echo   "  upstream counted  $verified with a valid signed header, $refused without one or with an invalid one"
ok_rps=$(join -a1 -a2 -e0 -o 0,1.2,2.2 <(echo "$before_status") <(echo "$after_status") \
  | awk -v d="$DURATION" '$1 == 200 { printf "%.0f", ($3 - $2) / d }')
printf "  served (200)      %s req/s\n" "$ok_rps"
awk -v vr="$ok_rps" -v nr="$nginx_rps" -v v99="$(wrk_field "$OUT/a.wrk" p99)" -v n99="$nginx_p99" 'BEGIN {
  printf "ratio two replicas (protected, ES256, Redis session read, upstream verifying) / nginx plain proxy: served throughput %.2fx   p99 %.2fx\n", vr/nr, v99/n99 }'
if [ "$refused" -ne 0 ] || [ "$verified" -le 0 ] || { { [ "$FAULTS" = 1 ] || [ "$FAULTS" = reload ]; } && [ "$reloads" -ne 2 ]; }; then
  echo "FAILED: refused=$refused verified=$verified reloads=$reloads"
  exit 1
fi
