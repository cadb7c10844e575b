#!/bin/sh
# Regenerates the .env corpus and Node's readings of it. Needs go, node and
# npm (the npm registry, for dotenv at the version package-lock.json pins).
# Run it after changing loaderCorpus in targets/envloaders_test.go or the
# way keyrotate writes values, and commit what changes.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
go test -count=1 -run 'TestLoaderCorpus$' -update-loader-corpus . >/dev/null || true
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$here/package.json" "$here/package-lock.json" "$tmp/"
(cd "$tmp" && npm ci --no-audit --no-fund --silent)
NODE_PATH="$tmp/node_modules" node "$here/node-dotenv.js"
