#!/usr/bin/env bash
# `make dev`: set up, start a single-node cluster (`podium dev`), deploy examples/web.yaml
# unless the job exists already, and keep the cluster in the foreground until Ctrl-C
# (which stops the cluster and exits 0; the tasks keep running, see README.md).
#
#   PODIUM_DEV_ADDR      API address (default 127.0.0.1:4646)
#   PODIUM_DEV_DATA_DIR  state (default .podium/dev)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ADDR=${PODIUM_DEV_ADDR:-127.0.0.1:4646}
DATA=${PODIUM_DEV_DATA_DIR:-.podium/dev}
export PODIUM_ADDR="http://$ADDR"
PODIUM=.venv/bin/podium

"$PODIUM" dev --addr "$ADDR" --data-dir "$DATA" &
DEV=$!
STOPPED="podium dev stopped; the tasks keep running (podium job stop web stops them)"
stop_dev() {
  kill -TERM "$DEV" 2>/dev/null || true
  wait "$DEV" 2>/dev/null || true
}
interrupted() { # Ctrl-C while this script is busy: a clean stop, exit 0
  stop_dev
  trap - EXIT
  echo
  echo "$STOPPED"
  exit 0
}
trap interrupted INT TERM
trap stop_dev EXIT

for _ in $(seq 1 100); do
  if ! kill -0 "$DEV" 2>/dev/null; then
    wait "$DEV" # podium dev could not start (it said why): its exit status is ours
    exit 1
  fi
  if "$PODIUM" node status --json 2>/dev/null | grep -q '"ready"'; then
    break
  fi
  sleep 0.1
done

if "$PODIUM" job status web --json >/dev/null 2>&1; then
  # A re-run must not undo what the user did to the example since (a scale-down, say).
  echo "job 'web' exists already: not submitting examples/web.yaml again" \
    "(podium job run examples/web.yaml would)"
else
  echo "submitting examples/web.yaml (job 'web')"
  "$PODIUM" job run examples/web.yaml || true # its own message says what went wrong
fi
"$PODIUM" job status web || true
echo
echo "podium is running at $PODIUM_ADDR. In another shell:"
echo "  export PODIUM_ADDR=$PODIUM_ADDR"
echo "  .venv/bin/podium job status web     # the example: 3 copies of a Python web server"
echo "  .venv/bin/podium logs web -f        # every copy's stdout and stderr, merged"
echo "  .venv/bin/podium top                # CPU and memory, live"
echo "The web UI: $PODIUM_ADDR/ui/"
echo "Ctrl-C stops the cluster; the tasks keep running until \`podium job stop web\`."
# Ctrl-C reaches podium dev too, which stops cleanly (exit 0), often before this shell
# runs its trap: its exit status is the script's, said either way.
status=0
wait "$DEV" || status=$?
trap - EXIT
echo
if [ "$status" = 0 ]; then
  echo "$STOPPED"
else
  echo "podium dev exited with status $status"
fi
exit "$status"
