#!/usr/bin/env bash
# The main job on a fresh machine (until the orchestration lands: the library-level pipeline).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec node_modules/.bin/deno run -A scripts/demo.ts "$@"
