#!/usr/bin/env bash
# Builds python_marker.wasm into the directory given as $1 (default: ./build).
# Installs componentize-py from PyPI into ./.venv the first time.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$(mkdir -p "${1:-build}" && cd "${1:-build}" && pwd)"
wit="$here/../../../wit"
venv="$here/.venv"
componentize_py="$venv/bin/componentize-py"

if ! "$componentize_py" --version 2>/dev/null | grep -q '^componentize-py 0\.25\.'; then
    echo "installing componentize-py 0.25.x into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet 'componentize-py>=0.25,<0.26'
fi

# The bindings (the `wit_world` package and its helpers) are generated, never
# committed: they go to a scratch directory on the module search path.
bindings="$(mktemp -d)"
trap 'rm -rf "$bindings"' EXIT
"$componentize_py" -d "$wit" -w plugin bindings "$bindings"
"$componentize_py" -d "$wit" -w plugin componentize python_marker \
    -p "$here/src" -p "$bindings" -o "$out/python_marker.wasm"
echo "built $out/python_marker.wasm" >&2
