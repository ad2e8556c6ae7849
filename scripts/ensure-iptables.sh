#!/usr/bin/env bash
# Make `iptables` available for the partition test (it adds and removes its own rules on
# 127.0.0.0/8; nothing is changed here).
#
#   exit 0  root, and `iptables -L` works: the partition test must run
#   exit 1  not so; the reason is printed, and the test will skip with it
#
# As root and when missing: `apt-get install iptables`, with one `apt-get update` if the
# first try fails.
set -uo pipefail

skip() {
  echo "==> partition test will SKIP: $*" >&2
  exit 1
}

[ "$(id -u)" = 0 ] || skip "iptables rules need root"
if ! command -v iptables >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || skip "iptables is not installed and there is no apt-get"
  echo "==> installing iptables (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends iptables >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq --no-install-recommends iptables >/dev/null 2>&1 ||
      skip "apt-get install iptables failed"
  fi
fi
for bin in iptables iptables-legacy; do
  if command -v "$bin" >/dev/null 2>&1 && "$bin" -w 5 -L OUTPUT -n >/dev/null 2>&1; then
    echo "==> iptables: $("$bin" --version 2>/dev/null)"
    exit 0
  fi
done
skip "\`iptables -L\` fails here (a kernel without netfilter?)"
