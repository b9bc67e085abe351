#!/usr/bin/env bash
# Build the Gradescope autograder zip for one exercise:
#   exercises/gradescope/make_zip.sh 04_boundedness      -> _build/gradescope/04_boundedness.zip
#   exercises/gradescope/make_zip.sh 04_boundedness DIR  -> DIR/04_boundedness.zip
# The zip holds what setup.sh installs (pyproject.toml with its [grading] extra, the README it
# names, the llmperf package) and the one instructor source that run_autograder grades against.
# It leaves out what grading never loads: the trained models' weights (llmperf/trained/weights,
# some 25 MB; no exercise uses llmperf.trained, tests/test_gradescope_zip.py checks) and
# Python's caches. The zip is some 200 kB.
set -euo pipefail
EXERCISE="${1:?usage: make_zip.sh EXERCISE_NAME [OUTPUT_DIR]}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT_DIR="$(mkdir -p "${2:-$ROOT/_build/gradescope}" && cd "${2:-$ROOT/_build/gradescope}" && pwd)"
test -f "$ROOT/exercises/$EXERCISE.py" || { echo "no exercises/$EXERCISE.py" >&2; exit 2; }
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/course/exercises"
cp "$ROOT/exercises/gradescope/setup.sh" "$STAGE/"
sed "s/__EXERCISE__/$EXERCISE/" "$ROOT/exercises/gradescope/run_autograder" > "$STAGE/run_autograder"
chmod +x "$STAGE/setup.sh" "$STAGE/run_autograder"
cp "$ROOT/pyproject.toml" "$ROOT/README.md" "$STAGE/course/"   # pyproject names the README
cp -r "$ROOT/llmperf" "$STAGE/course/llmperf"
rm -rf "$STAGE/course/llmperf/trained/weights"
cp "$ROOT/exercises/$EXERCISE.py" "$STAGE/course/exercises/"
find "$STAGE" -name __pycache__ -prune -exec rm -rf {} +
find "$STAGE" -name '*.py[co]' -delete
OUT="$OUT_DIR/$EXERCISE.zip"
rm -f "$OUT"
(cd "$STAGE" && python3 -m zipfile -c "$OUT" setup.sh run_autograder course)
echo "wrote $OUT"
