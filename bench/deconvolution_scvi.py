"""scvi-tools 1.4.2 side of bench/deconvolution.py; runs inside bench/.venv-scvi (never imports pybridge).

Reads WORKDIR/reference.h5ad, the spot files and settings in WORKDIR/scvi_tasks.json; writes
WORKDIR/scvi_<key>.csv (DestVI proportions, shares of expression) and WORKDIR/scvi_timings.json after every run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import anndata as ad
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()
    work = Path(args.workdir)
    tasks = json.loads((work / "scvi_tasks.json").read_text())
    torch.set_num_threads(tasks["threads"])
    import scvi
    from scvi.model import CondSCVI, DestVI

    scvi.settings.seed = tasks["seed"]
    reference = ad.read_h5ad(work / "reference.h5ad")
    CondSCVI.setup_anndata(reference, labels_key=tasks["labels_key"])
    # 1.4.2: the VampPrior path of from_rna_model fails (KeyError "prior", then numpy buffers); its MoG prior works
    sc_model = CondSCVI(reference, prior="mog")
    start = time.perf_counter()
    sc_model.train(max_epochs=tasks["sc_epochs"], accelerator="cpu", enable_progress_bar=False)
    timings_file = work / "scvi_timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    timings["reference"] = time.perf_counter() - start
    for run in tasks["runs"]:
        spots = ad.read_h5ad(work / run["file"])
        st_model = DestVI.from_rna_model(spots, sc_model, vamp_prior_p=tasks["vamp_prior_p"])
        start = time.perf_counter()
        st_model.train(
            max_epochs=run["epochs"], lr=tasks["lr"], batch_size=run["batch_size"],
            n_epochs_kl_warmup=run["kl_warmup"], accelerator="cpu", enable_progress_bar=False,
        )
        timings[run["key"]] = time.perf_counter() - start
        st_model.get_proportions().to_csv(work / f"scvi_{run['key']}.csv")
        timings_file.write_text(json.dumps(timings))
    timings_file.write_text(json.dumps(timings))


if __name__ == "__main__":
    main()
