#!/usr/bin/env bash
# Memory after a long mixed load (issue 16, point 5): the gateway's resident memory before
# and after DURATION (default 10 minutes) of mixed traffic, once the sessions made during
# it have expired; reported as end/start (target: within 10%).
#
#   bench/soak.sh                        # 10 minutes
#   DURATION=120 bench/soak.sh
#   CYCLES=5 DURATION=45 IDLE=10 bench/soak.sh   # RSS after each of five load/settle cycles
#   VARCO=/tmp/varco-glibc bench/soak.sh   # a build with glibc's malloc (--no-default-features)
#   ARENAS=2 VARCO=/tmp/varco-glibc bench/soak.sh   # ... with MALLOC_ARENA_MAX=2
#
# The mix, all at once, each a wrk with its own connections: public GETs, protected GETs
# with a request-bound ES256 header, GETs on a session-bound route, 64 KiB uploads, 404s,
# and development logins (a new session each, 50 a second; idle timeout 60 s, so sessions
# come and go). Start = RSS after a warm-up of the same mix as long as a session lives in
# the store (idle timeout + 60 s: the store then holds as many sessions as it will during
# the load) and its sessions' expiry; end = RSS after the load and the same wait. Both are
# also given against the fresh process's RSS. Everything on loopback; installs wrk when
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bench_needs wrk=wrk curl=curl openssl=openssl
bench_varco

DURATION=${DURATION:-600}
UP_PORT=${UP_PORT:-19300}
GW_PORT=${GW_PORT:-19301}
IDLE=${IDLE:-60}
bench_workdir

"$VARCO" echo --listen "127.0.0.1:$UP_PORT" 2>/dev/null &
pids+=($!)
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$OUT/key.pem" 2>/dev/null
cat > "$OUT/varco.toml" <<TOML
mode = "demo"
[[server.listener]]
address = "127.0.0.1:$GW_PORT"
[log]
format = "json"
access_log = true
level = "warn"
[session]
cookie_name = "varco-soak"
secure = false
idle_timeout = "${IDLE}s"
absolute_timeout = "8h"
[assertion]
issuer = "https://soak/"
[[assertion.key]]
kid = "soak"
alg = "ES256"
private_key = "$OUT/key.pem"
[upstream.echo]
url = "http://127.0.0.1:$UP_PORT"
[[route]]
path = "/pubblico"
upstream = "echo"
public = true
[[route]]
path = "/sessione"
upstream = "echo"
public = false
header_binding = "session"
[[route]]
path = "/"
upstream = "echo"
public = false
TOML
# The binary's allocator: jemalloc (the default build), or glibc's malloc (a build without
# the `jemalloc` feature), whose arenas are its default (up to 8 a core) or ARENAS=N for
# MALLOC_ARENA_MAX=N.
ARENAS=${ARENAS:-default}
if _RJEM_MALLOC_CONF=bench:probe "$VARCO" --version 2>&1 | grep -q '<jemalloc>'; then
  allocator=jemalloc
else
  allocator="glibc malloc, arenas: $ARENAS"
fi
if [ "$ARENAS" = default ]; then
  arenas=(-u MALLOC_ARENA_MAX)
else
  arenas=("MALLOC_ARENA_MAX=$ARENAS")
fi
env "${arenas[@]}" "$VARCO" demo --config "$OUT/varco.toml" --certs-dir "$OUT/certs" > /dev/null 2> "$OUT/varco.err" &
gw=$!
pids+=($gw)
for _ in $(seq 200); do
  curl -fsS -o /dev/null "http://127.0.0.1:$GW_PORT/pubblico/" 2>/dev/null && break
  sleep 0.1
done
rss() { awk '/^VmRSS/ {print $2}' "/proc/$gw/status"; }   # KiB
login() {
  curl -s -o /dev/null -D - -d 'user=operatore&return=/' "http://127.0.0.1:$GW_PORT/_varco/dev-login" \
    | awk -F'[ ;]' 'tolower($1)=="set-cookie:" {print $2}'
}
head -c 49152 /dev/urandom | base64 -w0 > "$OUT/body.txt"   # 64 KiB
cat > "$OUT/upload.lua" <<LUA
wrk.method = "POST"
local f = io.open("$OUT/body.txt", "rb"); wrk.body = f:read("*a"); f:close()
wrk.headers["Content-Type"] = "application/octet-stream"
function delay() return 2 end
LUA
cat > "$OUT/login.lua" <<'LUA'
wrk.method = "POST"
wrk.body = "user=cittadino&return=%2F"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
function delay() return 20 end
LUA
cat > "$OUT/pace.lua" <<'LUA'
function delay() return 1 end
LUA

