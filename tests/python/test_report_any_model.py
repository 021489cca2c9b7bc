"""`pybridge report` on any model: in sample for a model trained on all counts, --refit, `pybridge split`."""

import json
import time

import numpy as np
import pytest
import scipy.sparse as sp

import pybridge
from pybridge.cli.main import main

EPOCHS = 40
DECILE_KEYS = ("model_in_sample_median", "oracle_model_noise_median", "oracle_poisson_median")


@pytest.fixture(scope="module")
def all_counts_model(tmp_path_factory):
    """scVI trained on all the counts (no layer) of 600 cortex cells, saved with its data."""
    adata = pybridge.datasets.cortex()
    adata = adata[np.random.default_rng(0).choice(adata.n_obs, 600, replace=False)].copy()
    pybridge.SCVI.setup_anndata(adata)
    model = pybridge.SCVI(adata, n_latent=6, n_hidden=64)
    model.train(max_epochs=EPOCHS, seed=0, progress=False, accelerator="cpu")
    root = tmp_path_factory.mktemp("any_model")
    model.save(root / "model")
    adata.write_h5ad(root / "cortex.h5ad")
    return root


def _report(root, out, *extra):
    return main(["report", str(root / "model"), str(root / "cortex.h5ad"), "-o", str(out), "--accelerator", "cpu",
                 "--ppc-cells", "100", *extra])


def test_in_sample_report_of_a_model_trained_on_all_counts(all_counts_model, capsys):
    out = all_counts_model / "in_sample"
    assert _report(all_counts_model, out) == 0
    err = capsys.readouterr().err
    assert "IN-SAMPLE" in err and "pybridge split" in err and "--refit" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "in_sample" and "optimistic" in metrics["in_sample_caveat"]
    for key in ("spearman_per_cell_by_library_decile", "spearman_per_gene_by_library_decile"):
        rows = metrics[key]
        assert [r["decile"] for r in rows] == list(range(1, 11))
        for r in rows:
            for name in DECILE_KEYS:
                assert isinstance(r[name], float) and np.isfinite(r[name]) and -1 <= r[name] <= 1, (key, name)
        # measured on this subset: the Poisson oracle at the same depth ranks above the model in every decile
        # (cortex, 3,005 cells: by 0.06 to 0.10 per cell); the model beats the mean cell everywhere
        assert all(r["oracle_poisson_median"] > r["model_in_sample_median"] for r in rows), key
        assert all(r["model_in_sample_median"] > r["mean_cell_median"] for r in rows), key
    cells = metrics["spearman_per_cell_by_library_decile"]
    assert sum(r["n"] for r in cells) == metrics["data"]["n_cells_evaluated"] == 600
    # deeper cells carry less noise: the model and the oracle both rank better in the top decile than the bottom
    assert cells[-1]["model_in_sample_median"] > cells[0]["model_in_sample_median"] + 0.1
    assert cells[-1]["oracle_model_noise_median"] > cells[0]["oracle_model_noise_median"] + 0.05
    cal = metrics["calibration"]["in_sample"]
    at95 = cal["levels"].index(0.95)
    assert 0.85 < cal["pit_all"][at95] < 1.0 and cal["interval_nonzero"][at95] > cal["naive_zero"]["interval_nonzero"][at95]
    html = (out / "report.html").read_text()
    assert "In-sample numbers" in html and "pybridge split" in html and "--refit" in html
    assert set(metrics["figures"]) == {"spearman_by_library_decile.png", "per_gene_spearman_vs_mean.png",
                                       "calibration.png"}
    assert all((out / f).stat().st_size > 0 for f in metrics["figures"])


def test_refit_trains_on_fold_a_and_reports_held_out(all_counts_model, capsys):
    out = all_counts_model / "refit"
    assert _report(all_counts_model, out, "--refit") == 0
    err = capsys.readouterr().err
    assert "refit: splitting adata.X" in err and f"for {EPOCHS} epochs (the loaded model's)" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "heldout" and metrics["data"]["train_layer"] == "fold_A"
    assert metrics["refit"]["epochs"] == EPOCHS and metrics["model"]["n_latent"] == 6
    for r in metrics["spearman_per_cell_by_library_decile"]:
        assert -1 <= r["model_heldout_median"] <= r["ceiling_split_half_median"] <= 1
    assert np.isfinite(metrics["heldout_loglik_per_cell"]["scvi"]["loglik"])
    assert "Refitted" in (out / "report.html").read_text()


def test_wrong_train_layer_names_ways_that_work(all_counts_model, capsys):
    assert _report(all_counts_model, all_counts_model / "bad", "--train-layer", "fold_A") == 2
    err = capsys.readouterr().err
    assert "trained on adata.X, not on layer 'fold_A'" in err and "drop --train-layer" in err and "--refit" in err
    assert _report(all_counts_model, all_counts_model / "bad", "--compare-likelihoods") == 2
    assert "add --refit" in capsys.readouterr().err
    assert _report(all_counts_model, all_counts_model / "bad", "--max-epochs", "3") == 2
    assert "--max-epochs applies to --refit only" in capsys.readouterr().err
    assert not (all_counts_model / "bad").exists()


def test_report_refuses_an_existing_output_before_any_work(all_counts_model, tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    t0 = time.perf_counter()
    rc = main(["report", str(tmp_path / "no_model"), str(tmp_path / "no.h5ad"), "-o", str(out)])
    assert rc == 2 and time.perf_counter() - t0 < 5
    assert f"{out} exists; pass --overwrite" in capsys.readouterr().err
    assert _report(all_counts_model, out, "--overwrite") == 0
    assert (out / "metrics.json").is_file() and (out / "keep.txt").read_text() == "mine"


def test_split_writes_folds_that_sum_to_the_counts(all_counts_model, tmp_path, capsys):
    import anndata

    source = all_counts_model / "cortex.h5ad"
    out = tmp_path / "split.h5ad"
    assert main(["split", str(source), str(out), "--seed", "3"]) == 0
    assert "pybridge train" in capsys.readouterr().err
    counts = anndata.read_h5ad(source).X
    split = anndata.read_h5ad(out)
    A, B = sp.csr_matrix(split.layers["fold_A"]), sp.csr_matrix(split.layers["fold_B"])
    assert (A + B != sp.csr_matrix(counts)).nnz == 0
    assert A.min() >= 0 and B.min() >= 0 and 0.45 < A.sum() / counts.sum() < 0.55
    assert split.uns["pybridge_count_split"]["seed"] == 3
    assert main(["split", str(source), str(out)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["split", str(source), str(out), "--overwrite", "--fraction", "0.2", "--seed", "4"]) == 0
    again = anndata.read_h5ad(out)
    assert 0.15 < again.layers["fold_A"].sum() / counts.sum() < 0.25


def test_model_trained_on_the_split_gets_the_held_out_report(all_counts_model, tmp_path):
    """A model trained on the layer `pybridge split` made is recognised from the recorded split."""
    import anndata

    split_path = tmp_path / "split.h5ad"
    assert main(["split", str(all_counts_model / "cortex.h5ad"), str(split_path)]) == 0
    adata = anndata.read_h5ad(split_path)
    pybridge.SCVI.setup_anndata(adata, layer="fold_A")
    model = pybridge.SCVI(adata, n_latent=4, n_hidden=32)
    model.train(max_epochs=5, seed=0, progress=False, accelerator="cpu")
    model.save(tmp_path / "model")
    rc = main(["report", str(tmp_path / "model"), str(split_path), "-o", str(tmp_path / "r"), "--accelerator", "cpu",
               "--ppc-cells", "50"])
    assert rc == 0
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["mode"] == "heldout"
