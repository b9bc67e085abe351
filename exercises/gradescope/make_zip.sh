#!/usr/bin/env bash
# Build the Gradescope autograder zip for one exercise:
#   exercises/gradescope/make_zip.sh 04_boundedness      -> _build/gradescope/04_boundedness.zip
set -euo pipefail
EXERCISE="${1:?usage: make_zip.sh EXERCISE_NAME}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
test -f "$ROOT/exercises/$EXERCISE.py" || { echo "no exercises/$EXERCISE.py" >&2; exit 2; }
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/course/exercises"
cp "$ROOT/exercises/gradescope/setup.sh" "$STAGE/"
sed "s/__EXERCISE__/$EXERCISE/" "$ROOT/exercises/gradescope/run_autograder" > "$STAGE/run_autograder"
chmod +x "$STAGE/setup.sh" "$STAGE/run_autograder"
cp "$ROOT/pyproject.toml" "$ROOT/README.md" "$STAGE/course/"   # pyproject names the README
cp -r "$ROOT/llmperf" "$STAGE/course/llmperf"
cp "$ROOT/exercises/$EXERCISE.py" "$STAGE/course/exercises/"
find "$STAGE" -name __pycache__ -prune -exec rm -rf {} +
mkdir -p "$ROOT/_build/gradescope"
OUT="$ROOT/_build/gradescope/$EXERCISE.zip"
rm -f "$OUT"
(cd "$STAGE" && python3 -m zipfile -c "$OUT" setup.sh run_autograder course)
echo "wrote $OUT"
