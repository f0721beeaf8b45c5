#!/usr/bin/env bash
# The nightly run, locally or in CI (.github/workflows/nightly.yml): every suite on every device of
# the matrix (default suites/nightly.yaml), compared with last night's run, reported as HTML (with
# plots), JUnit XML and a markdown summary in $NIGHTLY_OUT (default ./nightly-out).
# Exit code: 0 no regression since last night, 1 a regression, 2 bad configuration or interrupted.
# History lives in $FARM_HOME/results.db (default ./.farm): keep it between nights.
# FARM: the farm command to use (default: the one scripts/bootstrap.sh installs into .venv).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${FARM:-}" ]; then
  source "$ROOT/scripts/bootstrap.sh"
  FARM="$ROOT/.venv/bin/farm"
fi
cd "$ROOT"
MATRIX="${1:-suites/nightly.yaml}"
OUT="${NIGHTLY_OUT:-$ROOT/nightly-out}"
mkdir -p "$OUT"

matrix_rc=0
"$FARM" matrix "$MATRIX" --format md > "$OUT/summary.md" || matrix_rc=$?
if [ "$matrix_rc" -gt 1 ]; then  # bad matrix or interrupted: no run to compare
  echo "nightly: farm matrix exited with $matrix_rc" >&2
  exit "$matrix_rc"
fi

compare_rc=0
"$FARM" compare last-night last --format md > "$OUT/compare.md" 2> "$OUT/compare.err" || compare_rc=$?
baseline=(--baseline last-night)
if [ "$compare_rc" -eq 2 ]; then  # no run before today's midnight (first night, or history lost)
  { echo "## no comparison"; cat "$OUT/compare.err"; } > "$OUT/compare.md"
  baseline=()
  compare_rc=0
fi
"$FARM" report last --format html -o "$OUT/report.html" "${baseline[@]}"
"$FARM" report last --format junit -o "$OUT/junit.xml"

cat "$OUT/compare.md" "$OUT/summary.md" > "$OUT/step-summary.md"
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
  cat "$OUT/step-summary.md" >> "$GITHUB_STEP_SUMMARY"
fi
cat "$OUT/compare.md"
echo "nightly: report in $OUT/report.html" >&2
exit "$compare_rc"
