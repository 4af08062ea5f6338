# Sourced by host test suites: PASS/FAIL reporting in the format scripts/test.sh counts.
failures=0
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; failures=$((failures + 1)); }
# expect NAME CONDITION-COMMAND...: PASS if the command succeeds.
expect() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name" "$*"; fi; }
finish() { exit $((failures > 0)); }
