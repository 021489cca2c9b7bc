"""Atlas scale (issue 14): a 62,710-gene scVI and a 100-million-cell minified store, explored on one small machine.

Everything lives in ``bench/.atlas/`` (git-ignored). Costs are for 2 shared cores, 24 GB RAM, local disk:

    .venv/bin/python bench/atlas.py model                    # ~2 min: 62,710 genes, 128 hidden, 10 latent, 14
                                                             # plates, 3 epochs on 3,000 simulated cells (90 s)
    .venv/bin/python bench/atlas.py store --cells 100000000  # 1M prototype log-normalisers once (1.6e13 FLOP:
                                                             # 20 min niced on a loaded machine), then 10 GB
                                                             # written in ~35 s (to the page cache)
    .venv/bin/python bench/atlas.py slice                    # the first 1M cells as an ordinary minified .h5ad (1 s)
    .venv/bin/python bench/atlas.py verify                   # a 20,000-cell store read back by anndata, exactly (5 s)
    .venv/bin/python bench/atlas.py measure --disk --cold    # every operation in its own process, ~17 min in all;
                                                             # scvi_gne_1gene_1M alone takes 5.5 min and 19 GB RSS
    .venv/bin/python bench/atlas.py report                   # "## Atlas scale: 100M-cell minified store"

The store is an .h5ad in anndata's on-disk layout: obs (cell names, categorical ``plate`` and ``group``,
``observed_lib_size``, ``pybridge_log_normalizer``), obsm ``scvi_latent_qzm``/``scvi_latent_qzv`` (float32,
chunks of 65,536 cells), var (the genes), uns (minify type, the model's fingerprint and registry) and an empty
CSR X whose all-zero ``indptr`` is a chunked dataset never written, so HDF5 allocates no chunks for it: anndata
needs an X to open a file with ``backed="r"``, and scvi-tools an all-zero sparse X in minified mode.

Each cell's log-normaliser must be exact (logsumexp over all 62,710 decoder logits at z = qzm with its plate);
that costs 1.6e7 FLOP per cell, 1.6e15 for 100M cells, so 1M distinct prototype cells are simulated and their
log-normalisers computed exactly, and every store cell is a random prototype (posterior, plate, normaliser)
with its own library size.

Timed operations run under ``flock /tmp/pybridge-bench.lock`` with OMP_NUM_THREADS=2, one fresh process each
(peak RSS = that process's VmHWM, through bench/peak_rss.py); scvi-tools 1.4.2 runs from bench/.venv-scvi.
``measure --ops decode_1gene_all`` (without ``--cold``) right after the cold run gives the warm-cache decode.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".atlas"
MODEL_DIR, SCVI_DIR = WORK / "model", WORK / "model_scvi_tools"
SLICE = WORK / "slice.h5ad"
RESULTS = WORK / "results.json"
SCVI_PYTHON = ROOT / "bench" / ".venv-scvi" / "bin" / "python"
LOCK = "/tmp/pybridge-bench.lock"
HEADING = "## Atlas scale: 100M-cell minified store"

N_GENES, N_PLATES, N_HIDDEN, N_LATENT = 62_710, 14, 128, 10
PLATES = [f"plate{i}" for i in range(1, N_PLATES + 1)]
GROUPS = ["A", "B", "rest"]
ROW_CHUNK = 65_536
WRITE_BLOCK = 1 << 22
QZM, QZV = "scvi_latent_qzm", "scvi_latent_qzv"
LIBRARY, LOGNORM = "observed_lib_size", "pybridge_log_normalizer"


def gene_names(n: int = N_GENES) -> list[str]:
    return [f"ENSG{i + 1:011d}" for i in range(n)]


DECODE_GENE = gene_names()[31_337]
GENES_100 = [gene_names()[i] for i in np.sort(np.random.default_rng(100).choice(N_GENES, 100, replace=False))]


def store_path(n_cells: int) -> Path:
    return WORK / f"store_{n_cells}.h5ad"


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


# ---- model ------------------------------------------------------------------------------------------------------
def build_model(n_cells: int, epochs: int) -> dict:
    """Train the 62,710-gene scVI briefly on simulated sparse counts; save it in both formats."""
    import anndata
    import pandas as pd
    import scipy.sparse as sp

    import pybridge
    from pybridge.data.synthetic import simulate_nb_blocks

    X = sp.vstack(list(simulate_nb_blocks(n_cells, N_GENES, block_cells=1000, seed=14, mean_total=3000.0,
                                          genes_per_type=3000, n_types=10)), format="csr")
    plates = np.random.default_rng(15).integers(0, N_PLATES, n_cells)
    obs = pd.DataFrame({"plate": pd.Categorical.from_codes(plates, PLATES)},
                       index=[f"train{i}" for i in range(n_cells)])
    adata = anndata.AnnData(X=X, obs=obs, var=pd.DataFrame(index=gene_names()))
    pybridge.SCVI.setup_anndata(adata, batch_key="plate")
    model = pybridge.SCVI(adata, n_hidden=N_HIDDEN, n_latent=N_LATENT)
    start = time.perf_counter()
    model.train(max_epochs=epochs, batch_size=128, accelerator="cpu", progress=False)
    train_s = time.perf_counter() - start
    model.save(MODEL_DIR, overwrite=True)
    model.save_scvi_tools(SCVI_DIR, overwrite=True, minified=True)
    info = {"train_cells": n_cells, "epochs": epochs, "train_s": train_s, "density": X.nnz / (n_cells * N_GENES),
            "pybridge_bytes": dir_bytes(MODEL_DIR), "scvi_tools_bytes": dir_bytes(SCVI_DIR),
            "parameters": sum(p.numel() for p in model.module.parameters())}
    update_results("model", info)
    return info


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


# ---- prototypes -------------------------------------------------------------------------------------------------
def prototypes(n: int, seed: int = 7) -> dict[str, np.ndarray]:
    """``n`` simulated cells (posteriors around 30 clusters, a random plate) with exact log-normalisers."""
    path = WORK / f"prototypes_{n}.npz"
    if path.exists():
        with np.load(path) as saved:
            return dict(saved)
    import pybridge
    from pybridge.data.minified import LatentCells
    from pybridge.decoding import compute_log_normalizers

    model = pybridge.SCVI.load(MODEL_DIR, accelerator="cpu")
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 0.8, (30, N_LATENT))
    qzm = (centres[rng.integers(0, 30, n)] + rng.normal(0.0, 0.6, (n, N_LATENT))).astype(np.float32)
    qzv = np.exp(rng.normal(np.log(0.02), 0.5, (n, N_LATENT))).astype(np.float32)
    plate = rng.integers(0, N_PLATES, n).astype(np.int8)
    lognorm = np.empty(n, np.float32)
    start, block = time.perf_counter(), 50_000
    for lo in range(0, n, block):
        rows = slice(lo, min(lo + block, n))
        cells = LatentCells(qzm[rows], qzv[rows], np.ones(rows.stop - lo, np.float32),
                            {"batch": plate[rows].astype(np.int64), "labels": np.zeros(rows.stop - lo, np.int64)})
        lognorm[rows] = compute_log_normalizers(model.module, cells, chunk_size=1024)
        print(f"log-normalisers {rows.stop:,}/{n:,} ({time.perf_counter() - start:.0f} s)", flush=True)
    out = {"qzm": qzm, "qzv": qzv, "plate": plate, "lognorm": lognorm}
    np.savez(WORK / f".prototypes_{n}.tmp.npz", **out)
    os.replace(WORK / f".prototypes_{n}.tmp.npz", path)
    update_results(f"prototypes_{n}", {"seconds": time.perf_counter() - start, "flop": 2.0 * n * N_HIDDEN * N_GENES})
    return out


# ---- store ------------------------------------------------------------------------------------------------------
def group_codes(n_cells: int, group_cells: int, seed: int) -> np.ndarray:
    """0 ("A") for ``group_cells`` random cells, 1 ("B") for as many others, 2 ("rest") for the remainder."""
    codes = np.full(n_cells, 2, np.int8)
    chosen = np.random.default_rng(seed).choice(n_cells, 2 * group_cells, replace=False)
    codes[chosen[:group_cells]], codes[chosen[group_cells:]] = 0, 1
    return codes


def cell_names(start: int, stop: int) -> np.ndarray:
    """Fixed-width ASCII names "c000000042" (10 bytes), built from the digits without Python strings."""
    numbers = np.arange(start, stop, dtype=np.int64)
    chars = np.empty((stop - start, 10), np.uint8)
    chars[:, 0] = ord("c")
    for position in range(9, 0, -1):
        chars[:, position] = ord("0") + numbers % 10
        numbers //= 10
    return chars.view("S10").reshape(-1)


def cell_blocks(n_cells: int, protos: dict[str, np.ndarray], seed: int) -> Iterator[tuple[int, dict]]:
    """The store's cells, block by block: a random prototype each, a fresh library size (lognormal, ~3,000)."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_cells, WRITE_BLOCK):
        m = min(WRITE_BLOCK, n_cells - start)
        pick = rng.integers(0, len(protos["qzm"]), m)
        library = np.maximum(np.round(rng.lognormal(np.log(3000.0), 0.5, m)), 200).astype(np.float32)
        yield start, {QZM: protos["qzm"][pick], QZV: protos["qzv"][pick], "plate": protos["plate"][pick],
                      LIBRARY: library, LOGNORM: protos["lognorm"][pick]}


