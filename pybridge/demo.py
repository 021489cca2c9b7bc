"""``python -m pybridge.demo``: train scVI on the vendored cortex data and write the results.

Writes OUTPUT/latent.h5ad (obsm["X_scVI"]), OUTPUT/training_curves.png, OUTPUT/latent_tsne.png and the model
directory OUTPUT/model; prints the held-out ELBO and the latent silhouette by cell type.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_score

from pybridge.data import datasets
from pybridge.models.scvi import SCVI


def plot_history(history: dict[str, pd.DataFrame], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("elbo_train", "train"), ("elbo_validation", "held-out")):
        if key in history:
            ax.plot(history[key].index + 1, history[key][key], label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative ELBO per cell")
    ax.set_title("scVI training on cortex (Zeisel et al. 2015)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_latent(latent: np.ndarray, labels, path: Path, seed: int) -> None:
    coords = TSNE(n_components=2, init="pca", random_state=seed, perplexity=30).fit_transform(latent)
    fig, ax = plt.subplots(figsize=(6, 5))
    for label in sorted(set(labels)):
        mask = np.asarray(labels) == label
        ax.scatter(coords[mask, 0], coords[mask, 1], s=3, label=str(label))
    ax.set_title("t-SNE of the scVI latent, by cell type")
    ax.legend(markerscale=4, fontsize=8, title="cell_type")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="demo_output", help="directory to write (default demo_output)")
    parser.add_argument("--max-epochs", type=int, default=200, help="training epochs (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)

    adata = datasets.cortex()
    SCVI.setup_anndata(adata)
    model = SCVI(adata)
    start = time.perf_counter()
    model.train(max_epochs=args.max_epochs, seed=args.seed)
    seconds = time.perf_counter() - start
    model.save(out / "model", overwrite=True)
    latent = model.get_latent_representation()
    adata.obsm["X_scVI"] = latent
    adata.write_h5ad(out / "latent.h5ad")
    plot_history(model.history, out / "training_curves.png")
    plot_latent(latent, adata.obs["cell_type"].astype(str).to_numpy(), out / "latent_tsne.png", args.seed)

    held_out = model.get_elbo(indices=model.validation_indices)
    silhouette = silhouette_score(latent, adata.obs["cell_type"])
    n_train = len(model.train_indices)
    print(f"cortex: {adata.n_obs} cells x {adata.n_vars} genes, {args.max_epochs} epochs in {seconds:.1f} s "
          f"({n_train * args.max_epochs / seconds:,.0f} train cells/s, device {model.device})")
    print(f"held-out ELBO per cell: {held_out:.2f}")
    print(f"latent silhouette by cell type: {silhouette:.3f}")
    print(f"wrote {out}/latent.h5ad, {out}/training_curves.png, {out}/latent_tsne.png, {out}/model/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
