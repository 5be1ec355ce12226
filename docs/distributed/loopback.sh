#!/usr/bin/env bash
# Two worker processes on this machine (loopback): a correctness check, not a speed-up.
# Usage: docs/distributed/loopback.sh [train flags...]   e.g. --model simple_cnn --image-size 32
set -euo pipefail
run_dir=${RUN_DIR:-runs/loopback}
workers='["127.0.0.1:12345", "127.0.0.1:12346"]'
pids=()
for index in 0 1; do
  TF_CONFIG="{\"cluster\": {\"worker\": $workers}, \"task\": {\"type\": \"worker\", \"index\": $index}}" \
    python -m keras_app.train --strategy multiworker --run-dir "$run_dir" "$@" \
    > "worker$index.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
echo "run folder: $run_dir (worker logs: worker0.log, worker1.log); exit $status"
exit "$status"