def _array(group, name: str, shape: tuple, dtype, chunks: tuple | None = None):
    data = group.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks)
    data.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
    return data


def _categorical(group, name: str, n: int, categories: list[str]):
    import h5py

    cat = group.create_group(name)
    cat.attrs.update({"encoding-type": "categorical", "encoding-version": "0.2.0", "ordered": False})
    names = cat.create_dataset("categories", data=np.asarray(categories, dtype=object),
                               dtype=h5py.string_dtype())
    names.attrs.update({"encoding-type": "string-array", "encoding-version": "0.2.0"})
    return _array(cat, "codes", (n,), np.int8, (min(n, 1 << 20),))


def uns_of(model_dir: Path) -> dict[str, str]:
    """What ``model.minify()`` puts in uns: minify type, the model's weight digest and its registry (JSON)."""
    import pybridge
    from pybridge.data.minified import MINIFIED_BY_KEY, MINIFY_TYPE, MINIFY_TYPE_KEY, module_fingerprint
    from pybridge.data.registry import SETUP_KEY

    model = pybridge.SCVI.load(model_dir, accelerator="cpu")
    return {MINIFY_TYPE_KEY: MINIFY_TYPE, MINIFIED_BY_KEY: module_fingerprint(model.module),
            SETUP_KEY: model.registry.to_json()}


