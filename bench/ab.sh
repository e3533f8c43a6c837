#!/usr/bin/env bash
# Two builds of varco side by side (A/B): both gateways run at once with the same
# configuration on their own ports, in front of the same upstream, and are loaded in turn
# (wrk, ROUNDS short rounds alternating A and B for each case); reported as the median of
# the per-round B/A throughput ratios. On a machine whose speed drifts over minutes, a
# ratio of two runs seconds apart says more than two long runs minutes apart.
#
#   A=/tmp/varco-before B=target/release/varco bench/ab.sh
#   ROUNDS=12 SECONDS_EACH=5 CASES="public session" A=... B=... bench/ab.sh
#
# Cases: public (a public route), session (a session-bound header, reused), protected (a
# request-bound ES256 header minted per request). Everything on loopback; installs wrk
# when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bench_needs wrk=wrk curl=curl openssl=openssl
: "${A:?A=path of the first build}" "${B:?B=path of the second build}"
ROUNDS=${ROUNDS:-8}
SECONDS_EACH=${SECONDS_EACH:-3}
CASES=${CASES:-public session protected}
UP_PORT=${UP_PORT:-19600}
A_PORT=${A_PORT:-19601}
B_PORT=${B_PORT:-19602}
bench_workdir

bench_echo "$B" "$UP_PORT"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$OUT/key.pem" 2>/dev/null
config() { # name port
  cat > "$OUT/$1.toml" <<TOML
mode = "demo"
[[server.listener]]
address = "127.0.0.1:$2"
[log]
format = "json"
access_log = true
[session]
cookie_name = "varco-bench"
secure = false
[assertion]
issuer = "https://bench/"
[[assertion.key]]
kid = "bench"
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
}
config a "$A_PORT"
config b "$B_PORT"
"$A" demo --config "$OUT/a.toml" --certs-dir "$OUT/certs-a" > "$OUT/a.log" 2>&1 &
pids+=($!)
"$B" demo --config "$OUT/b.toml" --certs-dir "$OUT/certs-b" > "$OUT/b.log" 2>&1 &
pids+=($!)
login() { # port
  curl -s -o /dev/null -D - -d 'user=operatore&return=/' "http://127.0.0.1:$1/_varco/dev-login" \
    | awk -F'[ ;]' 'tolower($1)=="set-cookie:" {print $2}'
}
for port in "$A_PORT" "$B_PORT"; do
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/pubblico/" 2>/dev/null && break
    sleep 0.1
  done
done
cookie_a=$(login "$A_PORT")
cookie_b=$(login "$B_PORT")
[ -n "$cookie_a" ] && [ -n "$cookie_b" ] || { echo "could not log in"; cat "$OUT/a.log" "$OUT/b.log"; exit 1; }

echo "== A/B: $ROUNDS rounds of ${SECONDS_EACH}s each (wrk -t2 -c64), $(nproc) cores"
echo "   A = $A"
echo "   B = $B"
for r in $(seq "$ROUNDS"); do
  order="a b"
  [ $((r % 2)) = 0 ] && order="b a"   # which build goes first alternates too
  for c in $CASES; do
    for v in $order; do
      if [ "$v" = a ]; then port=$A_PORT; cookie=$cookie_a; else port=$B_PORT; cookie=$cookie_b; fi
      case $c in
        public) url=/pubblico/bench/small; hdr=() ;;
        session) url=/sessione/bench/small; hdr=(-H "Cookie: $cookie") ;;
        protected) url=/bench/small; hdr=(-H "Cookie: $cookie") ;;
        *) echo "unknown case $c"; exit 1 ;;
      esac
      rps=$(wrk -t2 -c64 -d"${SECONDS_EACH}s" "${hdr[@]}" "http://127.0.0.1:$port$url" | awk '/^Requests\/sec:/ {print $2}')
      echo "$c $v $rps" >> "$OUT/results"
    done
  done
done
for c in $CASES; do
  awk -v c="$c" '
    $1 == c && $2 == "a" { a[++na] = $3 }
    $1 == c && $2 == "b" { b[++nb] = $3 }
    function median(x, n,   i, j, t) {
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
      return n % 2 ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2
    }
    END {
      for (i = 1; i <= na; i++) r[i] = b[i] / a[i]
      lo = hi = r[1]; for (i = 2; i <= na; i++) { if (r[i] < lo) lo = r[i]; if (r[i] > hi) hi = r[i] }
      ma = median(a, na); mb = median(b, nb); mr = median(r, na)
      printf "%-10s A median %8.0f req/s   B median %8.0f req/s   B/A per round: median %.3f (%.2f-%.2f)\n", c, ma, mb, mr, lo, hi
    }' "$OUT/results"
done
