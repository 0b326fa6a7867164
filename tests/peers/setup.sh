#!/usr/bin/env bash
# Provisions the integration tests' peers under tests/peers/: one Python
# venv (.venv, from requirements.txt) and the npm packages of
# package-lock.json (node_modules; playwright-core drives the system's
# Chromium, /usr/bin/chromium, and downloads no browser). The tests run
# this themselves, once, under a lock; it is quick when everything is
# already there.
# Needs python3 with venv, and node with npm.
set -euo pipefail
cd "$(dirname "$0")"

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
