#!/usr/bin/env bash
# Make the `etcd` binary available for the etcd store tests (they start their own etcd
# processes on 127.0.0.1; nothing is started here).
#
#   exit 0  `etcd --version` runs
#   exit 1  it does not; the reason is printed, and the etcd tests will skip with it
#
# As root and when missing: `apt-get install etcd-server` (Debian/Ubuntu package, no
# third-party repo), with one `apt-get update` if the first try fails. The package's
# service is not started (no systemd in CI containers; policy-rc.d may deny it anyway).
set -uo pipefail

skip() {
  echo "==> etcd tests will SKIP: $*" >&2
  exit 1
}

works() { command -v etcd >/dev/null 2>&1 && etcd --version >/dev/null 2>&1; }

if ! works; then
  [ "$(id -u)" = 0 ] || skip "etcd is not installed and installing etcd-server needs root"
  command -v apt-get >/dev/null 2>&1 || skip "etcd is not installed and there is no apt-get"
  echo "==> installing etcd-server (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends etcd-server >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq --no-install-recommends etcd-server >/dev/null 2>&1 ||
      skip "apt-get install etcd-server failed"
  fi
  works || skip "etcd-server installed but \`etcd --version\` does not run"
fi
echo "==> etcd: $(etcd --version 2>/dev/null | head -n 1)"
