"""cell2location 0.1.5 side of bench/deconvolution.py; runs inside bench/.venv-c2l (never imports pybridge).

Reads WORKDIR/reference.h5ad, the spot files and settings in WORKDIR/c2l_tasks.json; writes
WORKDIR/c2l_<key>.csv (cell-type proportions of each spot) and WORKDIR/c2l_timings.json after every run, so a
run cut short keeps what finished.

The documented workflow of cell2location's tutorial, with its defaults: the reference regression model
(250 epochs, batch 2500, lr 0.002) and the export of its posterior means as signatures; then the spatial model
with ``N_cells_per_location`` set to the simulator's mean cells per spot and ``detection_alpha=20``, trained full
batch (``batch_size=None, train_size=1``) for ``st_epochs`` epochs (its default is 30,000), and the posterior
exported from 1,000 samples. Proportions: the posterior mean abundance of each type divided by the spot's sum.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import anndata as ad
import pandas as pd
import torch
from peak_rss import peak_rss_mib  # bench/ is this script's folder, so on its path


def signatures(reference: ad.AnnData, labels_key: str, epochs: int):
    from cell2location.models import RegressionModel

    # cell2location 0.1.5 starts each type's signature from the mean of the type it finds at the same position in
    # sorted order (np.unique), while its model follows the order of the categories: with unsorted categories
    # the signatures start swapped between types, and 250 epochs do not undo it. Its tutorial's
    # astype("category") sorts them; so do we.
    labels = reference.obs[labels_key].astype(str)
    reference.obs[labels_key] = labels.astype(pd.CategoricalDtype(sorted(labels.unique())))
    RegressionModel.setup_anndata(adata=reference, labels_key=labels_key)
    model = RegressionModel(reference)
    model.train(max_epochs=epochs, accelerator="cpu", enable_progress_bar=False)
    reference = model.export_posterior(reference, sample_kwargs={"num_samples": 1000, "batch_size": 2500})
    factors = reference.uns["mod"]["factor_names"]
    table = reference.varm["means_per_cluster_mu_fg"][[f"means_per_cluster_mu_fg_{name}" for name in factors]].copy()
    table.columns = factors
    return table


def proportions(spots: ad.AnnData, cell_states, n_cells: float, epochs: int, timings: dict, key: str,
                timings_file: Path):
    from cell2location.models import Cell2location

    Cell2location.setup_anndata(adata=spots)
    model = Cell2location(spots, cell_state_df=cell_states, N_cells_per_location=n_cells, detection_alpha=20)
    start = time.perf_counter()
    model.train(max_epochs=epochs, batch_size=None, train_size=1, accelerator="cpu", enable_progress_bar=False)
    timings[f"{key}_train_only"] = time.perf_counter() - start
    timings["peak_rss_mb"] = peak_rss_mib()
    timings_file.write_text(json.dumps(timings))  # kept if the posterior export then runs out of memory
    spots = model.export_posterior(spots, sample_kwargs={"num_samples": 1000, "batch_size": spots.n_obs})
    abundance = spots.obsm["means_cell_abundance_w_sf"].copy()
    abundance.columns = [c.removeprefix("meanscell_abundance_w_sf_") for c in abundance.columns]
    return abundance.div(abundance.sum(1), axis=0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()
    work = Path(args.workdir)
    tasks = json.loads((work / "c2l_tasks.json").read_text())
    torch.set_num_threads(tasks["threads"])
    warnings.filterwarnings("ignore")
    import scvi

    scvi.settings.seed = tasks["seed"]
    reference = ad.read_h5ad(work / "reference.h5ad")
    start = time.perf_counter()
    cell_states = signatures(reference, tasks["labels_key"], tasks["ref_epochs"])
    timings_file = work / "c2l_timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    timings["reference"] = time.perf_counter() - start
    timings_file.write_text(json.dumps(timings))
    for run in tasks["runs"]:
        spots = ad.read_h5ad(work / run["file"])
        cells = cell_states.loc[spots.var_names]
        start = time.perf_counter()
        shares = proportions(spots, cells, run["n_cells_per_location"], tasks["st_epochs"], timings, run["key"],
                             timings_file)
        timings[run["key"]] = time.perf_counter() - start
        timings["peak_rss_mb"] = peak_rss_mib()
        shares.to_csv(work / f"c2l_{run['key']}.csv")
        timings_file.write_text(json.dumps(timings))


if __name__ == "__main__":
    main()
