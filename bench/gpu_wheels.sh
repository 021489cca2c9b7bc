#!/usr/bin/env bash
# Fetch, here (with internet), the pure-Python and cp312 wheels that the lent GPU machine lacks for running
# pybridge and scvi-tools 1.4.2 with its own python3 (Python 3.12, CUDA torch, numpy 2, scipy, pandas, h5py,
# lightning, numba, xarray, ... already there; no anndata, no scvi-tools). They go to bench/.gpu-wheels
# (git-ignored through .git/info/exclude), which the device call carries: run({carry: ["bench/.gpu-wheels"]}).
# Versions follow bench/requirements-scvi.txt. About 10 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=bench/.gpu-wheels
mkdir -p "$dest"
grep -qxF "/$dest/" .git/info/exclude 2>/dev/null || echo "/$dest/" >> .git/info/exclude
packages=(
    anndata==0.12.19 array-api-compat==1.16.0 legacy-api-wrap==1.5 natsort==8.4.0 scverse-misc==0.0.3
    zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0
    scvi-tools==1.4.2 ml_collections==1.1.0 mudata==0.3.10 pyro-ppl==1.9.2 pyro-api==0.1.2
    sparse==0.19.3 scanpy==1.11.5 session-info2==0.4.1 pynndescent==0.7.0 umap-learn==0.5.12
    scikit-misc==0.5.3 pandas==2.3.3 pytz==2026.6 tzdata==2026.6
)
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$dest" "${packages[@]}"
# docrep ships an sdist only: build its (pure-Python) wheel here
python3 -m pip wheel --quiet --no-deps -w "$dest" docrep==0.3.2
ls "$dest"
du -sh "$dest"
