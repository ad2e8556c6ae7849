#!/usr/bin/env bash
# Make a Docker Engine answer for the docker tests: install it and start it where we may.
#
#   exit 0  `docker info` answers (and a static busybox is there to build the test image)
#   exit 1  it does not; the reason is printed, and the docker tests will skip with it
#
# As root and when missing: `apt-get update` (once) and `apt-get install docker.io
# busybox-static` (Debian/Ubuntu packages: no registry or third-party repo needed). Then,
# if no dockerd runs, it is started in the background, logging to $PODIUM_DOCKERD_LOG.
#
# What works in the container this was written in (Debian 12, kernel 6.x, cgroup v1, no
# systemd, root): plain `dockerd` with its defaults — overlay2 storage, iptables through
# nftables, cgroupfs. Where the first start fails (no overlayfs, no netfilter in a nested
# container), it is retried once with `--storage-driver=vfs --iptables=false
# --ip6tables=false`: slower image layers, and published ports go through docker-proxy
# (the userland proxy) instead of NAT rules, which is all the tests need (127.0.0.1 only).
set -uo pipefail

LOG=${PODIUM_DOCKERD_LOG:-/var/log/podium-dockerd.log}
WAIT=${PODIUM_DOCKERD_WAIT:-30} # seconds to wait for a started dockerd to answer

answers() { command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; }

skip() {
  echo "==> docker tests will SKIP: $*" >&2
  exit 1
}

static_busybox() {
  local b
  for b in /bin/busybox /usr/bin/busybox; do
    [ -x "$b" ] && ! head -c 4096 "$b" | grep -qa 'ld-linux' && return 0
  done
  return 1
}

is_root() { [ "$(id -u)" = 0 ]; }

# ── packages ───────────────────────────────────────────────────────────────────────────
missing=()
command -v dockerd >/dev/null 2>&1 || answers || missing+=(docker.io)
static_busybox || missing+=(busybox-static)
if [ ${#missing[@]} -gt 0 ]; then
  if ! is_root; then
    answers || skip "no docker engine answers and installing ${missing[*]} needs root"
    echo "==> warning: ${missing[*]} missing and not root; docker tests need busybox-static" >&2
  elif ! command -v apt-get >/dev/null 2>&1; then
    answers || skip "no docker engine and no apt-get to install ${missing[*]}"
  else
    echo "==> installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
      apt-get update -qq >/dev/null 2>&1 || true
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
        { answers || skip "apt-get install ${missing[*]} failed"; }
    fi
  fi
fi

if answers; then
  echo "==> docker engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
  exit 0
fi

# ── the daemon ─────────────────────────────────────────────────────────────────────────
is_root || skip "no docker engine answers and starting dockerd needs root"
command -v dockerd >/dev/null 2>&1 || skip "dockerd is not installed"

start_dockerd() {
  echo "==> starting dockerd $* (log: $LOG)"
  mkdir -p "$(dirname "$LOG")"
  # setsid + nohup: the daemon outlives this script and the test run, as a service would.
  # It keeps none of this shell's other open files: a lock the caller holds (`flock LOCK
  # make test`) would otherwise be held by the daemon for as long as it runs.
  (
    for fd in $(ls /proc/$BASHPID/fd); do
      [ "$fd" -gt 2 ] && eval "exec $fd>&-"
    done 2>/dev/null
    exec setsid nohup dockerd "$@" >>"$LOG" 2>&1 </dev/null
  ) &
  STARTED=$!
  local i
  for ((i = 0; i < WAIT * 4; i++)); do
    answers && return 0
    # It died: no point waiting out the rest.
    kill -0 "$STARTED" 2>/dev/null || return 1
    sleep 0.25
  done
  return 1
}

STARTED=
stop_our_dockerd() { # only the one this script started, by its pid
  local pid=$STARTED
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null || true
}

if pgrep -x dockerd >/dev/null 2>&1; then
  # Running but not answering yet (just started by someone else?): give it the same time.
  for ((i = 0; i < WAIT * 4; i++)); do answers && exit 0; sleep 0.25; done
  skip "a dockerd runs but does not answer after ${WAIT}s (see its log)"
fi

if start_dockerd; then
  echo "==> docker engine answers"
  exit 0
fi
echo "==> dockerd did not come up with its defaults; last log lines:" >&2
tail -n 5 "$LOG" >&2
stop_our_dockerd
if start_dockerd --storage-driver=vfs --iptables=false --ip6tables=false; then
  echo "==> docker engine answers (vfs storage, no iptables)"
  exit 0
fi
tail -n 5 "$LOG" >&2
stop_our_dockerd
skip "dockerd would not start here (see $LOG)"
