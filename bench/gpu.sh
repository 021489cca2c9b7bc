#!/usr/bin/env bash
# One-command GPU benchmark: scVI training cells/s at batch 128 and 1,024, pybridge vs scvi-tools 1.4.2.
#
# Meant for the lent GPU machine (one NVIDIA GPU, no internet): it uses that machine's own python3 (which holds
# CUDA torch, numpy, scipy, pandas, h5py, lightning, ...) and installs the missing pure-Python packages
# (anndata, scvi-tools and their dependencies) from bench/.gpu-wheels, fetched beforehand here with
# `bash bench/gpu_wheels.sh` and carried along. Without those wheels, or if scvi-tools still fails to import,
# it says so in the table and times pybridge alone. Sized for under 5 minutes (each tool is stopped after 150 s);
# not yet run on a GPU: no session so far has been lent one.
#
#   bash bench/gpu.sh                     # on the GPU machine; results in $OUT (or gpu_bench_out/)
#   bash bench/gpu.sh --dry-run           # here, on the CPU: tiny sizes, checks the plumbing
#   bash bench/gpu.sh --pybridge-kwargs '{"precision": "bf16-mixed"}'   # pybridge with bfloat16 linear layers
#   bash bench/gpu.sh --device cpu ...    # any other option goes to bench/gpu_bench.py
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
out=${OUT:-gpu_bench_out}
"$python" -c "import torch" 2>/dev/null || { echo "gpu.sh: $python has no torch; set PYTHON=/path/to/python"; exit 2; }
wheels=${GPU_WHEELS:-bench/.gpu-wheels}  # GPU_WHEELS=none: use what the interpreter already has
if ls "$wheels"/*.whl >/dev/null 2>&1; then
    site=/tmp/pybridge-gpu-site
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        "$wheels"/*.whl || echo "gpu.sh: installing $wheels failed; going on without them"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "gpu.sh: no wheels in $wheels (run bash bench/gpu_wheels.sh here and carry it): anndata/scvi-tools may be missing"
fi
case " $* " in
    *" --dry-run "*|*" --device cpu "*) ;;
    *) "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
        || { echo "gpu.sh: torch sees no CUDA device (use --dry-run or --device cpu to test on the CPU)"; exit 2; } ;;
esac
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
mkdir -p "$out"
PYTHONUNBUFFERED=1 "$python" bench/gpu_bench.py --out "$out" "$@" 2>&1 | tee "$out/gpu_bench.log"
