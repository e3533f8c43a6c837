#!/usr/bin/env bash
# Whole-proxy load benchmark: nginx (plain reverse proxy) and varco (public route) in front
# of the same upstream (`varco echo --fixed-body-bytes 20`: a 20-byte answer to every
# request; BODY_BYTES=page for the echo's page, which lists every header it received),
# loaded in ONE run by the same generator (wrk, keep-alive, 64 connections, 10 s each by
# default), reported as varco/nginx ratios. Then ROUNDS (default 8; 0 skips) paired rounds
# of SECONDS_EACH (default 3) seconds, nginx and the varco cases one after the other in
# alternating order, reported as the median of the per-round ratios: this machine's speed
# drifts over minutes, so a ratio of runs seconds apart says more than one of 10 s runs.
#
#   bench/proxy.sh                 # defaults
#   DURATION=20s CONNS=128 bench/proxy.sh
#   ROUNDS=0 bench/proxy.sh        # the single runs only
#   VARCO=/tmp/varco-before bench/proxy.sh   # another build
#
# Everything runs on loopback on this machine; the script starts and stops its own
# processes and installs nginx and wrk (Debian packages) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
UP_PORT=${UP_PORT:-19000}
NGINX_PORT=${NGINX_PORT:-19080}
VARCO_PORT=${VARCO_PORT:-19081}
PROTECTED_PORT=${PROTECTED_PORT:-19082}
# Signature algorithm of the protected-route case: ES256 (default) or EdDSA.
PROTECTED_ALG=${PROTECTED_ALG:-ES256}
PATH_UNDER_TEST=${PATH_UNDER_TEST:-/bench/small}

. bench/lib.sh
bench_needs nginx=nginx-light wrk=wrk argon2=argon2
bench_varco
bench_workdir

bench_echo "$VARCO" "$UP_PORT"

cat > "$OUT/nginx.conf" <<NGINX
worker_processes auto;
pid $OUT/nginx.pid;
error_log $OUT/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log $OUT/nginx-access.log combined buffer=64k;
  upstream echo { server 127.0.0.1:$UP_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$proxy_host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
    }
  }
}
NGINX
nginx -c "$OUT/nginx.conf" -p "$OUT" -e "$OUT/nginx-error.log"

cat > "$OUT/varco.toml" <<TOML
[[server.listener]]
address = "127.0.0.1:$VARCO_PORT"
[log]
format = "json"
access_log = ${ACCESS_LOG:-true}
[upstream.echo]
url = "http://127.0.0.1:$UP_PORT"
[[route]]
path = "/"
upstream = "echo"
public = true
TOML
"$VARCO" serve --config "$OUT/varco.toml" > "$OUT/varco.log" 2>&1 &
pids+=($!)

# The protected-route case: a session (made with the development login, so the run is
# self-contained; the request path is the same as with any login) and one signed identity
# header minted per request.
if [ "$PROTECTED_ALG" = EdDSA ]; then
  openssl genpkey -algorithm ed25519 -out "$OUT/key.pem" 2>/dev/null
