#!/usr/bin/env bash
# Installs what is missing, then runs every test (unit, integration against a real
# nats-server, doc tests), compiles the benchmarks and builds the API docs.
# Usage: bash scripts/test.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/install.sh
export MURMUR_NATS_SERVER="$root/.venv/bin/nats-server"
# The console page's own logic (tools/console/test), in Node.
(cd tools/console && node --test test/)
cargo build --workspace --all-targets --locked
cargo test --workspace --all-targets --locked -- --test-threads 2
cargo test --workspace --doc --locked
# The API docs build without warnings (broken or ambiguous intra-doc links fail here).
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
