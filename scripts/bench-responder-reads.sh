#!/usr/bin/env bash
# What nats-server pays for a participant reading the log, by role: a worker (its role
# answers requests, so the server notes each delivery's reply subject for the reply window)
# against an observer (answers none), each reading the same events over and over on one
# connection for SECONDS. Starts its own `murmur up` (secure) on a free port with a
# throwaway data dir, fills it with 150,000 task submissions, issues both creds.
# Usage: bash scripts/bench-responder-reads.sh [SECONDS] [MURMUR_BINARY]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
seconds="${1:-40}"
murmur="${2:-}"
bash scripts/install.sh >/dev/null
if [ -z "$murmur" ]; then
  cargo build --release --locked --bin murmur
  murmur="$(cargo metadata --format-version 1 --no-deps | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/murmur"
fi
work="$(mktemp -d)"
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export MURMUR_DATA_DIR="$work/data" NATS_URL="nats://127.0.0.1:$port"
MURMUR_NATS_SERVER="${MURMUR_NATS_SERVER:-$root/.venv/bin/nats-server}" \
  NATS_URL= "$murmur" up --port "$port" --no-console >"$work/up.log" 2>&1 &
up=$!
trap 'kill $up 2>/dev/null; wait $up 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do
  grep -q "streams ready" "$work/up.log" 2>/dev/null && break
  sleep 0.2
done
grep -q "streams ready" "$work/up.log" || { cat "$work/up.log"; exit 1; }
server=$(pgrep -f "nats-server -c $MURMUR_DATA_DIR" | head -1)
for g in $(seq 1 150); do
  .venv/bin/python -c "
import json
print(json.dumps({'tasks': [{'id': f'g${g}t{i}', 'capability': 'bench.none', 'input': {'n': i}} for i in range(1000)]}))
" >"$work/graph.json"
  "$murmur" task graph submit "$work/graph.json" >/dev/null 2>"$work/said" || { cat "$work/said"; exit 1; }
done
for role in worker observer; do
  "$murmur" creds issue --role "$role" --name "reads-$role" -o "$work/$role.creds" >/dev/null 2>"$work/said" ||
    { cat "$work/said"; exit 1; }
done
echo "150,000 task submissions in a secure murmur up at $NATS_URL (nats-server pid $server)"
for role in observer worker; do
  echo "## $role, one connection, ${seconds} s"
  .venv/bin/python scripts/responder_reads.py "$NATS_URL" "$work/$role.creds" "$server" "$seconds" 150000
done
