#!/usr/bin/env bash
# Installs what clickagg's single-machine mode and tests need and cannot bring
# through the Go module proxy: redis-server (Debian package), and SeaweedFS's
# weed, the S3-compatible server the archive's tests start (built once per
# machine from its Go module by scripts/seaweedfs.sh).
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v redis-server >/dev/null 2>&1 && [ -z "${REDIS_SERVER:-}" ]; then
  echo "redis-server not found: installing the Debian package" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
  # The package starts a system redis on 6379; clickagg starts its own on
  # free ports and does not use it.
  command -v redis-server >/dev/null
fi
if [ -z "${CLICKAGG_WEED:-}" ]; then
  ./seaweedfs.sh >/dev/null
fi