else
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$OUT/key.pem" 2>/dev/null
fi
cat > "$OUT/protected.toml" <<TOML
mode = "demo"
[[server.listener]]
address = "127.0.0.1:$PROTECTED_PORT"
[log]
format = "json"
access_log = ${ACCESS_LOG:-true}
[session]
cookie_name = "varco-bench"
secure = false
[assertion]
issuer = "https://bench/"
[[assertion.key]]
kid = "bench"
alg = "$PROTECTED_ALG"
private_key = "$OUT/key.pem"
[upstream.echo]
url = "http://127.0.0.1:$UP_PORT"
[[route]]
path = "/"
upstream = "echo"
public = false
# The session-bound case: the header minted once per session and reused (no htm/htu).
[[route]]
path = "/sessione"
upstream = "echo"
public = false
header_binding = "session"
# The delegation case: a volunteer opening a client's file (policy + delegation lookup).
[directory]
delegations_file = "$OUT/deleghe.csv"
[[route]]
path = "/fascicolo"
upstream = "echo"
public = false
[route.policy]
min_level = "SpidL2"
roles = ["operatore", "volontario"]
[[route.policy.rule]]
role = "volontario"
effect = "allow"
http_methods = ["GET", "HEAD"]
[route.policy.delegation]
path = "/fascicolo/{assistito}/**"
# The legacy PIN case: HTTP Basic with fiscal code + PIN before the cutoff (verified once,
# then remembered as a keyed hash; each request re-checks the switch-off and is signed).
[[route]]
path = "/api/legacy"
upstream = "echo"
public = false
[route.policy]
methods = ["spid", "pin"]
[pin]
issuance_stop = "2020-10-01"
cutoff = "2099-12-31"
verifier_file = "$OUT/pins.csv"
basic_paths = ["/api/legacy"]
basic_cache_ttl = "10m"
TOML
printf 'fiscal_code,issued,date_of_birth,hash\nRSSMRA80A01H501U,2019-01-01,,%s\n' \
  "$(printf %s 12345678 | argon2 "$(head -c 12 /dev/urandom | base64)" -id -e)" > "$OUT/pins.csv"
printf 'patronato,assistito,valid_from,valid_to,revoked\npatronato-demo,RSSMRA80A01H501U,2025-01-01,,false\n' > "$OUT/deleghe.csv"
"$VARCO" demo --config "$OUT/protected.toml" --certs-dir "$OUT/certs" > "$OUT/protected.log" 2>&1 &
pids+=($!)

for port in $UP_PORT $NGINX_PORT $VARCO_PORT; do
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port$PATH_UNDER_TEST" 2>/dev/null && break
    sleep 0.1
  done
done


run() { # name port [header] [path]
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency ${3:+-H "$3"} "http://127.0.0.1:$2${4:-$PATH_UNDER_TEST}" > "$OUT/$1.wrk"
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$OUT/$1.wrk")
  p50=$(awk '$1=="50%" {print $2}' "$OUT/$1.wrk" | to_ms)
  p99=$(awk '$1=="99%" {print $2}' "$OUT/$1.wrk" | to_ms)
  errs=$(awk '/Non-2xx|Socket errors/ {print}' "$OUT/$1.wrk" | tr '\n' ' ')
  printf "%-6s %12s req/s   p50 %8s ms   p99 %8s ms   %s\n" "$1" "$rps" "$p50" "$p99" "$errs"
  eval "${1}_rps=$rps; ${1}_p50=$p50; ${1}_p99=$p99"
}

for _ in $(seq 100); do
  COOKIE=$(curl -s -o /dev/null -D - -d 'user=operatore&return=/' "http://127.0.0.1:$PROTECTED_PORT/_varco/dev-login" 2>/dev/null \
    | awk -F'[ ;]' 'tolower($1)=="set-cookie:" {print $2}') || true
  [ -n "$COOKIE" ] && break
  sleep 0.1
done
[ -n "$COOKIE" ] || { echo "could not log in to the protected gateway"; cat "$OUT/protected.log"; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $COOKIE" "http://127.0.0.1:$PROTECTED_PORT$PATH_UNDER_TEST")
[ "$code" = 200 ] || { echo "protected route answered $code"; exit 1; }
VOLUNTEER=$(curl -s -o /dev/null -D - -d 'user=volontario&return=/' "http://127.0.0.1:$PROTECTED_PORT/_varco/dev-login" \
  | awk -F'[ ;]' 'tolower($1)=="set-cookie:" {print $2}')
DELEGATED_PATH=/fascicolo/RSSMRA80A01H501U/estratto
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $VOLUNTEER" "http://127.0.0.1:$PROTECTED_PORT$DELEGATED_PATH")
[ "$code" = 200 ] || { echo "delegated route answered $code"; cat "$OUT/protected.log"; exit 1; }

PIN_AUTH="Authorization: Basic $(printf %s RSSMRA80A01H501U:12345678 | base64)"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "$PIN_AUTH" "http://127.0.0.1:$PROTECTED_PORT/api/legacy/x")
[ "$code" = 200 ] || { echo "PIN route answered $code"; cat "$OUT/protected.log"; exit 1; }