def write_store(path: Path, n_cells: int, protos: dict[str, np.ndarray], uns: dict[str, str],
                group_cells: int, seed: int = 11) -> dict:
    """Write the minified store chunk by chunk (tmp name, then rename); returns timings and bytes per part."""
    import h5py
    import pandas as pd
    from anndata.io import write_elem

    tmp = path.with_name(f".{path.name}.tmp")
    start = time.perf_counter()
    groups = group_codes(n_cells, group_cells, seed + 1)
    with h5py.File(tmp, "w") as f:
        f.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        X = f.create_group("X")
        X.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": (n_cells, N_GENES)})
        X.create_dataset("data", shape=(0,), maxshape=(None,), dtype=np.float32, chunks=(1024,))
        X.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(1024,))
        X.create_dataset("indptr", shape=(n_cells + 1,), dtype=np.int32, chunks=(min(n_cells + 1, 1 << 20),),
                         fillvalue=0)
        obs = f.create_group("obs")
        columns = ["plate", "group", LIBRARY, LOGNORM]
        obs.attrs.update({"encoding-type": "dataframe", "encoding-version": "0.2.0", "_index": "_index"})
        obs.attrs.create("column-order", np.asarray(columns, dtype=object), dtype=h5py.string_dtype())
        index = obs.create_dataset("_index", shape=(n_cells,), dtype="S10", chunks=(min(n_cells, 1 << 20),))
        index.attrs.update({"encoding-type": "string-array", "encoding-version": "0.2.0"})
        plate = _categorical(obs, "plate", n_cells, PLATES)
        _categorical(obs, "group", n_cells, GROUPS)[:] = groups
        library = _array(obs, LIBRARY, (n_cells,), np.float32, (min(n_cells, 1 << 20),))
        lognorm = _array(obs, LOGNORM, (n_cells,), np.float32, (min(n_cells, 1 << 20),))
        obsm = f.create_group("obsm")
        obsm.attrs.update({"encoding-type": "dict", "encoding-version": "0.1.0"})
        rows = (min(n_cells, ROW_CHUNK), N_LATENT)
        qzm = _array(obsm, QZM, (n_cells, N_LATENT), np.float32, rows)
        qzv = _array(obsm, QZV, (n_cells, N_LATENT), np.float32, rows)
        for lo, block in cell_blocks(n_cells, protos, seed):
            hi = lo + len(block[QZM])
            qzm[lo:hi], qzv[lo:hi], plate[lo:hi] = block[QZM], block[QZV], block["plate"]
            library[lo:hi], lognorm[lo:hi], index[lo:hi] = block[LIBRARY], block[LOGNORM], cell_names(lo, hi)
            print(f"wrote {hi:,}/{n_cells:,} cells ({time.perf_counter() - start:.0f} s)", flush=True)
        write_elem(f, "var", pd.DataFrame(index=gene_names()))
        write_elem(f, "uns", uns)
        for name in ("layers", "obsp", "varm", "varp"):
            write_elem(f, name, {})
        sizes = storage_bytes(f)
    os.replace(tmp, path)
    payload = sum(sizes[k] for k in (f"obsm/{QZM}", f"obsm/{QZV}", f"obs/{LIBRARY}", f"obs/{LOGNORM}"))
    obs_bytes = sum(v for k, v in sizes.items() if k.startswith("obs/") and not k.endswith((LIBRARY, LOGNORM)))
    return {"cells": n_cells, "seconds": time.perf_counter() - start, "file_bytes": path.stat().st_size,
            "payload_bytes": payload, "obs_bytes": obs_bytes, "x_bytes": sum(v for k, v in sizes.items()
                                                                             if k.startswith("X/")),
            "datasets": sizes}


def storage_bytes(f) -> dict[str, int]:
    """Bytes each dataset occupies in the file (allocated chunks), by path."""
    import h5py

    sizes: dict[str, int] = {}

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Dataset):
            sizes[name] = obj.id.get_storage_size()

    f.visititems(visit)
    return sizes


def make_store(n_cells: int, n_prototypes: int, group_cells: int) -> dict:
    protos = prototypes(n_prototypes)
    info = write_store(store_path(n_cells), n_cells, protos, uns_of(MODEL_DIR), group_cells)
    info["prototypes"] = n_prototypes
    update_results(f"store_{n_cells}", info)
    return info


def write_slice(store: Path, n_cells: int) -> dict:
    """The first ``n_cells`` cells of the store as an ordinary in-memory-readable minified .h5ad (X all-zero CSR)."""
    import anndata
    import h5py
    import pandas as pd
    import scipy.sparse as sp
    from anndata.io import read_elem

    start = time.perf_counter()
    with h5py.File(store, "r") as f:
        rows = slice(0, n_cells)
        obs = pd.DataFrame({
            "plate": pd.Categorical.from_codes(f["obs/plate/codes"][rows], PLATES),
            "group": pd.Categorical.from_codes(f["obs/group/codes"][rows], GROUPS),
            LIBRARY: f[f"obs/{LIBRARY}"][rows], LOGNORM: f[f"obs/{LOGNORM}"][rows],
        }, index=pd.Index(f["obs/_index"][rows].astype(str)))
        adata = anndata.AnnData(X=sp.csr_matrix((n_cells, N_GENES), dtype=np.float32), obs=obs,
                                var=read_elem(f["var"]), uns=read_elem(f["uns"]))
        adata.obsm[QZM], adata.obsm[QZV] = f[f"obsm/{QZM}"][rows], f[f"obsm/{QZV}"][rows]
    tmp = SLICE.with_name(f".{SLICE.name}.tmp")
    adata.write_h5ad(tmp)
    os.replace(tmp, SLICE)
    info = {"cells": n_cells, "seconds": time.perf_counter() - start, "file_bytes": SLICE.stat().st_size,
            "group_counts": {g: int((obs["group"] == g).sum()) for g in GROUPS}}
    update_results("slice", info)
    return info


