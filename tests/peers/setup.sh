#!/usr/bin/env bash
# Provisions the integration tests' peers under tests/peers/: one Python
# venv (.venv, from requirements.txt) and the npm packages of
# package-lock.json (node_modules; playwright-core drives the system's
# Chromium, /usr/bin/chromium, and downloads no browser). The tests run
# this themselves, once, under a lock; it is quick when everything is
# already there.
# The system packages it needs (python3 with venv, node with npm, Debian's
# chromium) are installed with apt-get when missing, as root or through
# sudo without a password; otherwise it stops and names the command.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
{ command -v node && command -v npm; } >/dev/null || missing+=(nodejs npm)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3 python3-venv)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    as_root=()
  elif sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    echo "peers: missing system packages: ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "peers: installing ${missing[*]} with apt-get (once)" >&2
  "${as_root[@]}" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq "${missing[@]}" >&2
fi

if [ ! -x .venv/bin/python ]; then
  echo "peers: creating the Python venv in tests/peers/.venv" >&2
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import mcp.server.mcpserver, standardwebhooks' 2>/dev/null; then
  echo "peers: installing requirements.txt into the venv" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
fi
if [ ! -d node_modules/@modelcontextprotocol/server-everything ] \
  || [ ! -d node_modules/@modelcontextprotocol/sdk ] \
  || [ ! -d node_modules/playwright-core ]; then
  echo "peers: installing the npm packages of package-lock.json" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
