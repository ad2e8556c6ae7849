#!/usr/bin/env bash
# Make Debian's `chromium` and `chromedriver` (package chromium-driver) available for the
# web UI's browser tests (they start a headless browser of their own; nothing is started
# here, and nothing is downloaded at test time), and NSS's `certutil` (libnss3-tools), with
# which the tests make the browser trust the test cluster's CA as an operator would.
#
#   exit 0  `chromium --version`, `chromedriver --version` and `certutil` run
#   exit 1  they do not; the reason is printed, and the browser tests will skip with it
#
# As root and when missing: `apt-get install chromium chromium-driver libnss3-tools`,
# with one `apt-get update` if the first try fails.
set -uo pipefail

skip() {
  echo "==> browser tests will SKIP: $*" >&2
  exit 1
}

works() {
  command -v chromium >/dev/null 2>&1 && chromium --version >/dev/null 2>&1 &&
    command -v chromedriver >/dev/null 2>&1 && chromedriver --version >/dev/null 2>&1 &&
    command -v certutil >/dev/null 2>&1
}

if ! works; then
  [ "$(id -u)" = 0 ] || skip "chromium is not installed and installing it needs root"
  command -v apt-get >/dev/null 2>&1 || skip "chromium is not installed and there is no apt-get"
  echo "==> installing chromium, chromium-driver and libnss3-tools (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  pkgs=(chromium chromium-driver fonts-dejavu-core libnss3-tools)
  if ! apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1 ||
      skip "apt-get install chromium chromium-driver libnss3-tools failed"
  fi
  works || skip "chromium installed but \`chromium --version\` does not run"
fi
echo "==> chromium: $(chromium --version 2>/dev/null | head -n 1)"