def verify(n_cells: int, n_prototypes: int, group_cells: int) -> None:
    """Write a small store and check that anndata (in memory and backed) reads back exactly what was written."""
    import anndata

    from pybridge.data.minified import MINIFIED_BY_KEY

    protos = prototypes(n_prototypes)
    uns = uns_of(MODEL_DIR)
    path = store_path(n_cells)
    write_store(path, n_cells, protos, uns, group_cells)
    expected = {k: np.concatenate([b[k] for _, b in cell_blocks(n_cells, protos, 11)])
                for k in (QZM, QZV, "plate", LIBRARY, LOGNORM)}
    adata = anndata.read_h5ad(path)
    assert adata.shape == (n_cells, N_GENES) and adata.X.nnz == 0, (adata.shape, adata.X)
    assert list(adata.obs_names) == [f"c{i:09d}" for i in range(n_cells)]
    assert list(adata.var_names) == gene_names()
    assert list(adata.obs.columns) == ["plate", "group", LIBRARY, LOGNORM]
    assert list(adata.obs["plate"].cat.categories) == PLATES
    assert np.array_equal(adata.obs["plate"].cat.codes.to_numpy(), expected["plate"])
    assert np.array_equal(adata.obs["group"].cat.codes.to_numpy(), group_codes(n_cells, group_cells, 12))
    for key in (LIBRARY, LOGNORM):
        assert adata.obs[key].dtype == np.float32 and np.array_equal(adata.obs[key].to_numpy(), expected[key])
    for key in (QZM, QZV):
        assert adata.obsm[key].dtype == np.float32 and np.array_equal(adata.obsm[key], expected[key])
    assert {k: adata.uns[k] for k in uns} == uns and adata.uns[MINIFIED_BY_KEY] == uns[MINIFIED_BY_KEY]
    backed = anndata.read_h5ad(path, backed="r")
    assert backed.X.shape == (n_cells, N_GENES) and np.array_equal(backed.obsm[QZM][:5], expected[QZM][:5])
    print(f"anndata {anndata.__version__} read back all {n_cells:,} cells exactly (in memory and backed='r')")


# ---- measurements -----------------------------------------------------------------------------------------------
# name: (tool, what it times); every operation runs in its own process
OPERATIONS = {
    "open": ("pybridge", "store open (`pybridge.open_minified(path)`)"),
    "load": ("pybridge", "model load (`pybridge.SCVI.load(dir, adata=mf)`)"),
    "decode_1gene_all": ("pybridge", "decode 1 gene, all cells (`model.decode(mf, genes=[g])`)"),
    "decode_100genes_1M": ("pybridge", "decode 100 genes, 1M cells (`cells=np.arange(1_000_000)`)"),
    "de_A_B": ("pybridge", "DE group A vs B (1M cells each, `all_stats=False`)"),
    "slice_load": ("pybridge", "1M slice: `read_h5ad`, then `SCVI.load`"),
    "slice_decode_1gene": ("pybridge", "1M slice: decode 1 gene, all 1M cells"),
    "slice_decode_1gene_100k": ("pybridge", "1M slice: decode 1 gene, first 100k cells"),
    "slice_gne_1gene": ("pybridge", "1M slice: `get_normalized_expression(gene_list=[g])`, first 100k cells"),
    "slice_gne_1gene_1M": ("pybridge", "1M slice: `get_normalized_expression(gene_list=[g])`, all 1M cells"),
    "slice_de": ("pybridge", "1M slice: DE A vs B"),
    "floor_1gene_1M": ("torch", "bare matrix products of a 1-gene decode, 1M random cells"),
    "scvi_load": ("scvi-tools", "1M slice: `read_h5ad`, then `scvi.model.SCVI.load`"),
    "scvi_gne_1gene": ("scvi-tools", "1M slice: `get_normalized_expression(gene_list=[g])`, first 100k cells"),
    "scvi_gne_1gene_1M": ("scvi-tools", "1M slice: `get_normalized_expression(gene_list=[g])`, all 1M cells"),
    "scvi_de": ("scvi-tools", "1M slice: DE A vs B (`all_stats=False`)"),
}


def rss_now_mib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))


def open_store(path: Path, opener: str):
    if opener == "backed":
        import anndata

        return anndata.read_h5ad(path, backed="r")
    import pybridge

    return pybridge.open_minified(path)


