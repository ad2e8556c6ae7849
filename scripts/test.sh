#!/usr/bin/env bash
# `make test`: set up everything the tests need, then lint, type-check and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "==> ruff format --check"
.venv/bin/ruff format --check src tests benchmarks
echo "==> ruff check"
.venv/bin/ruff check src tests benchmarks
echo "==> mypy"
.venv/bin/mypy
echo "==> docker engine"
# Installs and starts Docker where we are root; once an engine answers, docker tests must
# run (a docker problem then fails them instead of skipping).
if bash scripts/ensure-docker.sh; then
  export PODIUM_REQUIRE_DOCKER=1
fi
echo "==> etcd"
# Installs etcd-server where we are root; once `etcd` runs, the etcd tests must run.
if bash scripts/ensure-etcd.sh; then
  export PODIUM_REQUIRE_ETCD=1
fi
echo "==> prometheus"
# Installs Debian's prometheus (and promtool) where we are root; once they run, the
# metrics acceptance test must run.
if bash scripts/ensure-prometheus.sh; then
  export PODIUM_REQUIRE_PROMETHEUS=1
fi
echo "==> chromium"
# Installs Debian's chromium and chromium-driver where we are root; once they run, the
# web UI's browser tests must run.
if bash scripts/ensure-chromium.sh; then
  export PODIUM_REQUIRE_CHROMIUM=1
fi
echo "==> cgroups"
# Root with writable memory, cpu and pids controllers (v1 or v2): the limit and OOM tests must run.
if bash scripts/ensure-cgroups.sh; then
  export PODIUM_REQUIRE_CGROUPS=1
fi
echo "==> iptables"
# Root with a working iptables (installed when missing): the partition test must run.
if bash scripts/ensure-iptables.sh; then
  export PODIUM_REQUIRE_IPTABLES=1
fi
# Two runs, so the suite fits its time on a 2-core machine: first every test that can share
# the machine, two at a time (pytest-xdist; one file's tests stay together, on one worker,
# so module fixtures are started once); then the tests marked `alone` (docker, etcd
# clusters, iptables, a browser, load and CPU figures, timing claims across processes),
# one at a time with nothing beside them.
set +e
echo "==> pytest: tests that share the machine, two at a time"
.venv/bin/pytest -q -p no:cacheprovider -n 2 --dist loadfile -m "not alone" "$@"
shared=$?
echo "==> pytest: tests that need the machine alone, one at a time"
.venv/bin/pytest -q -p no:cacheprovider -m alone "$@"
alone=$?
set -e
# pytest's 5 means "no tests ran": fine for one run when the other ran tests (`make test
# FILE` may select only one kind), a failure when neither ran any.
if [ "$shared" -eq 5 ] && [ "$alone" -eq 5 ]; then
  exit 5
fi
for rc in "$shared" "$alone"; do
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then
    exit "$rc"
  fi
done
exit 0