echo "== whole-proxy benchmark: wrk -t$THREADS -c$CONNS -d$DURATION, GET $PATH_UNDER_TEST, $(nproc) cores"
run nginx "$NGINX_PORT"
run varco "$VARCO_PORT"
run protected "$PROTECTED_PORT" "Cookie: $COOKIE"
run session "$PROTECTED_PORT" "Cookie: $COOKIE" "/sessione$PATH_UNDER_TEST"
run delegated "$PROTECTED_PORT" "Cookie: $VOLUNTEER" "$DELEGATED_PATH"
run pinbasic "$PROTECTED_PORT" "$PIN_AUTH" "/api/legacy/x"
ratio() { # label rps p50 p99
  awk -v label="$1" -v vr="$2" -v nr="$nginx_rps" -v v50="$3" -v n50="$nginx_p50" -v v99="$4" -v n99="$nginx_p99" 'BEGIN {
    printf "ratio %s/nginx: throughput %.2fx   p50 %.2fx   p99 %.2fx\n", label, vr/nr, v50/n50, v99/n99
  }'
}
ratio "varco(public)" "$varco_rps" "$varco_p50" "$varco_p99"
ratio "varco(protected,$PROTECTED_ALG)" "$protected_rps" "$protected_p50" "$protected_p99"
ratio "varco(session-bound,$PROTECTED_ALG)" "$session_rps" "$session_p50" "$session_p99"
awk -v s="$session_rps" -v p="$varco_rps" 'BEGIN { printf "ratio varco(session-bound)/varco(public): throughput %.2fx\n", s/p }'
ratio "varco(delegation,$PROTECTED_ALG)" "$delegated_rps" "$delegated_p50" "$delegated_p99"
ratio "varco(PIN Basic,$PROTECTED_ALG)" "$pinbasic_rps" "$pinbasic_p50" "$pinbasic_p99"

# The limit one signature per request allows (issue 16): the public route's cost per
# request plus one signature (criterion's mint/ALG on one core, shared by the cores).
# MINT_US=21.3 skips the criterion run.
if [ -z "${MINT_US:-}" ]; then
  MINT_US=$(cargo bench --bench hot_paths -- "mint/$PROTECTED_ALG\$" --warm-up-time 1 --measurement-time 3 2>/dev/null \
    | awk '/time:/ {v=$5; u=$6; if (u=="ns") v/=1000; if (u=="ms") v*=1000; print v; exit}')
fi
if [ -n "$MINT_US" ]; then
  echo "$MINT_US" > "$OUT/mint_us"
  awk -v pub="$varco_rps" -v prot="$protected_rps" -v mint="$MINT_US" -v cores="$(nproc)" -v alg="$PROTECTED_ALG" 'BEGIN {
    limit = 1 / (1/pub + mint/1e6/cores)
    printf "signature limit (%s, mint %.1f us, %d cores): %.0f req/s; protected route at %.2f of it\n", alg, mint, cores, limit, prot/limit
  }'
else
  echo "signature limit: criterion's mint/$PROTECTED_ALG could not be run (set MINT_US)"
fi

