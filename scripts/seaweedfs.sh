#!/usr/bin/env bash
# Builds SeaweedFS's `weed`, the S3-compatible server the tests start on
# loopback, once per machine, and prints its path. It is built from its Go
# module's source because it has no Debian package; `go install` refuses the
# module (its go.mod has replace directives), so the module is copied out of
# the module cache and built there. The build takes minutes, so the binary is
# kept in a cache outside the repository and reused while it is there.
#
# The version is also localserver.SeaweedFSVersion: the tests look for the
# binary this script prints (or $CLICKAGG_WEED).
set -euo pipefail
version=v0.0.0-20261109003541-7506e5f91cd6
module=github.com/seaweedfs/seaweedfs

cache="${XDG_CACHE_HOME:-$HOME/.cache}/clickagg"
bin="$cache/seaweedfs-$version/weed"
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$cache"
# One build at a time per machine: a second caller waits for the first and
# then finds the binary.
exec 9>"$cache/seaweedfs.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
fi
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

echo "building SeaweedFS weed $version into $bin (once per machine, a few minutes)" >&2
tmp=$(mktemp -d "$cache/seaweedfs-build.XXXXXX")
# The module cache and the copy of it are read-only.
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
log="$tmp/build.log"
build() {
  # Outside any module, so nothing here touches clickagg's go.mod.
  cd "$tmp"
  go mod download "$module@$version"
  cp -R "$(go env GOMODCACHE)/$module@$version" "$tmp/src"
  chmod -R u+w "$tmp/src"
  cd "$tmp/src"
  go build -trimpath -ldflags='-s -w' -o "$tmp/weed" ./weed
}
# Quiet unless it fails. Not `if ! build`: errexit would be off inside it.
set +e
(set -e; build) >"$log" 2>&1
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
  cat "$log" >&2
  echo "building SeaweedFS weed failed" >&2
  exit 1
fi
mkdir -p "$(dirname "$bin")"
mv "$tmp/weed" "$bin"
echo "$bin"