def run_operation(op: str, store: Path, opener: str) -> dict:
    """(worker process) Set up what ``op`` needs, then time ``op`` alone; returns its numbers."""
    import anndata

    out: dict = {}
    tool = OPERATIONS[op][0]
    if tool == "scvi-tools":
        import scvi

        start = time.perf_counter()
        adata = anndata.read_h5ad(SLICE)
        out["read_s"] = time.perf_counter() - start
        start = time.perf_counter()
        model = scvi.model.SCVI.load(str(SCVI_DIR), adata=adata, accelerator="cpu")
        out["load_s"] = time.perf_counter() - start
        out["minified_type"] = str(model.minified_data_type)
    elif tool == "torch":
        return {**bare_decode_floor(1_000_000), "n_obs": 1_000_000}
    elif op.startswith("slice_"):
        import pybridge

        start = time.perf_counter()
        adata = anndata.read_h5ad(SLICE)
        out["read_s"] = time.perf_counter() - start
        start = time.perf_counter()
        model = pybridge.SCVI.load(MODEL_DIR, adata=adata, accelerator="cpu")
        out["load_s"] = time.perf_counter() - start
    else:
        import pybridge

        start = time.perf_counter()
        adata = open_store(store, opener)
        out["open_s"] = time.perf_counter() - start
        if op != "open":
            start = time.perf_counter()
            model = pybridge.SCVI.load(MODEL_DIR, adata=adata, accelerator="cpu")
            out["load_s"] = time.perf_counter() - start
    out["rss_before_mib"] = rss_now_mib()
    first = np.arange(min(100_000, adata.n_obs))
    call = {
        "open": lambda: None,
        "load": lambda: None,
        "decode_1gene_all": lambda: model.decode(adata, genes=[DECODE_GENE]),
        "decode_100genes_1M": lambda: model.decode(adata, cells=np.arange(min(1_000_000, adata.n_obs)),
                                                   genes=GENES_100),
        "de_A_B": lambda: model.differential_expression(adata, groupby="group", group1="A", group2="B",
                                                        all_stats=False),
        "slice_load": lambda: None,
        "slice_decode_1gene": lambda: model.decode(adata, genes=[DECODE_GENE]),
        "slice_decode_1gene_100k": lambda: model.decode(adata, cells=first, genes=[DECODE_GENE]),
        "slice_gne_1gene": lambda: model.get_normalized_expression(adata, indices=first, gene_list=[DECODE_GENE],
                                                                   return_numpy=True),
        "slice_gne_1gene_1M": lambda: model.get_normalized_expression(adata, gene_list=[DECODE_GENE],
                                                                      return_numpy=True),
        "slice_de": lambda: model.differential_expression(adata, groupby="group", group1="A", group2="B",
                                                          all_stats=False),
        "scvi_load": lambda: None,
        "scvi_gne_1gene": lambda: model.get_normalized_expression(adata, indices=first, gene_list=[DECODE_GENE],
                                                                  return_numpy=True),
        "scvi_gne_1gene_1M": lambda: model.get_normalized_expression(adata, gene_list=[DECODE_GENE],
                                                                     return_numpy=True),
        "scvi_de": lambda: model.differential_expression(adata, groupby="group", group1="A", group2="B",
                                                         all_stats=False),
    }[op]
    start = time.perf_counter()
    result = call()
    out["seconds"] = time.perf_counter() - start
    out.update(describe(result))
    out["n_obs"] = int(adata.n_obs)
    return out


def bare_decode_floor(n_cells: int, chunk: int = 8192) -> dict:
    """The matrix products of decoding one gene, on random inputs: z and the plate one-hot through the
    decoder's hidden layer (ReLU), then one row of the last layer, minus the stored normaliser, exp."""
    import torch
    import torch.nn.functional as F

    inputs, weight = torch.randn(chunk, N_LATENT + N_PLATES), torch.randn(N_HIDDEN, N_LATENT + N_PLATES)
    row, lognorm = torch.randn(1, N_HIDDEN), torch.randn(chunk, 1)
    start = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, n_cells, chunk):
            m = min(chunk, n_cells - lo)
            torch.exp(F.linear(torch.relu(F.linear(inputs[:m], weight)), row) - lognorm[:m])
    return {"seconds": time.perf_counter() - start}


def describe(result) -> dict:
    """A small fingerprint of an operation's output, to check it ran on what it should."""
    if isinstance(result, np.ndarray):
        return {"shape": list(result.shape), "mean": float(result.astype(np.float64).mean())}
    if result is not None and hasattr(result, "columns"):
        top = result.iloc[:3]
        return {"shape": list(result.shape), "top_genes": [str(g) for g in top.index]}
    return {}


def worker(op: str, store: Path, opener: str, threads: int) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from peak_rss import peak_rss_mib

    set_threads(threads)
    load_before = os.getloadavg()
    out = run_operation(op, store, opener)
    out.update({"op": op, "peak_rss_mib": peak_rss_mib(), "threads": threads, "opener": opener,
                "loadavg_before": load_before, "loadavg_after": os.getloadavg()})
    print("RESULT " + json.dumps(out), flush=True)


STORE_OPS = ("open", "load", "decode_1gene_all", "decode_100genes_1M", "de_A_B")


def evict(path: Path) -> None:
    """Drop ``path`` (only this file) from the page cache, so that the next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def measure(ops: list[str], store: Path, opener: str, threads: int, timeout: float, cold: bool) -> None:
    """Run each operation in a fresh process under the bench lock; record its numbers (or why it has none).

    ``cold``: the store is dropped from the page cache before each operation that reads it."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "pybridge"], capture_output=True, text=True,
                           check=True).stdout
    update_results("pybridge_tree", {"head": head, "uncommitted_pybridge_files": len(dirty.splitlines())})
    for op in ops:
        tool = OPERATIONS[op][0]
        python = SCVI_PYTHON if tool == "scvi-tools" else ROOT / ".venv" / "bin" / "python"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "PYTHONPATH": "" if tool == "scvi-tools" else str(ROOT)}
        command = ["flock", LOCK, str(python), __file__, "worker", op, "--store", str(store),
                   "--opener", opener, "--threads", str(threads)]
        if cold and op in STORE_OPS:
            evict(store)
        cached = page_cache_bytes(store) if store.exists() else None
        print(f"{op} ({OPERATIONS[op][1]}): {' '.join(command)}", flush=True)
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
        try:
            stdout, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            record = {"op": op, "skipped": f"ran past {timeout:.0f} s and was stopped"}
        else:
            lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
            failed = {"op": op, "skipped": f"failed (exit {process.returncode})"}
            record = json.loads(lines[-1][7:]) if lines else failed
        record.update({"store": store.name, "store_bytes_in_page_cache": cached})
        print(json.dumps(record), flush=True)
        update_results(f"op:{op}:{store.name}:{'cold' if cold else 'warm'}", record)


