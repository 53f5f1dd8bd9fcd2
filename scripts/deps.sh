#!/usr/bin/env bash
# Installs what clickagg's single-machine mode and tests need and cannot bring
# through the Go module proxy: redis-server and redis-cli (Debian packages),
# Node.js with the pinned npm packages of test/parquetcheck (DuckDB, the
# independent Parquet reader of the e2e tests), promtool (the alert rules'
# tests), Chromium (the web console's browser test) and SeaweedFS (below).
#
# `deps.sh dev` installs only what `clickagg dev` needs (redis-server): a new
# user's first `make dev` should not wait for the test servers to build.
set -euo pipefail
cd "$(dirname "$0")/.."
only_dev=""
[ "${1:-}" = dev ] && only_dev=1

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    $sudo apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

if ! command -v redis-server >/dev/null 2>&1 && [ -z "${REDIS_SERVER:-}" ]; then
  echo "redis-server not found: installing the Debian package" >&2
  apt_install redis-server
  # The package starts a system redis on 6379; clickagg starts its own on
  # free ports and does not use it.
  command -v redis-server >/dev/null
fi

[ -n "$only_dev" ] && exit 0

# redis-cli joins the Redis Cluster that the Cluster tests start
# (localserver.StartRedisCluster); Debian's redis-server pulls it in, a
# redis-server from elsewhere may not.
if ! command -v redis-cli >/dev/null 2>&1 && [ -z "${REDIS_CLI:-}" ]; then
  echo "redis-cli not found: installing the Debian package redis-tools" >&2
  apt_install redis-tools
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "node or npm not found: installing the Debian packages" >&2
  apt_install nodejs npm
fi

# promtool checks and unit-tests monitoring/prometheus/alerts.yml
# (test/alerts_test.go); Debian ships it in the prometheus package, whose
# server the tests do not start.
if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool not found: installing the Debian package prometheus" >&2
  apt_install prometheus
fi

# Chromium runs the web console's browser test (test/console_test.go,
# driven by chromedp); Debian's package, headless.
if ! command -v chromium >/dev/null 2>&1 && [ -z "${CLICKAGG_CHROMIUM:-}" ]; then
  echo "chromium not found: installing the Debian package" >&2
  apt_install chromium
fi

# npm ci installs exactly what package-lock.json pins; it runs again only
# when the lock file is newer than what it installed.
pc=test/parquetcheck
if [ ! -f "$pc/node_modules/.package-lock.json" ] || [ "$pc/package-lock.json" -nt "$pc/node_modules/.package-lock.json" ]; then
  echo "installing $pc's npm packages (npm ci)" >&2
  (cd "$pc" && npm ci --no-audit --no-fund --loglevel=error)
fi

# SeaweedFS's weed, the S3-compatible server the archive's tests start,
# built once per machine from its Go module (scripts/seaweedfs.sh).
if [ -z "${CLICKAGG_WEED:-}" ]; then
  scripts/seaweedfs.sh >/dev/null
fi
