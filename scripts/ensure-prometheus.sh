#!/usr/bin/env bash
# Make Debian's `prometheus` and `promtool` available for the metrics acceptance test (it
# starts its own Prometheus on 127.0.0.1 with the scrape config from docs/observability.md;
# nothing is started here).
#
#   exit 0  `prometheus --version` and `promtool --version` run
#   exit 1  they do not; the reason is printed, and the Prometheus test will skip with it
#
# As root and when missing: `apt-get install prometheus` (Debian package, no third-party
# repo), with one `apt-get update` if the first try fails. Its service is not started.
set -uo pipefail

skip() {
  echo "==> Prometheus tests will SKIP: $*" >&2
  exit 1
}

works() {
  command -v prometheus >/dev/null 2>&1 && prometheus --version >/dev/null 2>&1 &&
    command -v promtool >/dev/null 2>&1 && promtool --version >/dev/null 2>&1
}

if ! works; then
  [ "$(id -u)" = 0 ] || skip "prometheus is not installed and installing it needs root"
  command -v apt-get >/dev/null 2>&1 || skip "prometheus is not installed and there is no apt-get"
  echo "==> installing prometheus (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 ||
      skip "apt-get install prometheus failed"
  fi
  works || skip "prometheus installed but \`prometheus --version\` does not run"
fi
echo "==> prometheus: $(prometheus --version 2>&1 | head -n 1)"
