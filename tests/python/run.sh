#!/usr/bin/env bash
# Runs the Python end-to-end suite against the gateway binaries in $CARGO_TARGET_DIR/debug
# (or $LLMGATE_BIN_DIR). Build them first:
#   cargo build -p llmgate-dataplane -p llmgate-tests --bins
# Extra arguments go to pytest, e.g. `tests/python/run.sh -k embeddings`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${LLMGATE_VENV:-$repo/.venv-it}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"

cd "$repo"
set +e
"$venv/bin/python" -m pytest tests/python -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests; treating that as a failure" >&2
    exit 1
fi
exit "$rc"