mix() { # seconds
  local cookie s
  cookie=$(login)
  s=$1
  local w=()
  wrk -t1 -c4 -d"${s}s" -s "$OUT/pace.lua" "http://127.0.0.1:$GW_PORT/pubblico/x" > "$OUT/public.wrk" & w+=($!)
  wrk -t1 -c4 -d"${s}s" -s "$OUT/pace.lua" -H "Cookie: $cookie" "http://127.0.0.1:$GW_PORT/pagina" > "$OUT/protected.wrk" & w+=($!)
  wrk -t1 -c2 -d"${s}s" -s "$OUT/pace.lua" -H "Cookie: $cookie" "http://127.0.0.1:$GW_PORT/sessione/x" > "$OUT/session.wrk" & w+=($!)
  wrk -t1 -c2 -d"${s}s" -s "$OUT/upload.lua" "http://127.0.0.1:$GW_PORT/pubblico/upload" > "$OUT/upload.wrk" & w+=($!)
  wrk -t1 -c1 -d"${s}s" -s "$OUT/pace.lua" "http://127.0.0.1:$GW_PORT/_varco/nessuna" > "$OUT/notfound.wrk" & w+=($!)
  wrk -t1 -c1 -d"${s}s" -s "$OUT/login.lua" "http://127.0.0.1:$GW_PORT/_varco/dev-login" > "$OUT/login.wrk" & w+=($!)
  wait "${w[@]}"
}
# The mix's sessions expire and leave the store (it frees them 60 s after the idle
# timeout), then a margin; a request a second meanwhile, as a quiet gateway would see (the
# store's housekeeping runs with its operations).
settle() {
  local until=$((SECONDS + IDLE + 60 + 20)) cookie
  cookie=$(login)
  while [ "$SECONDS" -lt "$until" ]; do
    curl -s -o /dev/null -H "Cookie: $cookie" "http://127.0.0.1:$GW_PORT/pagina"
    sleep 1
  done
}

fresh=$(rss)
if [ -n "${CYCLES:-}" ]; then
  # Leak or allocator? CYCLES loads of DURATION seconds, each followed by its sessions'
  # expiry: a leak adds the same amount at every cycle, an allocator's retained memory
  # levels off after the first few.
  echo "== soak: $CYCLES cycles of ${DURATION}s mixed load and settle, allocator: $allocator (fresh process: RSS $((fresh / 1024)) MiB)"
  for k in $(seq "$CYCLES"); do
    mix "$DURATION"
    settle
    echo "  after cycle $k: RSS $(awk -v r="$(rss)" 'BEGIN {printf "%.1f", r / 1024}') MiB"
  done
  exit 0
fi
echo "== soak: mixed load for ${DURATION}s on $(nproc) cores, allocator: $allocator (fresh process: RSS $((fresh / 1024)) MiB)"
warm=$((IDLE + 60))
mix "$warm"
settle
start=$(rss)
echo "  start (after a ${warm} s warm-up and its sessions' expiry): RSS $((start / 1024)) MiB"
# RSS every minute of the load: a leak climbs for the whole run, an allocator's working
# set levels off.
( while kill -0 "$gw" 2>/dev/null; do sleep 60; echo "$(rss)"; done ) > "$OUT/series" &
sampler=$!
mix "$DURATION"
kill "$sampler" 2>/dev/null || true
echo "  RSS each minute of the load (MiB): $(awk '{printf "%.1f ", $1/1024}' "$OUT/series")"
peak=$(awk '/^VmHWM/ {print $2}' "/proc/$gw/status")
for f in public protected session upload notfound login; do
  printf "  %-9s %s requests\n" "$f" "$(awk '/requests in/ {print $1}' "$OUT/$f.wrk")"
done
settle
end=$(rss)
awk -v a="$start" -v b="$end" -v p="$peak" -v f="$fresh" 'BEGIN {
  printf "  end (after the load and its sessions expiry): RSS %.1f MiB; peak during the run %.1f MiB\n", b/1024, p/1024
  printf "ratio RSS end/start: %.3f (target <= 1.10); end/fresh process: %.3f\n", b/a, b/f
}'
