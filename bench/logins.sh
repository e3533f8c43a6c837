#!/usr/bin/env bash
# Logins never slow the proxy (issue 16): the p99 of proxied traffic alone, then under a
# burst of SAML logins, in ONE run of `varco demo` (TLS listener, the verifying echo
# upstream), reported as the ratio of the two p99s. A login is its two gateway requests: a
# login start (the AuthnRequest's RSA signature) and a signed Response at the ACS (xmlsec
# verification, replay check, a new session); both signatures run on the blocking pool, off
# the request workers. The development IdP's part of each login (its own RSA signature)
# is done before the clock starts: in production it is not on the gateway's machine.
#
#   bench/logins.sh                          # 200 logins/s for 15 s
#   RATE=100 DURATION=20 bench/logins.sh
#   VARCO=/tmp/varco-before bench/logins.sh
#   SPLIT=1 bench/logins.sh                  # the gateway on CPU 0, everything else on the rest
#   LOGIN_CPUS=1 bench/logins.sh             # server.login_cpus = [1]: the workers on the
#                                            # other CPUs; wrk and the login client on CPU 1
#
# The proxied traffic is wrk on the public page with a 1 ms pause between a connection's
# requests (CONNS=8: a steady few thousand requests per second that leave the cores room,
# so the p99 shows waiting, not a saturated machine). Logins: bench/logins.py (standard
# library Python) with one loopback source address per client (the gateway limits logins
# per address), keep-alive connections, latency counted from when each login was due.
#
# Then the control: the same CPU the burst cost (the gateway's extra CPU during it plus the
# login client's), spent by busy loops that have nothing to do with the gateway
# (`logins.py --burn`), with the same proxied traffic. On a machine where the load
# generators share the gateway's cores, any work raises the p99; the control shows how much
# of the burst's effect is that, and how much is the gateway's (burst/control near 1: the
# logins cost the proxied traffic no more than their CPU).
set -euo pipefail
cd "$(dirname "$0")/.."

# SPLIT=1: the gateway (with its in-process upstream) pinned to CPU 0 and the load
# generators, the login client and the control's busy loops to the other CPUs, so that
# they no longer compete with it: the p99s then show what the logins cost the gateway.
GW_PIN=()
LOAD_PIN=()
if [ -n "${SPLIT:-}" ]; then
  GW_PIN=(taskset -c 0)
  LOAD_PIN=(taskset -c "1-$(($(nproc) - 1))")
fi
# LOGIN_CPUS=N: the gateway's login threads on CPU N (server.login_cpus, from the
# environment), its workers on the others; the load generators share CPU N with the logins,
# so the workers' CPUs carry only the proxied traffic (and the gateway's other threads).
if [ -n "${LOGIN_CPUS:-}" ]; then
  [ -z "${SPLIT:-}" ] || { echo "SPLIT and LOGIN_CPUS exclude each other"; exit 2; }
  export VARCO__SERVER__LOGIN_CPUS=$LOGIN_CPUS
  LOAD_PIN=(taskset -c "$LOGIN_CPUS")
fi
RATE=${RATE:-200}
DURATION=${DURATION:-15}
CONNS=${CONNS:-8}
LOGIN_THREADS=${LOGIN_THREADS:-256}
PORT=${PORT:-19443}

. bench/lib.sh
bench_needs wrk=wrk python3=python3
bench_varco
bench_workdir

