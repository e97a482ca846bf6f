#!/bin/sh
# Coverage-guided fuzzing (not in CI): ./fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
# Installs atheris into the project's .venv when it is missing (a manylinux wheel; a
# source build would need clang with libFuzzer), then runs each target in turn.
set -e
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "no .venv: run 'make test' once first" >&2; exit 2; }
"$PY" -c "import atheris" 2>/dev/null || .venv/bin/pip install --quiet atheris
exec "$PY" fuzz/run.py "$@"
