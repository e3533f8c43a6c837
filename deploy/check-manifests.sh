#!/usr/bin/env bash
# Offline checks of the deployment files: every Kubernetes manifest in deploy/kubernetes
# against the Kubernetes schemas (strict), what the README relies on in them, and
# deploy/compose.yaml. kubernetes-validate (pinned in deploy/kubernetes/requirements.txt)
# is installed into a virtualenv under target/ on first use; nothing system-wide.
# Prints one line per check and `N passed, M failed`; exit status 1 on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${DEPLOY_VENV:-target/deploy-venv}
REQ=deploy/kubernetes/requirements.txt

# (Re)install when the venv is missing or was made from other requirements.
if ! cmp -s "$REQ" "$VENV/requirements.txt" 2>/dev/null \
   || ! "$VENV/bin/python" -c "import kubernetes_validate, yaml" 2>/dev/null; then
  echo "check-manifests: installing kubernetes-validate into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --only-binary=:all: -r "$REQ"
  cp "$REQ" "$VENV/requirements.txt"
fi

exec "$VENV/bin/python" deploy/check_manifests.py
