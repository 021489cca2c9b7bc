#!/usr/bin/env bash
# Build (idempotently) the reference venv bench/.venv-scvi: scvi-tools==1.4.2 on the local CPU torch==2.13.0.
# torch is installed first and then pinned by a constraints file that the venv's own pip.conf applies to
# every later `pip install` in it, so neither scvi-tools nor anything added later can swap torch for a
# newer (CUDA, multi-GB) build. Resolved versions are written to bench/requirements-scvi.txt.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3.11}"
TORCH_VERSION="2.13.0"
SCVI_VERSION="1.4.2"

# shellcheck source=bench/peer_venv.sh
source "$BENCH_DIR/peer_venv.sh"
peer_venv "$BENCH_DIR/.venv-scvi" "torch==$TORCH_VERSION"

installed torch "$TORCH_VERSION" || pip_install "torch==$TORCH_VERSION"
installed scvi-tools "$SCVI_VERSION" || pip_install "scvi-tools==$SCVI_VERSION"

"$VENV/bin/python" - "$TORCH_VERSION" <<'PY'
import importlib.metadata as md, sys
torch_version = md.version("torch")
if torch_version.split("+")[0] != sys.argv[1]:
    sys.exit(f"bench/.venv-scvi: torch is {torch_version}, expected {sys.argv[1]}; delete the venv and rerun")
import scvi
print(f"bench/.venv-scvi: scvi-tools {scvi.__version__} on torch {torch_version}")
PY
"$VENV/bin/python" -m pip freeze --all > "$BENCH_DIR/requirements-scvi.txt"