def page_cache_bytes(path: Path) -> int:
    """How much of ``path`` is in the page cache (util-linux ``fincore``)."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def disk_read_bandwidth(path: Path, megabytes: int = 2048) -> dict:
    """Sequential read speed of the disk under ``path``, bypassing the page cache (dd with O_DIRECT)."""
    command = ["flock", LOCK, "dd", f"if={path}", "of=/dev/null", "bs=16M", f"count={megabytes // 16}",
               "iflag=direct"]
    start = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True)
    seconds = time.perf_counter() - start
    info = {"megabytes": megabytes, "seconds": seconds, "mb_per_s": megabytes / seconds}
    update_results("disk", info)
    return info


def update_results(key: str, value: dict) -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[key] = value
    tmp = RESULTS.with_name(f".{RESULTS.name}.tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, RESULTS)


# ---- report -----------------------------------------------------------------------------------------------------
def _time(record: dict | None, key: str = "seconds") -> str:
    if record is None:
        return "not run"
    if "skipped" in record:
        return record["skipped"]
    value = record.get(key)
    return "–" if value is None else f"{value:,.1f} s" if value >= 1 else f"{value:.2f} s"


def _rss(record: dict | None) -> str:
    return "–" if record is None or "peak_rss_mib" not in record else f"{record['peak_rss_mib'] / 1024:.2f} GB"


def report() -> None:
    """Write the atlas section of bench/RESULTS.md from bench/.atlas/results.json."""
    sys.path.insert(0, str(ROOT / "bench"))
    from minify_bench import machine, write_section

    set_threads(2)  # as in the timed runs, for the machine line
    results = json.loads(RESULTS.read_text())
    n_cells = 100_000_000
    store = results[f"store_{n_cells}"]
    name = store_path(n_cells).name
    runs = {cache: {k.split(":")[1]: v for k, v in results.items()
                    if k.startswith("op:") and k.endswith(f":{name}:{cache}")} for cache in ("warm", "cold")}
    ops = {**runs["warm"], **runs["cold"]}  # a store operation's cold-cache run where there is one
    model, protos, disk = results["model"], results[f"prototypes_{store['prototypes']}"], results.get("disk")
    tree = results["pybridge_tree"]
    bound = 2 * N_LATENT * 4 + 12
    per_cell = {k: store[f"{k}_bytes"] / n_cells for k in ("payload", "obs", "x", "file")}

    def setup(record: dict | None) -> str:
        if record is None or "skipped" in record:
            return ""
        parts = [f"{label} {record[key]:.1f} s" for key, label in
                 (("open_s", "open"), ("read_s", "read_h5ad"), ("load_s", "SCVI.load")) if key in record]
        cached = record.get("store_bytes_in_page_cache")
        if cached is not None and record["op"] in ("open", "load", "decode_1gene_all", "decode_100genes_1M", "de_A_B"):
            parts.append(f"{cached / 1e9:.1f} GB of the store in page cache at start")
        parts.append(f"load avg {record['loadavg_before'][0]:.1f}→{record['loadavg_after'][0]:.1f}")
        return "; ".join(parts)

    store_rows = [("open", "store open (`pybridge.open_minified(path)`)", "open_s"),
                  ("load", "model load (`pybridge.SCVI.load(dir, adata=mf)`)", "load_s"),
                  ("decode_1gene_all", "decode 1 gene for all 100M cells", "seconds"),
                  ("decode_100genes_1M", "decode 100 genes for 1M cells (the first 1M)", "seconds"),
                  ("de_A_B", ("DE, group A vs B (1M random cells each; `n_cells_per_group` left at its default, "
                   "100,000; `all_stats=False`)"), "seconds")]
    lines = [
        (f"{time.strftime('%Y-%m-%d')}, {machine()}; `bench/atlas.py` (see its docstring for the commands). "
        f"Model: pybridge scVI, {N_GENES:,} genes, {N_HIDDEN} hidden, {N_LATENT} latent, batch = {N_PLATES} "
        f"plates, default likelihood (zinb), {model['parameters'] / 1e6:.1f}M parameters, trained {model['epochs']} "
        f"epochs on {model['train_cells']:,} simulated cells ({model['density']:.1%} non-zero) in "
        f"{model['train_s']:.0f} s; {model['pybridge_bytes'] / 1e6:.0f} MB saved by `model.save`, "
        f"{model['scvi_tools_bytes'] / 1e6:.0f} MB by `save_scvi_tools(minified=True)`."),
        "",
        (f"Store: {n_cells:,} cells written chunk by chunk with h5py in {store['seconds'] / 60:.1f} min "
        f"({store['file_bytes'] / 1e9:.2f} GB, into the page cache; the kernel wrote it back afterwards). "
        f"Each cell's `pybridge_log_normalizer` is exact (logsumexp of "
        f"all {N_GENES:,} decoder logits at z = qzm with the cell's plate), but computing it for 100M cells costs "
        f"1.6e15 FLOP, so {store['prototypes']:,} distinct prototype cells were simulated (qzm around 30 "
        f"cluster centres, N(0, 1)-like overall; qzv lognormal around 0.02; a random plate) and their "
        f"normalisers computed exactly with `pybridge.decoding.compute_log_normalizers` "
        f"({protos['flop']:.1e} FLOP, {protos['seconds'] / 60:.1f} min); every store cell is a random prototype "
        f"(posterior, plate and normaliser) with its own library size (lognormal, median 3,000). Groups: 1M "
        f"random cells \"A\", 1M others \"B\", the rest \"rest\". pybridge as of {tree['head']}"
        + (f" plus uncommitted changes to {tree['uncommitted_pybridge_files']} files under pybridge/ (the "
           f"`open_minified` work in progress)" if tree["uncommitted_pybridge_files"] else "")
        + ". Each operation ran in a fresh process under "
        "`flock`, OMP_NUM_THREADS=2; peak RSS is that process's VmHWM (imports, model and store included)."),
        "",
        "| operation (100M-cell store) | time | peak RSS | set-up in the same process |",
        "|---|---:|---:|---|",
    ]
    for op, label, key in store_rows:
        record = ops.get(op)
        lines.append(f"| {label} | {_time(record, key)} | {_rss(record)} | {setup(record)} |")
    lines += [
        "",
        (f"Store on disk: payload (qzm, qzv, library size, log-normaliser) **{per_cell['payload']:.1f} bytes per "
        f"cell** against the bound 2·d·4 + 12 = {bound} (d = {N_LATENT}); obs {per_cell['obs']:.1f} bytes per cell "
        f"(10-byte fixed-width names, int8 plate and group codes); X {per_cell['x']:.3f} bytes per cell (an empty "
        f"CSR whose all-zero int32 `indptr` is a chunked dataset never written, so no chunk is allocated: anndata "
        f"needs an X to open the file with `backed=\"r\"`, and scvi-tools an all-zero sparse X); the whole file "
        f"{per_cell['file']:.1f} bytes per cell. `anndata.read_h5ad` (0.11.4) reads a 20,000-cell store of the "
        f"same layout back exactly (`bench/atlas.py verify`)."),
    ]
    lines += comparison(ops, results.get("slice", {}))
    lines += limits(ops, store, disk, runs["warm"].get("decode_1gene_all"))
    body = "\n".join(lines)
    print(body)
    write_section(ROOT / "bench" / "RESULTS.md", HEADING, body)


def comparison(ops: dict, piece: dict) -> list[str]:
    """The scvi-tools 1.4.2 rows next to pybridge on the same 1M-cell slice (and on the whole store)."""
    counts = piece.get("group_counts", {})
    rows = [
        ("`read_h5ad` of the slice", ops.get("scvi_load"), "read_s", ops.get("slice_load"), "read_s"),
        ("model load with the slice", ops.get("scvi_load"), "load_s", ops.get("slice_load"), "load_s"),
        ("1 gene, all 1M cells: `get_normalized_expression(gene_list=[g])` in both",
         ops.get("scvi_gne_1gene_1M"), "seconds", ops.get("slice_gne_1gene_1M"), "seconds"),
        ("1 gene, all 1M cells: scvi-tools as above, pybridge `decode(genes=[g])`",
         ops.get("scvi_gne_1gene_1M"), "seconds", ops.get("slice_decode_1gene"), "seconds"),
        ("1 gene, first 100k cells: `get_normalized_expression(indices=..., gene_list=[g])` in both",
         ops.get("scvi_gne_1gene"), "seconds", ops.get("slice_gne_1gene"), "seconds"),
        ("1 gene, first 100k cells: scvi-tools as above, pybridge `decode(cells=..., genes=[g])`",
         ops.get("scvi_gne_1gene"), "seconds", ops.get("slice_decode_1gene_100k"), "seconds"),
        (f"DE A vs B within the slice ({counts.get('A', 0):,} vs {counts.get('B', 0):,} cells, `all_stats=False`)",
         ops.get("scvi_de"), "seconds", ops.get("slice_de"), "seconds"),
    ]
    lines = [
        "",
        (f"scvi-tools 1.4.2 (bench/.venv-scvi, its own process) loads the `save_scvi_tools(minified=True)` export "
        f"with the first 1M cells of the store written as an ordinary minified .h5ad "
        f"({piece.get('file_bytes', 0) / 1e6:.0f} MB, "
        f"X all-zero CSR); pybridge runs the same calls on the same file read into memory:"),
        "",
        "| 1M-cell slice | scvi-tools 1.4.2 | peak RSS | pybridge | peak RSS | scvi-tools / pybridge |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, theirs, their_key, ours, our_key in rows:
        ratio = "–"
        if theirs and ours and their_key in theirs and our_key in ours:
            ratio = f"{theirs[their_key] / ours[our_key]:.1f}×"
        their_time = "–" if not their_key else _time(theirs, their_key)
        lines.append(f"| {label} | {their_time} | {_rss(theirs) if their_key else '–'} | {_time(ours, our_key)} | "
                     f"{_rss(ours)} | {ratio} |")
    theirs, ours = ops.get("scvi_gne_1gene_1M", {}), ops.get("slice_decode_1gene", {})
    if "mean" in theirs and "mean" in ours:
        lines += ["", (
            f"Both `get_normalized_expression` calls decode all {N_GENES:,} genes per minibatch and keep one column; "
            f"pybridge's `decode` uses the stored log-normaliser and computes one gene. Mean of the 1M decoded values: "
            f"scvi-tools {theirs['mean']:.4g} (z drawn from the posterior), pybridge {ours['mean']:.4g} (z = its "
            f"mean). RSS is each process's peak, read_h5ad and load included.")]
    return lines


def limits(ops: dict, store: dict, disk: dict | None, warm: dict | None) -> list[str]:
    """How far the 1-gene decode is from the disk and from its own matrix products (``warm``: the same decode
    with the store in the page cache, when it was run so too)."""
    decode, floor = ops.get("decode_1gene_all"), ops.get("floor_1gene_1M")
    if decode is None or "skipped" in decode:
        return ["", "Decoding 1 gene for all 100M cells: not measured (see the table)."]
    n_cells = store["cells"]
    needed = n_cells * (N_LATENT * 4 + 4 + 4 + 1)
    flop = n_cells * 2 * N_HIDDEN * (N_LATENT + N_PLATES + 1)
    minutes, rss_gb = decode["seconds"] / 60, decode["peak_rss_mib"] / 1024
    met = minutes <= 5 and rss_gb <= 2
    lines = [
        "",
        (f"- Acceptance, 1 gene for 100M cells in ≤ 5 min with peak RSS ≤ 2 GB: **{minutes:.1f} min, "
        f"{rss_gb:.2f} GB ({'met' if met else 'NOT met'})**."),
        f"- That decode must read qzm, the library size, the log-normaliser and the plate code: {needed / 1e9:.1f} GB "
        f"({needed / decode['seconds'] / 1e6:,.0f} MB/s achieved)"
        + (f"; the disk reads {disk['mb_per_s']:,.0f} MB/s with O_DIRECT (dd, 2 GB), so reading them cold takes "
           f"{needed / 1e6 / disk['mb_per_s']:.0f} s" if disk else "")
        + f"; {decode.get('store_bytes_in_page_cache', 0) / 1e9:.1f} GB of the store was in the page cache at "
        f"the start"
        + (f"; with the store already in the page cache ({warm['store_bytes_in_page_cache'] / 1e9:.1f} GB) the "
           f"same decode took {_time(warm)}, peak RSS {_rss(warm)}" if warm and "seconds" in warm and warm is not decode
           else "")
        + ".",
        f"- Its arithmetic: the decoder's hidden layer ({N_LATENT} latent + {N_PLATES} plate one-hot → "
        f"{N_HIDDEN}) and one row of the last layer, {flop:.1e} FLOP for 100M cells"
        + (f"; those products alone, on random inputs in chunks of 8,192, take {floor['seconds']:.2f} s per 1M "
           f"cells here, {floor['seconds'] * n_cells / 1e6:.0f} s for 100M" if floor and "seconds" in floor else "")
        + ". Neither the disk nor the bare arithmetic bounds this decode: the rest of its time is the work "
        "around the products, chunk by chunk (reads, conversions, covariate codes, module calls, the output "
        "copy; not profiled here).",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    model = sub.add_parser("model")
    model.add_argument("--train-cells", type=int, default=3000)
    model.add_argument("--epochs", type=int, default=3)
    store = sub.add_parser("store")
    store.add_argument("--cells", type=int, default=100_000_000)
    store.add_argument("--prototypes", type=int, default=1_000_000)
    store.add_argument("--group-cells", type=int, default=1_000_000)
    piece = sub.add_parser("slice")
    piece.add_argument("--cells", type=int, default=1_000_000)
    piece.add_argument("--store-cells", type=int, default=100_000_000)
    check = sub.add_parser("verify")
    check.add_argument("--cells", type=int, default=20_000)
    check.add_argument("--prototypes", type=int, default=20_000)
    check.add_argument("--group-cells", type=int, default=2_000)
    timing = sub.add_parser("measure")
    timing.add_argument("--ops", default=",".join(OPERATIONS))
    timing.add_argument("--store-cells", type=int, default=100_000_000)
    timing.add_argument("--opener", choices=("open_minified", "backed"), default="open_minified")
    timing.add_argument("--threads", type=int, default=2)
    timing.add_argument("--timeout", type=float, default=600.0)
    timing.add_argument("--disk", action="store_true", help="also time a 2 GB O_DIRECT read of the store (dd)")
    timing.add_argument("--cold", action="store_true", help="drop the store from the page cache before each read")
    work = sub.add_parser("worker")
    work.add_argument("op", choices=list(OPERATIONS))
    work.add_argument("--store", type=Path, required=True)
    work.add_argument("--opener", default="open_minified")
    work.add_argument("--threads", type=int, default=2)
    sub.add_parser("report")
    args = parser.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    if args.command == "worker":
        return worker(args.op, args.store, args.opener, args.threads)
    if args.command == "model":
        print(build_model(args.train_cells, args.epochs))
    elif args.command == "store":
        info = make_store(args.cells, args.prototypes, args.group_cells)
        print({k: v for k, v in info.items() if k != "datasets"})
    elif args.command == "slice":
        print(write_slice(store_path(args.store_cells), args.cells))
    elif args.command == "verify":
        verify(args.cells, args.prototypes, args.group_cells)
    elif args.command == "measure":
        if args.disk:
            print(disk_read_bandwidth(store_path(args.store_cells)))
        measure(args.ops.split(","), store_path(args.store_cells), args.opener, args.threads, args.timeout,
                args.cold)
    elif args.command == "report":
        report()


if __name__ == "__main__":
    main()
