#!/usr/bin/env bash
# The inference benchmark: murmur (candle) against llama.cpp (PyPI xllamacpp, installed
# into .venv here, pinned by hash) on the same GGUF file, threads, prompts and token counts.
# Usage: bash scripts/bench-inference.sh [MODEL.gguf] [extra murmur-bench flags]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/install.sh
if ! .venv/bin/python -c "import xllamacpp" 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps --require-hashes \
    -r scripts/requirements-bench.txt
fi
# The model is the first argument unless it is an option (`--runs 3` alone keeps SmolLM2).
model="models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  model="$1"
  shift
fi
RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-2}" cargo run --release --locked --bin murmur-bench -- --inference "$model" \
  --baseline-python .venv/bin/python "$@"
