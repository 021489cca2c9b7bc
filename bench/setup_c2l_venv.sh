#!/usr/bin/env bash
# Build (idempotently) the peer venv bench/.venv-c2l: cell2location==0.1.5 with pyro-ppl==1.9.1 on the local CPU
# torch==2.13.0. pyro-ppl 1.9.2, which pip picks otherwise, removed pyro.infer.autoguide.utils.deep_getattr and
# cell2location 0.1.5 fails at import. torch and pyro-ppl are pinned by a constraints file in the venv's pip.conf
# (bench/peer_venv.sh). Resolved versions are written to bench/requirements-c2l.txt.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3.11}"
TORCH_VERSION="2.13.0"
C2L_VERSION="0.1.5"
PYRO_VERSION="1.9.1"

# shellcheck source=bench/peer_venv.sh
source "$BENCH_DIR/peer_venv.sh"
peer_venv "$BENCH_DIR/.venv-c2l" "torch==$TORCH_VERSION" "pyro-ppl==$PYRO_VERSION"

installed torch "$TORCH_VERSION" || pip_install "torch==$TORCH_VERSION"
installed cell2location "$C2L_VERSION" || pip_install "torch==$TORCH_VERSION" "pyro-ppl==$PYRO_VERSION" "cell2location==$C2L_VERSION"

"$VENV/bin/python" - "$TORCH_VERSION" <<'PY'
import importlib.metadata as md, sys
torch_version = md.version("torch")
if torch_version.split("+")[0] != sys.argv[1]:
    sys.exit(f"bench/.venv-c2l: torch is {torch_version}, expected {sys.argv[1]}; delete the venv and rerun")
import cell2location
print(f"bench/.venv-c2l: cell2location {md.version('cell2location')}, pyro-ppl {md.version('pyro-ppl')}, "
      f"scvi-tools {md.version('scvi-tools')} on torch {torch_version}")
PY
"$VENV/bin/python" -m pip freeze --all > "$BENCH_DIR/requirements-c2l.txt"
