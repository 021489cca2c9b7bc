"""Matryoshka latents: held-out NB log-likelihood against latent size k, one nested model vs one model per k.

    .venv/bin/python bench/matryoshka.py        # ~3-6 min on 2 cores; rewrites "## Matryoshka latents"

The vendored cortex counts (3,005 cells x 1,000 genes) are count-split 50/50 (binomial thinning). Every model
(NB likelihood, 128 hidden, same epochs and KL warm-up) trains on fold A. For each k, cells are encoded from fold
A, decoded at z = posterior mean with only the first k latent dimensions (the rest at the prior mean 0 for the
Matryoshka model; all k for a model trained with n_latent=k), and scored by the NB log-likelihood of fold B with
mean = decoded frequencies x fold-B library size and the model's dispersion. Storage per cell is the minified
payload for a k-dimensional latent: float32 mean and variance, library size and log-normaliser (2k*4 + 8 bytes).
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import numpy as np
import torch
from minify_bench import machine, write_section

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Matryoshka latents"


def folds(seed: int):
    import anndata

    import pybridge
    from pybridge.diagnostics.countsplit import count_split

    data = pybridge.datasets.cortex()
    a, b = count_split(data.X, fraction=0.5, seed=seed)
    keep = (np.asarray(a.sum(1)).ravel() > 0) & (np.asarray(b.sum(1)).ravel() > 0)
    train = anndata.AnnData(X=a[keep].astype(np.float32), obs=data.obs[keep].copy(), var=data.var.copy())
    return train, np.asarray(b[keep].todense(), dtype=np.float32)


def heldout_ll(model, train, test: np.ndarray, k: int) -> float:
    """Mean per-cell NB log-likelihood of the test fold, decoding with the first k latent dimensions."""
    from pybridge.nn.distributions import log_nb_positive

    scale = torch.as_tensor(model.decode(adata=train, n_latent=k))
    x = torch.as_tensor(test)
    mu = scale * x.sum(1, keepdim=True)
    theta = torch.exp(model.module.px_r.detach())
    return float(log_nb_positive(x, mu, theta, include_constant=True).sum(1).mean())


def train_model(train, n_latent: int, epochs: int, matryoshka_dims=None):
    import pybridge

    pybridge.SCVI.setup_anndata(train)
    model = pybridge.SCVI(train, n_latent=n_latent, gene_likelihood="nb", matryoshka_dims=matryoshka_dims)
    start = time.perf_counter()
    model.train(max_epochs=epochs, batch_size=128, train_size=1.0, n_epochs_kl_warmup=epochs // 3,
                accelerator="cpu", progress=False, seed=0)
    return model, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 5, 10, 20, 30])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    train, test = folds(args.seed)
    dims = sorted(args.dims)
    nested, t_nested = train_model(train, dims[-1], args.epochs, matryoshka_dims=dims)
    separate, t_separate = {}, 0.0
    for k in dims:
        separate[k], seconds = train_model(train, k, args.epochs)
        t_separate += seconds
    plain = separate[dims[-1]]
    rows = []
    for k in dims:
        rows.append((k, 2 * k * 4 + 8, heldout_ll(nested, train, test, k), heldout_ll(separate[k], train, test, k),
                     heldout_ll(plain, train, test, k)))
        print(rows[-1], flush=True)
    plot(rows, ROOT / "bench" / "matryoshka.png")
    lines = [
        (f"{datetime.date.today()}, {machine()}. `bench/matryoshka.py`: vendored cortex, {train.n_obs} cells x "
        f"{train.n_vars} genes, 50/50 binomial count split; NB likelihood, 128 hidden, {args.epochs} epochs, KL "
        f"warm-up {args.epochs // 3} epochs. One Matryoshka model (n_latent={dims[-1]}, matryoshka_dims={dims}, "
        f"trained in {t_nested:.0f} s) vs {len(dims)} separately trained models (together {t_separate:.0f} s). "
        f"Held-out = mean per-cell NB log-likelihood of fold B (higher is better). Plot: `bench/matryoshka.png`."),
        "",
        ("| k | storage per cell (bytes) | Matryoshka, first k dims | separate model with n_latent=k | "
         f"Matryoshka - separate | plain {dims[-1]}-d model, first k dims |"),
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for k, nbytes, ll_nested, ll_sep, ll_plain in rows:
        lines.append(f"| {k} | {nbytes} | {ll_nested:.2f} | {ll_sep:.2f} | {ll_nested - ll_sep:+.2f} | {ll_plain:.2f} |")
    lines += [
        "",
        ("One Matryoshka model serves every k from one training run and one stored latent: truncating the stored "
        "posterior to its first k dimensions gives the k-row of the table (a separate model needs its own run "
        "and its own stored latent for each k). The last column truncates an ordinary model instead: its "
        "dimensions carry no order, so its prefixes are not usable models."),
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section(ROOT / "bench" / "RESULTS.md", HEADING, body)


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(k, [r[2] for r in rows], "o-", label="one Matryoshka model, first k dims")
    ax.plot(k, [r[3] for r in rows], "s--", label="separate model per k")
    ax.plot(k, [r[4] for r in rows], "^:", label=f"plain {k[-1]}-d model, first k dims")
    ax.set_xlabel("latent dimensions k")
    ax.set_ylabel("held-out NB log-likelihood per cell")
    top = ax.secondary_xaxis("top", functions=(lambda x: 8 * x + 8, lambda b: (b - 8) / 8))
    top.set_xlabel("minified bytes per cell (2k*4 + 8)")
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
