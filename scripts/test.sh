#!/usr/bin/env bash
# Everything the tests need, on a fresh Debian machine, then every check:
#   1. system packages for the real servers the tests start (mosquitto and the headers and
#      compiler for its test plugin, Dovecot, Postfix) and
#      the headless Chromium that loads the demo's live page;
#   2. a venv (.venv) with trionet and all its extras and test dependencies;
#   3. ruff, mypy --strict, the Sphinx docs build (warnings as errors), and the pytest suite.
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# -- 1. system packages -----------------------------------------------------------------------
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
# the test plugin for MQTT 5 enhanced authentication (trionet/testing/mosquitto_auth_plugin.c)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
[ -e /usr/include/mosquitto_plugin.h ] || need+=(mosquitto-dev)
[ -e /usr/include/mosquitto.h ] || need+=(libmosquitto-dev)
[ -e /usr/include/openssl/evp.h ] || need+=(libssl-dev)
[ -x /usr/sbin/dovecot ] || need+=(dovecot-core)
[ -e /usr/lib/dovecot/imap ] || need+=(dovecot-imapd)
[ -e /usr/lib/dovecot/lmtp ] || need+=(dovecot-lmtpd)
[ -x /usr/lib/postfix/sbin/master ] || need+=(postfix)
command -v wrk >/dev/null 2>&1 || need+=(wrk)  # load generator for bench/asgi.py
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # headless browser of the live-page test
if [ ${#need[@]} -gt 0 ]; then
    step "apt-get install ${need[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    # The tests only ever run private server instances on free loopback ports: keep the
    # packages' own system services from starting during installation.
    added_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
    [ -z "$added_policy" ] || $SUDO rm -f /usr/sbin/policy-rc.d
fi

# -- 2. the venv ------------------------------------------------------------------------------
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    step "create .venv"
    "$PYTHON" -m venv .venv
fi
step "pip install -e '.[all,test,bench]'"
.venv/bin/python -m pip install -q --upgrade pip
# bench: the peers the benchmark smoke tests run (aiomqtt, aiokafka, confluent-kafka, FastStream)
.venv/bin/python -m pip install -q -e '.[all,test,bench]'

# -- 3. checks --------------------------------------------------------------------------------
step "ruff"
.venv/bin/ruff check trionet tests bench docs
step "mypy --strict trionet"
.venv/bin/mypy --strict trionet
step "docs (sphinx-build -W)"
rm -rf docs/_build
.venv/bin/sphinx-build -W -q -b html docs docs/_build/html
step "pytest"
.venv/bin/pytest -q "$@"
