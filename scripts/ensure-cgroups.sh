#!/usr/bin/env bash
# Can the process driver's cgroup tests run here? (They make their own cgroups; nothing
# is changed here.)
#
#   exit 0  root, and memory, cpu and pids controllers we may write: cgroup v2 (the
#           unified hierarchy offers them) or v1 (a hierarchy for each): the limit and
#           OOM tests must run
#   exit 1  not so; the reason is printed, and those tests will skip with it
set -uo pipefail

skip() {
  echo "==> cgroup tests will SKIP: $*" >&2
  exit 1
}

[ "$(id -u)" = 0 ] || skip "making cgroups needs root"
root=/sys/fs/cgroup
if [ -f "$root/cgroup.controllers" ]; then
  for c in memory cpu pids; do
    grep -qw "$c" "$root/cgroup.controllers" || skip "cgroup v2 without the $c controller"
  done
  [ -w "$root/cgroup.subtree_control" ] || skip "$root is not writable"
  echo "==> cgroups: v2 ($(cat "$root/cgroup.controllers"))"
elif [ -f "$root/memory/memory.limit_in_bytes" ]; then
  [ -w "$root/memory" ] || skip "$root/memory is not writable"
  [ -f "$root/cpu/cpu.cfs_quota_us" ] || skip "cgroup v1 without the cpu controller (CFS quota)"
  [ -f "$root/pids/cgroup.procs" ] || skip "cgroup v1 without the pids controller"
  echo "==> cgroups: v1 ($(cd "$root" && ls -d memory cpu pids 2>/dev/null | tr '\n' ' '))"
else
  skip "no cgroup memory controller under $root ($(stat -fc %T "$root" 2>/dev/null))"
fi