# Paired rounds: each round runs nginx, the public route, the session-bound route and the
# request-bound (protected) route for SECONDS_EACH seconds, in an order that alternates
# from round to round (keep ROUNDS even: each case then runs as often early as late in a
# round); each ratio is taken within a round, then the median over rounds.
ROUNDS=${ROUNDS:-8}
SECONDS_EACH=${SECONDS_EACH:-3}
if [ "$ROUNDS" -gt 0 ]; then
  echo "== paired rounds: $ROUNDS rounds of ${SECONDS_EACH}s per case (wrk -t$THREADS -c$CONNS)"
  : > "$OUT/rounds"
  for r in $(seq "$ROUNDS"); do
    order="nginx varco session protected"
    [ $((r % 2)) = 0 ] && order="protected session varco nginx"
    for c in $order; do
      case $c in
        nginx) port=$NGINX_PORT; hdr=(); url=$PATH_UNDER_TEST ;;
        varco) port=$VARCO_PORT; hdr=(); url=$PATH_UNDER_TEST ;;
        session) port=$PROTECTED_PORT; hdr=(-H "Cookie: $COOKIE"); url=/sessione$PATH_UNDER_TEST ;;
        protected) port=$PROTECTED_PORT; hdr=(-H "Cookie: $COOKIE"); url=$PATH_UNDER_TEST ;;
      esac
      wrk -t"$THREADS" -c"$CONNS" -d"${SECONDS_EACH}s" --latency "${hdr[@]}" "http://127.0.0.1:$port$url" > "$OUT/round.wrk" || true
      rps=$(awk '/^Requests\/sec:/ {print $2}' "$OUT/round.wrk")
      p99=$(awk '$1=="99%" {print $2}' "$OUT/round.wrk" | to_ms)
      # A failed run, errors or non-2xx answers: the whole round is left out.
      if [ -z "$rps" ] || [ -z "$p99" ] || grep -qE 'Non-2xx|Socket errors' "$OUT/round.wrk"; then
        echo "round $r: $c left out: $(grep -E 'Non-2xx|Socket errors' "$OUT/round.wrk" | tr '\n' ' ')" >&2
        rps=NA p99=NA
      fi
      printf '%s %s %s %s\n' "$r" "$c" "$rps" "$p99" >> "$OUT/rounds"
    done
  done
  awk -v mint="$(cat "$OUT/mint_us" 2>/dev/null)" -v cores="$(nproc)" '
    BEGIN { cases[1] = "nginx"; cases[2] = "varco"; cases[3] = "session"; cases[4] = "protected" }
    $3 == "NA" || $4 == "NA" || $3 + 0 <= 0 || $4 + 0 <= 0 { bad[$1] = 1 }
    { rps[$1, $2] = $3; p99[$1, $2] = $4; if ($1 > last) last = $1 }
    function median(x, k,   i, j, t) {
      for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
      return k % 2 ? x[(k + 1) / 2] : (x[k / 2] + x[k / 2 + 1]) / 2
    }
    function report(label, num, den, field,   i, r, lo, hi) {
      for (i = 1; i <= n; i++) {
        r[i] = field == "p99" ? p99[i, num] / p99[i, den] : rps[i, num] / rps[i, den]
        if (i == 1 || r[i] < lo) lo = r[i]; if (i == 1 || r[i] > hi) hi = r[i]
      }
      printf "paired %-46s median %.2fx (rounds %.2f-%.2f)\n", label, median(r, n), lo, hi
    }
    END {
      # Only the rounds whose four runs all succeeded, renumbered 1..n.
      n = 0
      for (i = 1; i <= last; i++) if (!(i in bad)) {
        n++
        for (c in cases) { rps[n, cases[c]] = rps[i, cases[c]]; p99[n, cases[c]] = p99[i, cases[c]] }
      }
      if (n == 0) { print "paired rounds: none without errors"; exit 1 }
      if (n < last) printf "paired rounds: %d of %d without errors\n", n, last
      for (i = 1; i <= n; i++) { a[i] = rps[i, "nginx"]; b[i] = rps[i, "varco"] }
      printf "paired req/s medians: nginx %.0f, varco public %.0f\n", median(a, n), median(b, n)
      report("varco(public)/nginx throughput", "varco", "nginx", "rps")
      report("varco(public)/nginx p99", "varco", "nginx", "p99")
      report("varco(session-bound)/varco(public) throughput", "session", "varco", "rps")
      if (mint != "") {
        for (i = 1; i <= n; i++) {
          limit = 1 / (1 / rps[i, "varco"] + mint / 1e6 / cores)
          f[i] = rps[i, "protected"] / limit
          if (i == 1 || f[i] < lo) lo = f[i]; if (i == 1 || f[i] > hi) hi = f[i]
        }
        printf "paired %-46s median %.2f (rounds %.2f-%.2f)\n", "protected route / signature limit", median(f, n), lo, hi
      }
    }' "$OUT/rounds"
fi
