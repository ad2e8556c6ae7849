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
# TLS is on: `podium dev` writes $DATA/cli.json, which the CLI reads (from this directory
# for the default .podium/dev; PODIUM_CONFIG names it otherwise).
unset PODIUM_ADDR PODIUM_CACERT PODIUM_CLIENT_CERT PODIUM_CLIENT_KEY PODIUM_CONFIG
if [ "$DATA" != ".podium/dev" ]; then
  export PODIUM_CONFIG="$DATA/cli.json"
fi
rm -f "$DATA/cli.json" # wait for this run's, not an older one's
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
  if [ -f "$DATA/cli.json" ] && "$PODIUM" node status --json 2>/dev/null | grep -q '"ready"'; then
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
echo "podium is running at https://$ADDR (mutual TLS). In another shell, in this directory:"
echo "  .venv/bin/podium job status web     # the example: 3 copies of a Python web server"
echo "  .venv/bin/podium logs web -f        # every copy's stdout and stderr, merged"
echo "  .venv/bin/podium top                # CPU and memory, live"
echo "  .venv/bin/podium ui                 # a login link for the web UI"
echo "  . $DATA/env   # elsewhere, or for curl: the address and credentials"
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
