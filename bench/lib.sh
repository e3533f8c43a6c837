# Shared by the bench/ scripts (sourced): installs what a load test needs, finds the varco
# build to measure, converts wrk's latencies.

# bench_needs CMD=PACKAGE ...: installs the Debian packages of the missing commands.
bench_needs() {
  local need="" pair
  for pair in "$@"; do
    command -v "${pair%%=*}" >/dev/null || need="$need ${pair#*=}"
  done
  if [ -n "$need" ]; then
    local sudo
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    # shellcheck disable=SC2086
    $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need
  fi
}

# VARCO=path/to/varco benchmarks another build (e.g. an earlier commit's, for before/after);
# by default this tree's release build.
bench_varco() {
  if [ -z "${VARCO:-}" ]; then
    cargo build --release --bin varco >/dev/null 2>&1 || cargo build --release --bin varco
    VARCO=target/release/varco
  fi
}

# bench_echo BUILD PORT: starts `varco echo` of BUILD on PORT, answering every request with
# a fixed body of BODY_BYTES (default 20) bytes, so that the upstream's work does not grow
# with the headers each proxy adds (the identity header is ~600 bytes); BODY_BYTES=page
# keeps the echo's page describing each request. A build without the option (before
# --fixed-body-bytes) serves the page, and the script says so.
bench_echo() {
  local args=()
  if [ "${BODY_BYTES:-20}" != page ]; then
    if "$1" echo --help 2>/dev/null | grep -q -- --fixed-body-bytes; then
      args=(--fixed-body-bytes "${BODY_BYTES:-20}")
    else
      echo "note: $1 echo has no --fixed-body-bytes: the upstream answers its page" >&2
    fi
  fi
  "$1" echo --listen "127.0.0.1:$2" "${args[@]}" 2>"$OUT/echo-$2.log" &
  local pid=$!
  pids+=("$pid")
  # Up, and this echo (not a leftover on the same port) answering what was asked.
  local body="" _
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || { echo "varco echo on port $2 did not start:" >&2; cat "$OUT/echo-$2.log" >&2; exit 1; }
    body=$(curl -fsS "http://127.0.0.1:$2/bench/small" 2>/dev/null) && break
    sleep 0.1
  done
  if [ "${#args[@]}" -gt 0 ] && [ "$(curl -fsS "http://127.0.0.1:$2/bench/small" | wc -c)" != "${BODY_BYTES:-20}" ]; then
    echo "the upstream on port $2 does not answer ${BODY_BYTES:-20} bytes" >&2
    exit 1
  fi
}

# wrk prints latencies as 123.45us / 1.23ms / 1.02s; convert to ms.
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.3f", v}'; }

# bench_workdir: a temporary directory in $OUT and a list `pids` of the processes a script
# starts; at exit those processes (and an nginx that wrote $OUT/nginx.pid) are stopped and
# the directory removed.
bench_workdir() {
  OUT=$(mktemp -d)
  pids=()
  trap bench_cleanup EXIT
}
bench_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$OUT/nginx.pid" ] && kill "$(cat "$OUT/nginx.pid")" 2>/dev/null || true
  rm -rf "$OUT"
}
