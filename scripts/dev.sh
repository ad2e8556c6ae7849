#!/usr/bin/env bash
# `make dev`: set up, start a single-node cluster (`podium dev`), deploy examples/web.yaml,
# and keep the cluster running in the foreground until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ADDR=${PODIUM_DEV_ADDR:-127.0.0.1:4646}
export PODIUM_ADDR="http://$ADDR"
.venv/bin/podium dev --addr "$ADDR" &
DEV=$!
trap 'kill -TERM $DEV 2>/dev/null; wait $DEV 2>/dev/null' INT TERM EXIT
for _ in $(seq 1 100); do
  if .venv/bin/podium node status >/dev/null 2>&1 && [ -n "$(.venv/bin/podium node status --json | grep '"ready"')" ]; then
    break
  fi
  sleep 0.1
done
.venv/bin/podium job run examples/web.yaml
.venv/bin/podium job status web
echo
echo "podium is running at $PODIUM_ADDR. In another shell:"
echo "  export PODIUM_ADDR=$PODIUM_ADDR"
echo "  .venv/bin/podium job status web     # the example: 3 copies of a Python web server"
echo "  .venv/bin/podium logs web -f        # every copy's output, merged"
echo "  .venv/bin/podium top                # CPU and memory, live"
echo "The web UI: $PODIUM_ADDR/ui/"
echo "Ctrl-C stops the cluster."
wait $DEV
