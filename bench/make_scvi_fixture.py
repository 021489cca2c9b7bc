"""Train a tiny scvi-tools 1.4.2 scVI model and save it, with its expected outputs, as a test fixture.

Run with the reference venv (``bash bench/setup_scvi_venv.sh`` builds it)::

    bench/.venv-scvi/bin/python bench/make_scvi_fixture.py

Writes ``tests/python/fixtures/scvi_tools_model/`` (scvi-tools' own ``model.pt``), ``scvi_tools_data.npz``
(the counts, batch labels and names the model was trained on) and ``scvi_tools_expected.npz`` (the latent
posterior mean and variance and the normalised expression at z = posterior mean, computed by scvi-tools), and
``scvi_tools_minified.h5ad`` (scvi-tools' own minified AnnData of the same cells).

The reverse direction (a pybridge model exported with ``model.save_scvi_tools``, loaded by scvi-tools)::

    .venv/bin/python bench/make_scvi_fixture.py --export-from-pybridge /tmp/export   # project venv
    bench/.venv-scvi/bin/python bench/make_scvi_fixture.py --check-export /tmp/export
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import anndata
import numpy as np
import torch

try:
    import scvi
except ImportError:  # the export step runs in the project venv, without scvi-tools
    scvi = None

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "python" / "fixtures"


def fixture_adata(n_cells: int, n_genes: int) -> anndata.AnnData:
    """The first cells and the most variable genes of the vendored cortex data, with two artificial batches."""
    cortex = anndata.read_h5ad(ROOT / "pybridge" / "_data" / "cortex.h5ad")
    rng = np.random.default_rng(0)
    cells = np.sort(rng.choice(cortex.n_obs, n_cells, replace=False))
    X = cortex.X[cells].toarray()
    genes = np.sort(np.argsort(-X.var(axis=0))[:n_genes])
    adata = anndata.AnnData(X=X[:, genes].astype(np.float32))
    adata.obs_names = [str(n) for n in cortex.obs_names[cells]]
    adata.var_names = [str(n) for n in cortex.var_names[genes]]
    adata.obs["batch"] = np.where(np.arange(n_cells) % 2 == 0, "a", "b")
    adata.obs["cell_type"] = cortex.obs["cell_type"].to_numpy()[cells].astype(str)
    keep = X[:, genes].sum(axis=1) > 0
    return adata[keep].copy()


@torch.inference_mode()
def expected_outputs(model: scvi.model.SCVI) -> dict[str, np.ndarray]:
    """Posterior mean/variance of z and normalised expression at the posterior mean (deterministic)."""
    qzm, qzv = model.get_latent_representation(return_dist=True)
    module = model.module.eval()
    adata = model.adata
    batch_codes = model.adata_manager.get_from_registry("batch").reshape(-1, 1)
    library = torch.log(torch.as_tensor(np.asarray(adata.X.sum(axis=1)).reshape(-1, 1), dtype=torch.float32))
    gen = module.generative(
        z=torch.as_tensor(qzm, dtype=torch.float32),
        library=library,
        batch_index=torch.as_tensor(batch_codes, dtype=torch.long),
    )
    return {"qzm": qzm, "qzv": qzv, "normalized": gen["px"].scale.numpy()}


def export_from_pybridge(folder: Path) -> None:
    """(project venv) Import the fixture model into pybridge and export it back, full and minified."""
    import pybridge

    data = np.load(FIXTURES / "scvi_tools_data.npz")
    adata = anndata.AnnData(X=data["X"].astype(np.float32))
    adata.obs_names, adata.var_names = data["obs_names"], data["var_names"]
    adata.obs["batch"] = data["batch"]
    model = pybridge.SCVI.load_scvi_tools(FIXTURES / "scvi_tools_model", adata=adata, accelerator="cpu")
    model.save_scvi_tools(folder / "model", overwrite=True)
    model.save_scvi_tools(folder / "model_minified", overwrite=True, minified=True)
    adata.write_h5ad(folder / "counts.h5ad")
    model.minify().write_h5ad(folder / "minified.h5ad")
    np.savez(folder / "pybridge_expected.npz", qzm=model.get_latent_representation(),
             normalized=model.get_normalized_expression(return_numpy=True))


def check_export(folder: Path) -> None:
    """(scvi-tools venv) Load pybridge's exports with scvi-tools and compare latent and expression."""
    expected = np.load(folder / "pybridge_expected.npz")
    model = scvi.model.SCVI.load(str(folder / "model"), adata=anndata.read_h5ad(folder / "counts.h5ad"))
    got = expected_outputs(model)
    mini = scvi.model.SCVI.load(str(folder / "model_minified"), adata=anndata.read_h5ad(folder / "minified.h5ad"))
    diffs = {
        "latent": float(np.abs(got["qzm"] - expected["qzm"]).max()),
        "normalized": float(np.abs(got["normalized"] - expected["normalized"]).max()),
        "minified latent": float(np.abs(mini.get_latent_representation() - expected["qzm"]).max()),
    }
    print(f"scvi-tools {scvi.__version__} loaded pybridge's exports; minified mode: {mini.minified_data_type}; "
          f"max |difference|: {diffs}")
    if max(diffs.values()) > 1e-5:
        raise SystemExit("exported model differs from pybridge's")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200)
    parser.add_argument("--genes", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--export-from-pybridge", type=Path, default=None, metavar="DIR")
    parser.add_argument("--check-export", type=Path, default=None, metavar="DIR")
    args = parser.parse_args()
    if args.export_from_pybridge is not None:
        args.export_from_pybridge.mkdir(parents=True, exist_ok=True)
        return export_from_pybridge(args.export_from_pybridge)
    if args.check_export is not None:
        return check_export(args.check_export)
    scvi.settings.seed = 0
    torch.set_num_threads(1)
    adata = fixture_adata(args.cells, args.genes)
    scvi.model.SCVI.setup_anndata(adata, batch_key="batch")
    model = scvi.model.SCVI(adata, n_hidden=16, n_latent=4, n_layers=1, gene_likelihood="zinb")
    model.train(max_epochs=args.epochs, batch_size=64, accelerator="cpu", enable_progress_bar=False)

    FIXTURES.mkdir(parents=True, exist_ok=True)
    model_dir = FIXTURES / "scvi_tools_model"
    shutil.rmtree(model_dir, ignore_errors=True)
    model.save(str(model_dir), save_anndata=False)
    np.savez_compressed(
        FIXTURES / "scvi_tools_data.npz",
        X=adata.X.astype(np.int32),
        batch=adata.obs["batch"].to_numpy().astype(str),
        obs_names=np.asarray(adata.obs_names, dtype=str),
        var_names=np.asarray(adata.var_names, dtype=str),
    )
    expected = expected_outputs(model)
    np.savez_compressed(FIXTURES / "scvi_tools_expected.npz", **expected)

    model.adata.obsm["X_latent_qzm"], model.adata.obsm["X_latent_qzv"] = expected["qzm"], expected["qzv"]
    model.minify_adata()
    model.adata.write_h5ad(FIXTURES / "scvi_tools_minified.h5ad")
    print(f"wrote fixtures for {adata.n_obs} cells x {adata.n_vars} genes to {FIXTURES}")


if __name__ == "__main__":
    main()