"${GW_PIN[@]}" "$VARCO" demo --listen "127.0.0.1:$PORT" --certs-dir "$OUT/certs" > "$OUT/demo.log" 2>&1 &
gw=$!
pids+=($gw)
ticks=$(getconf CLK_TCK)
gw_cpu() { awk '{print $14 + $15}' "/proc/$gw/stat"; }  # the gateway's CPU so far, in ticks
# The request workers' time runnable but waiting for a CPU, and their number of runs, so far
# (schedstat: ns on a CPU, ns waiting on a run queue, runs): what the login threads and
# everything else on the gateway's CPUs made them wait.
workers_wait() {
  local t sum=0 runs=0 w r
  for t in /proc/"$gw"/task/*; do
    case "$(cat "$t/comm" 2>/dev/null)" in varco-worker-*) ;; *) continue ;; esac
    read -r _ w r < "$t/schedstat" || continue
    sum=$((sum + w)); runs=$((runs + r))
  done
  echo "$sum $runs"
}
BASE="https://localhost:$PORT"
for _ in $(seq 200); do
  curl -fsS -o /dev/null --cacert "$OUT/certs/ca.pem" "$BASE/pubblico" 2>/dev/null && break
  sleep 0.1
done
curl -fsS -o /dev/null --cacert "$OUT/certs/ca.pem" "$BASE/pubblico" \
  || { echo "the demo did not start"; cat "$OUT/demo.log"; exit 1; }

cat > "$OUT/pace.lua" <<'LUA'
function delay() return 1 end
LUA
# The p99 of the gateway's own time for the proxied requests of a phase (its access log:
# from the request's head to the response's end), apart from the waiting the client sees.
own_p99() { # first log line of the phase
  tail -n +"$1" "$OUT/demo.log" \
    | awk '/varco::access: GET \/pubblico / {for (i = 1; i <= NF; i++) if ($i ~ /^[0-9.]+ms$/) {sub(/ms$/, "", $i); print $i; break}}' \
    | sort -n | awk '{a[NR] = $1} END {i = int(NR * 0.99); if (i < 1) i = 1; printf "%.3f", a[i]}'
}
proxied() { # name
  local c0 l0 own w0 w1
  c0=$(gw_cpu)
  w0=$(workers_wait)
  l0=$(($(wc -l < "$OUT/demo.log") + 1))
  "${LOAD_PIN[@]}" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$OUT/pace.lua" "$BASE/pubblico" > "$OUT/$1.wrk"
  local rps p50 p99 errs
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$OUT/$1.wrk")
  p50=$(awk '$1=="50%" {print $2}' "$OUT/$1.wrk" | to_ms)
  p99=$(awk '$1=="99%" {print $2}' "$OUT/$1.wrk" | to_ms)
  errs=$(awk '/Non-2xx|Socket errors/ {print}' "$OUT/$1.wrk" | tr '\n' ' ')
  own=$(own_p99 "$l0")
  w1=$(workers_wait)
  local wait
  wait=$(awk -v a="$w0" -v b="$w1" 'BEGIN {split(a, x, " "); split(b, y, " "); n = y[2] - x[2]; printf "%.1f", (n > 0 ? (y[1] - x[1]) / n / 1000 : 0)}')
  printf "%-14s %10s req/s   p50 %7s ms   p99 %7s ms   gateway's own p99 %7s ms   workers waited %6s us a run for a CPU   %s\n" "$1" "$rps" "$p50" "$p99" "$own" "$wait" "$errs"
  eval "${1//-/_}_p99=$p99"
  eval "${1//-/_}_own=$own"
  eval "${1//-/_}_cores=$(awk -v a="$c0" -v b="$(gw_cpu)" -v t="$ticks" -v d="$DURATION" 'BEGIN {printf "%.3f", (b - a) / t / d}')"
}

echo "== logins vs proxied traffic: wrk -t1 -c$CONNS (1 ms pause) on /pubblico for ${DURATION}s, $(nproc) cores"
proxied alone
mkfifo "$OUT/go"
"${LOAD_PIN[@]}" nice -n "${LOGIN_CLIENT_NICE:-0}" python3 bench/logins.py "$BASE" "$OUT/certs/ca.pem" "$RATE" "$DURATION" "$LOGIN_THREADS" --wait \
  < "$OUT/go" > "$OUT/logins.txt" 2>&1 &
LOGINS=$!
exec 3> "$OUT/go"
until grep -q '^prepared' "$OUT/logins.txt"; do
  kill -0 "$LOGINS" 2>/dev/null || { cat "$OUT/logins.txt"; exit 1; }
  sleep 0.5
done
echo go >&3
proxied with-logins
exec 3>&-
wait "$LOGINS" || true
cat "$OUT/logins.txt"
client=$(awk '/client CPU/ {for (i = 1; i < NF; i++) if ($i == "CPU") print $(i + 1)}' "$OUT/logins.txt")
control=$(awk -v g="$with_logins_cores" -v a="$alone_cores" -v c="$client" -v d="$DURATION" \
  'BEGIN {x = g - a + c / d; printf "%.2f", x < 0.05 ? 0.05 : x}')
echo "the burst's CPU: gateway $alone_cores cores alone, $with_logins_cores with the logins; login client ${client} s; control burns $control cores"
"${LOAD_PIN[@]}" python3 bench/logins.py --burn "$control" "$((DURATION + 1))" &
burner=$!
proxied control
wait "$burner"
awk -v a="$alone_p99" -v b="$with_logins_p99" -v c="$control_p99" -v r="$RATE" \
  -v oa="$alone_own" -v ob="$with_logins_own" -v oc="$control_own" 'BEGIN {
  printf "ratio p99 with %d logins/s / p99 alone: %.2fx (target <= 1.5x)\n", r, b/a
  printf "ratio of the gateway own p99 (its access log), with the logins / alone: %.2fx; with the CPU burnt elsewhere / alone: %.2fx\n", ob/oa, oc/oa
  printf "ratio p99 with the same CPU burnt elsewhere / p99 alone: %.2fx\n", c/a
  printf "ratio p99 with the logins / with the same CPU burnt elsewhere: %.2fx\n", b/c
}'
