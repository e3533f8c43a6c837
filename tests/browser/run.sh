#!/usr/bin/env bash
# Headless-browser walks through `varco demo` (SPID over SAML, OpenID Connect): installs
# what is missing (Debian's Chromium, playwright-core from the lock file), starts the demo on
# a free port with throw-away certificates, runs each walk, and ends with "N passed, M
# failed". Exit 0 when all passed. If Chromium cannot be installed, the run is SKIPPED
# (loudly; exit 0) unless VARCO_BROWSER_REQUIRED=1.
#
# Environment: VARCO_BIN (default target/debug/varco), SHOTS_DIR (screenshots, default
# target/browser-shots), CHROMIUM (default /usr/bin/chromium).
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root" || exit 1
dir=tests/browser
VARCO_BIN="${VARCO_BIN:-target/debug/varco}"
export SHOTS_DIR="${SHOTS_DIR:-target/browser-shots}"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
walks=(demo_login demo_oidc login_page)

skip() {
  echo
  echo "######################################################################"
  echo "##"
  echo "##  SKIPPED: $1"
  echo "##"
  echo "##  The browser walks through the demo did NOT run."
  shift
  for line in "$@"; do echo "##  $line"; done
  echo "##"
  echo "######################################################################"
  echo
  if [ "${VARCO_BROWSER_REQUIRED:-0}" = 1 ]; then
    echo "0 passed, 1 failed (VARCO_BROWSER_REQUIRED=1)"
    exit 1
  fi
  echo "0 passed, 0 failed, 1 skipped"
  exit 0
}

# --- what the walks need --------------------------------------------------------------------
if [ ! -x "$VARCO_BIN" ]; then
  echo "no varco binary at $VARCO_BIN (set VARCO_BIN)"
  echo "0 passed, 1 failed"
  exit 1
fi
if [ ! -x "$CHROMIUM" ]; then
  echo "-- $CHROMIUM is missing: apt-get install -y chromium"
  log="$(mktemp)"
  if ! { DEBIAN_FRONTEND=noninteractive apt-get install -y chromium >"$log" 2>&1 ||
    { apt-get update >>"$log" 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y chromium >>"$log" 2>&1; }; } ||
    [ ! -x "$CHROMIUM" ]; then
    mapfile -t tail_lines < <(tail -n 5 "$log")
    rm -f "$log"
    skip "Chromium could not be installed: apt-get install -y chromium failed." \
      "Install Debian's chromium (/usr/bin/chromium) and run tests/browser/run.sh again." \
      "apt-get said:" "${tail_lines[@]}"
  fi
  rm -f "$log"
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  skip "Node.js (node, npm) is missing." "Install Debian's nodejs and npm and run tests/browser/run.sh again."
fi
if [ ! -d "$dir/node_modules/playwright-core" ]; then
  echo "-- npm ci --prefix $dir"
  if ! npm ci --prefix "$dir" --no-audit --no-fund; then
    skip "playwright-core could not be installed (npm ci --prefix $dir failed)." \
      "Check access to the npm registry and run tests/browser/run.sh again."
  fi
fi

# --- the demo -------------------------------------------------------------------------------
tmp="$(mktemp -d)"
demo_pid=""
cleanup() {
  if [ -n "$demo_pid" ] && kill -0 "$demo_pid" 2>/dev/null; then
    kill -TERM "$demo_pid" 2>/dev/null
    for _ in $(seq 1 70); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$demo_pid" 2>/dev/null
    wait "$demo_pid" 2>/dev/null
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The port is chosen free, but the demo's own servers (IdPs, OP, echo) take random ports
# too and may take it first: then the demo exits and is started again on another port.
up=0
for attempt in 1 2 3; do
  port="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
  rm -rf "$tmp/certs"
  "$VARCO_BIN" demo --listen "127.0.0.1:$port" --certs-dir "$tmp/certs" >"$tmp/demo.log" 2>&1 &
  demo_pid=$!
  health="https://127.0.0.1:$port/_varco/healthz"
  for _ in $(seq 1 150); do # 30 s
    if ! kill -0 "$demo_pid" 2>/dev/null; then break; fi
    if "$VARCO_BIN" healthcheck --url "$health" --timeout 1s >/dev/null 2>&1; then up=1; break; fi
    sleep 0.2
  done
  [ "$up" = 1 ] && break
  echo "-- varco demo did not start on port $port (attempt $attempt)"
  kill -KILL "$demo_pid" 2>/dev/null
  wait "$demo_pid" 2>/dev/null
done
if [ "$up" != 1 ]; then
  echo "FAIL: varco demo did not answer at $health; its log:"
  tail -n 30 "$tmp/demo.log"
  echo "0 passed, ${#walks[@]} failed"
  exit 1
fi
base="https://localhost:$port" # the demo's base_url: https://localhost:<listen port>
echo "-- varco demo at $base (pid $demo_pid); screenshots in $SHOTS_DIR"
mkdir -p "$SHOTS_DIR"
rm -f "$SHOTS_DIR"/saml-*.png "$SHOTS_DIR"/oidc-*.png

# --- the walks ------------------------------------------------------------------------------
passed=0
failed=0
for w in "${walks[@]}"; do
  echo
  if timeout 90 node "$dir/$w.mjs" "$base"; then
    passed=$((passed + 1))
  else
    echo "FAIL: walk $w (exit $?)"
    failed=$((failed + 1))
  fi
done
if [ "$failed" != 0 ]; then
  echo
  echo "-- the demo's log (last 40 lines):"
  tail -n 40 "$tmp/demo.log"
fi
echo
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
