#!/usr/bin/env bash
# The test command: makes the machine ready (bootstrap), runs the static checks, the Deno test suite
# and the pyarrow peer's self-checks, and ends with one line "N passed, N failed" over all of them.
# Exit status 0 only when nothing failed.
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh || { echo "0 passed, 1 failed"; exit 1; }
# The real binary, not the npm shim (which does not pass signals on; see README, the ./fhir-pme launcher).
DENO=node_modules/deno/deno
mkdir -p .cache
passed=0
failed=0

check() { # name, command...
  local name=$1; shift
  if "$@" >.cache/check.log 2>&1; then
    echo "check $name: ok"; passed=$((passed + 1))
  else
    echo "check $name: FAILED"; tail -n 30 .cache/check.log; failed=$((failed + 1))
  fi
}
check "deno fmt" "$DENO" fmt --check
check "deno lint" "$DENO" lint
check "deno check" "$DENO" check .

# Deno tests (JUnit report gives per-test counts; steps count as tests).
rm -f .cache/deno-junit.xml
"$DENO" test -A --junit-path=.cache/deno-junit.xml "${@:-tests/}"
read -r dp df < <(python3 - <<'PY'
import xml.etree.ElementTree as ET
try:
    root = ET.parse(".cache/deno-junit.xml").getroot()
except Exception:
    print(0, 1); raise SystemExit
cases = root.iter("testcase")
p = f = 0
for c in cases:
    if c.find("failure") is not None or c.find("error") is not None:
        f += 1
    elif c.find("skipped") is None:
        p += 1
print(p, f)
PY
)
passed=$((passed + dp)); failed=$((failed + df))

# The SQL-on-FHIR v2 conformance suite through the CLI; its standard test report is written to
# .cache/sql-on-fhir-test-report.json and its counts join the totals.
suite=tests/data/sql-on-fhir-v2
if [ -d "$suite" ]; then
  if views_out=$("$DENO" run -A cli/main.ts views test "$suite" --report .cache/sql-on-fhir-test-report.json 2>&1); then
    line=$(printf '%s\n' "$views_out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -n 1)
    vp=$(echo "$line" | cut -d' ' -f1); vf=$(echo "$line" | cut -d' ' -f3)
    echo "sql-on-fhir suite: $line (report: .cache/sql-on-fhir-test-report.json)"
    passed=$((passed + ${vp:-0})); failed=$((failed + ${vf:-1}))
  else
    printf '%s\n' "$views_out" | tail -n 20; failed=$((failed + 1))
  fi
else
  echo "sql-on-fhir suite: $suite missing"; failed=$((failed + 1))
fi

# The pyarrow interop peer checks itself (it is what the interop tests trust).
if out=$(.venv/bin/python -B tests/interop/test_pyarrow_tool.py 2>&1); then
  n=$(printf '%s\n' "$out" | grep -cE '^(ok|PASS)' || true)
  passed=$((passed + (n > 0 ? n : 1)))
else
  printf '%s\n' "$out" | tail -n 20
  failed=$((failed + 1))
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
