#!/usr/bin/env bash
# Builds js_marker.wasm into the directory given as $1 (default: ./build).
# Installs componentize-js and jco from the npm registry the first time, at
# the versions package-lock.json pins.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$(mkdir -p "${1:-build}" && cd "${1:-build}" && pwd)"
bin="$here/node_modules/.bin"

if [ ! -x "$bin/componentize-js" ]; then
    echo "installing componentize-js and jco into $here/node_modules" >&2
    (cd "$here" && npm ci --no-audit --no-fund)
fi

# Assemble the WIT: this example's world, with the repository's Steward
# package and the WASI packages (as jco ships them) as its dependencies.
wit="$(mktemp -d)"
trap 'rm -rf "$wit"' EXIT
wasi="$here/node_modules/@bytecodealliance/jco/lib/wit/builtin/0.2.12"
mkdir -p "$wit/deps/steward-resource"
cp "$here/wit/js-marker.wit" "$wit/"
cp "$here"/../../../wit/*.wit "$wit/deps/steward-resource/"
for package in io clocks filesystem; do
    mkdir -p "$wit/deps/wasi-$package"
    cp "$wasi/wasi-$package/package.wit" "$wit/deps/wasi-$package/"
done

# `jco componentize` is not used: jco 1.35 cannot read a WIT directory on
# disk (its bundled WASI shim preopens nothing, "os error 44"). The engine's
# outbound HTTP features are disabled: they import wasi:http, which Steward
# does not provide.
"$bin/componentize-js" "$here/src/js_marker.js" --wit "$wit" --world-name js-plugin \
    --disable http fetch-event -o "$out/js_marker.wasm"
echo "built $out/js_marker.wasm" >&2
