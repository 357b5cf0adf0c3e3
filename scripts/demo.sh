#!/usr/bin/env bash
# The main job on a fresh machine: makes the machine ready (bootstrap), then runs `fhir-pme demo`
# with the real Deno binary (./fhir-pme), so Ctrl-C and kill reach it. Usage: see ./fhir-pme demo --help
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec ./fhir-pme demo "$@"
