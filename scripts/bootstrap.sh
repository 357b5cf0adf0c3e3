#!/usr/bin/env bash
# Makes a fresh machine ready for fhir-pme: Deno (pinned, from npm), the npm packages Deno uses, and a
# project-local Python venv with pyarrow, and the parquet-java peer jar for the interop tests.
# Idempotent; quick when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYARROW_VERSION=26.0.1
DENO="node_modules/.bin/deno"

if [ ! -x "$DENO" ] || ! "$DENO" --version >/dev/null 2>&1; then
  echo "bootstrap: installing Deno from npm" >&2
  npm install --no-audit --no-fund --loglevel=error >&2
fi

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv" >&2
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import pyarrow, sys; sys.exit(pyarrow.__version__ != '$PYARROW_VERSION')" 2>/dev/null; then
  echo "bootstrap: installing pyarrow $PYARROW_VERSION into .venv" >&2
  .venv/bin/pip install --quiet --disable-pip-version-check "pyarrow==$PYARROW_VERSION" >&2
fi

# cryptography: the pyarrow key-tools peer's InMemoryKMS-style wrapping (AES-GCM) needs it.
CRYPTOGRAPHY_VERSION=50.0.2
if ! .venv/bin/python -c "import cryptography, sys; sys.exit(cryptography.__version__ != '$CRYPTOGRAPHY_VERSION')" 2>/dev/null; then
  echo "bootstrap: installing cryptography $CRYPTOGRAPHY_VERSION into .venv" >&2
  .venv/bin/pip install --quiet --disable-pip-version-check "cryptography==$CRYPTOGRAPHY_VERSION" >&2
fi

# The parquet-java interop peer (Java 17 + Maven come with the machine; Maven Central is reachable).
bash tests/interop/java/build.sh >&2

# Deno fetches npm: imports itself; cache them so the first test run does not race on downloads.
"$DENO" install --quiet >&2 2>/dev/null || "$DENO" install >&2
echo "bootstrap: ready ($("$DENO" --version | head -n 1), pyarrow $PYARROW_VERSION, parquet-java peer)" >&2
