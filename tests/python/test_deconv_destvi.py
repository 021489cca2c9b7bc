"""CondSCVI + DestVI: end-to-end deconvolution on real cells, batch-size rule, save/load, bad input, CLI."""

from __future__ import annotations

import json
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import pybridge
from pybridge import CondSCVI, DestVI
from pybridge.cli.main import main as cli_main
from pybridge.deconvolution import deconvolution_metrics, summarize_metrics
from pybridge.deconvolution.pipeline import run_destvi
from pybridge.deconvolution.simulate import pseudo_spots
from pybridge.errors import PybridgeError
from pybridge.models.destvi import default_batch_size, default_max_epochs

N_GENES = 300


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these small models gain nothing from two, and lose a lot on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cortex_small():
    """Vendored Zeisel cortex, the 300 most variable genes (keeps training to seconds)."""
    cells = pybridge.datasets.cortex()
    X = cells.X.toarray() if hasattr(cells.X, "toarray") else np.asarray(cells.X)
    norm = np.log1p(X / X.sum(1, keepdims=True) * 1e4)
    keep = np.sort(np.argsort(-norm.var(0))[:N_GENES])
    cells = cells[:, keep].copy()
    return cells[np.asarray(cells.X.sum(1)).ravel() > 0].copy()


@pytest.fixture(scope="module")
def trained(cortex_small):
    torch.manual_seed(0)
    spots, reference = pseudo_spots(cortex_small, "cell_type", n_spots=100, reference_fraction=0.3, seed=0)
    CondSCVI.setup_anndata(reference, labels_key="cell_type")
    sc_model = CondSCVI(reference)
    sc_model.train(max_epochs=50, n_epochs_kl_warmup=10, progress=False)
    DestVI.setup_anndata(spots)
    st_model = DestVI.from_rna_model(spots, sc_model)
    # 300 epochs x 10 minibatches (the batch-size rule: 100 // 10), default lr 3e-3
    st_model.train(max_epochs=300, n_epochs_kl_warmup=50, progress=False)
    return spots, reference, sc_model, st_model


def test_destvi_beats_a_uniform_guess(trained):
    spots, _, _, st_model = trained
    truth = spots.obsm["proportions"]
    shares = st_model.get_proportions()
    assert list(shares.columns) == st_model.cell_types and shares.index.equals(spots.obs_names)
    np.testing.assert_allclose(shares.sum(1), 1.0, rtol=1e-5)
    pred = st_model.get_proportions(cell_fractions=True)  # the truth counts cells, not expression
    np.testing.assert_allclose(pred.sum(1), 1.0, rtol=1e-5)
    uniform = pd.DataFrame(1.0 / truth.shape[1], index=truth.index, columns=truth.columns)
    ours = summarize_metrics(deconvolution_metrics(truth, pred))
    guess = summarize_metrics(deconvolution_metrics(truth, uniform))
    # measured (torch seeds 0, 1): rmse 0.113, 0.117 vs 0.214; JS 0.088, 0.090 vs 0.345; Pearson 0.87, 0.87
    # (without the synthetic-spot supervision, augmentation_weight=0: Pearson 0.85, 0.78)
    assert ours["celltype_rmse"] < 0.7 * guess["celltype_rmse"]
    assert ours["spot_js_divergence"] < 0.45 * guess["spot_js_divergence"]
    assert ours["celltype_pearson"] > 0.8


def test_outputs_have_documented_shapes(trained):
    spots, _, sc_model, st_model = trained
    noisy = st_model.get_proportions(keep_noise=True)
    assert noisy.columns[-1] == "noise_term" and noisy.shape == (spots.n_obs, len(st_model.cell_types) + 1)
    gamma = st_model.get_gamma()
    assert set(gamma) == set(st_model.cell_types) and gamma[st_model.cell_types[0]].shape == (spots.n_obs, 5)
    assert st_model.get_gamma(return_numpy=True).shape == (spots.n_obs, 5, len(st_model.cell_types))
    scale = st_model.get_scale_for_ct(st_model.cell_types[0], indices=[0, 3])
    assert scale.shape == (2, N_GENES) and (scale.to_numpy() > 0).all()
    mean, var, weight = sc_model.get_vamp_prior(p=15)
    assert mean.shape == (len(sc_model.cell_types), 15, 5) and var.min() > 0
    np.testing.assert_allclose(weight.sum(1), 1.0, rtol=1e-5)


def test_save_load_round_trip(trained, tmp_path):
    spots, reference, sc_model, st_model = trained
    st_model.save(tmp_path / "destvi")
    sc_model.save(tmp_path / "condscvi")
    loaded = DestVI.load(tmp_path / "destvi", adata=spots, accelerator="cpu")
    pd.testing.assert_frame_equal(loaded.get_proportions(), st_model.get_proportions(), atol=1e-6, rtol=1e-5)
    # the reference cells of the synthetic spots travel with the model, so training can go on after a load
    assert torch.equal(loaded.module.mixture_counts, st_model.module.mixture_counts)
    assert torch.equal(loaded.module.mixture_labels, st_model.module.mixture_labels)
    sc_loaded = CondSCVI.load(tmp_path / "condscvi", adata=reference, accelerator="cpu")
    np.testing.assert_allclose(sc_loaded.get_latent_representation(), sc_model.get_latent_representation(), atol=1e-5)


def test_batch_size_rule_and_small_data_warning(trained):
    assert [default_batch_size(n) for n in (10, 60, 189, 2000, 5000)] == [4, 6, 18, 128, 128]
    spots, _, sc_model, _ = trained
    few = spots[:30].copy()
    DestVI.setup_anndata(few)
    model = DestVI.from_rna_model(few, sc_model)
    with pytest.warns(UserWarning, match="fewer than 50 spots"):
        model.train(max_epochs=1, progress=False)


def test_schedule_is_set_in_optimizer_steps(trained, optimizer_steps):
    # 20,000 steps: 2,000 epochs of 10 minibatches up to 1,280 spots, fewer epochs beyond
    sizes = (60, 1280, 2000, 100_000)
    assert [default_max_epochs(n, default_batch_size(n)) for n in sizes] == [2000, 2000, 1250, 26]
    assert default_max_epochs(100, 10, max_steps=25) == 3
    spots, _, sc_model, _ = trained
    model = DestVI.from_rna_model(spots.copy(), sc_model)
    seen = []
    model.train(max_steps=25, batch_size=10, progress=lambda epoch, total, record: seen.append((total, record)))
    assert len(seen) == -(-25 // -(-spots.n_obs // 10)) == seen[0][0]
    assert len(optimizer_steps) == 25  # exactly, the last epoch stopped short
    assert seen[0][1]["kl_weight"] == 0.0 and seen[-1][1]["kl_weight"] == 1.0  # warm-up over 10 % of epochs
    with pytest.raises(PybridgeError, match="max_epochs .* or max_steps"):
        model.train(max_epochs=2, max_steps=10)
    with pytest.raises(PybridgeError, match="max_steps must be a whole number"):
        model.train(max_steps=0)


def test_reference_without_label_column(cortex_small):
    with pytest.raises(PybridgeError, match="no cell-type column 'celltype'"):
        CondSCVI.setup_anndata(cortex_small.copy(), labels_key="celltype")


def test_spots_passed_as_reference(trained):
    spots = trained[0].copy()
    spots.obsm["spatial"] = np.zeros((spots.n_obs, 2))
    with pytest.raises(PybridgeError, match="looks like spot data"):
        CondSCVI.setup_anndata(spots, labels_key="cell_type")


def test_rare_and_singleton_cell_types(cortex_small):
    cells = cortex_small[:400].copy()
    labels = cells.obs["cell_type"].astype(str).to_numpy()
    labels[:5] = "rare"
    cells.obs["cell_type"] = labels
    with pytest.warns(UserWarning, match="fewer than 10 cells.*rare"):
        CondSCVI.setup_anndata(cells, labels_key="cell_type")
    labels[0] = "single"
    cells.obs["cell_type"] = labels
    with pytest.raises(PybridgeError, match="fewer than 2 cells.*single"):
        CondSCVI.setup_anndata(cells, labels_key="cell_type")


def test_partial_gene_overlap_uses_intersection(trained):
    spots, _, sc_model, _ = trained
    partial = spots[:, spots.var_names[:100]].copy()
    DestVI.setup_anndata(partial)
    with pytest.warns(UserWarning, match="using the 100 genes shared"):
        model = DestVI.from_rna_model(partial, sc_model)
    assert model.registry.var_names == list(partial.var_names)
    assert model.get_scale_for_ct(model.cell_types[0], indices=[0]).shape == (1, 100)
    tiny = spots[:, spots.var_names[:40]].copy()
    DestVI.setup_anndata(tiny)
    with pytest.raises(PybridgeError, match="share 40 genes.*at least 50"):
        DestVI.from_rna_model(tiny, sc_model)


def test_spots_with_zero_counts(trained):
    spots = trained[0].copy()
    X = spots.X.toarray()
    X[3, :] = 0
    spots.X = sp.csr_matrix(X)
    with pytest.raises(PybridgeError, match="zero total counts"):
        DestVI.setup_anndata(spots)
    # zero only on the genes shared with the reference: caught when the model is built
    sc_model = trained[2]
    extra = ad.AnnData(np.ones((spots.n_obs, 1), np.float32), obs=spots.obs[[]], var=pd.DataFrame(index=["extra"]))
    padded = ad.concat([spots, extra], axis=1)
    DestVI.setup_anndata(padded)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(PybridgeError, match="1 spots have zero counts.*spot_3"):
            DestVI.from_rna_model(padded, sc_model)


def test_model_arguments_checked(trained):
    spots, reference, sc_model, _ = trained
    with pytest.raises(PybridgeError, match="CondSCVI"):
        DestVI.from_rna_model(spots, reference)
    with pytest.raises(PybridgeError, match="reference AnnData as spots"):
        DestVI.from_rna_model(sc_model.adata, sc_model)
    with pytest.raises(PybridgeError, match="amortization"):
        DestVI.from_rna_model(spots, sc_model, amortization="all")


@pytest.mark.parametrize("amortization", ["none", "latent", "proportion"])
def test_amortization_modes_train(trained, amortization):
    spots, _, sc_model, _ = trained
    model = DestVI.from_rna_model(spots, sc_model, amortization=amortization, vamp_prior_p=None)
    model.train(max_epochs=2, progress=False)
    pred = model.get_proportions()
    assert np.isfinite(pred.to_numpy()).all() and pred.shape == (spots.n_obs, len(model.cell_types))


def test_cli_deconvolve(cortex_small, tmp_path, capsys):
    spots, reference = pseudo_spots(cortex_small, "cell_type", n_spots=60, seed=1)
    del spots.obsm["cell_membership"]
    spots.write_h5ad(tmp_path / "spots.h5ad")
    reference.write_h5ad(tmp_path / "ref.h5ad")
    out = tmp_path / "out.h5ad"
    code = cli_main(["deconvolve", "--reference", str(tmp_path / "ref.h5ad"), "--spots", str(tmp_path / "spots.h5ad"),
                     "--output", str(out), "--sc-max-epochs", "2", "--st-max-epochs", "2", "--no-progress",
                     "--cell-fractions"])
    assert code == 0
    result = ad.read_h5ad(out)
    props = result.obsm["destvi_proportions"]
    assert props.shape == (60, spots.obsm["proportions"].shape[1])
    np.testing.assert_allclose(props.sum(1), 1.0, rtol=1e-5)
    # swapped inputs: one clear line, exit code 2
    code = cli_main(["deconvolve", "--reference", str(tmp_path / "spots.h5ad"), "--spots", str(tmp_path / "ref.h5ad"),
                     "--output", str(out), "--sc-max-epochs", "1", "--st-max-epochs", "1", "--no-progress",
                     "--overwrite"])
    assert code == 2
    assert "look swapped" in capsys.readouterr().err


def test_cli_deconvolve_trains_condscvi_for_run_destvi_default_epochs(cortex_small, tmp_path, monkeypatch):
    import inspect

    from pybridge.deconvolution import pipeline

    assert inspect.signature(pipeline.run_destvi).parameters["sc_max_epochs"].default == pipeline.SC_MAX_EPOCHS == 60
    spots, reference = pseudo_spots(cortex_small, "cell_type", n_spots=60, seed=1)
    del spots.obsm["cell_membership"]
    spots.write_h5ad(tmp_path / "spots.h5ad")
    reference.write_h5ad(tmp_path / "ref.h5ad")
    seen = {}

    def capture(*args, **kwargs):
        seen.update(kwargs)
        raise PybridgeError("captured")

    monkeypatch.setattr(pipeline, "run_destvi", capture)
    argv = ["deconvolve", "--reference", str(tmp_path / "ref.h5ad"), "--spots", str(tmp_path / "spots.h5ad"),
            "--output", str(tmp_path / "out.h5ad")]
    assert cli_main(argv) == 2 and seen["sc_max_epochs"] == 60
    assert cli_main([*argv, "--sc-max-epochs", "7"]) == 2 and seen["sc_max_epochs"] == 7


def test_run_destvi_averages_an_ensemble_of_models(cortex_small, tmp_path, capsys):
    spots, reference = pseudo_spots(cortex_small, "cell_type", n_spots=40, seed=2)
    with pytest.raises(PybridgeError, match="n_models must be a whole number >= 1"):
        run_destvi(spots, reference, n_models=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_destvi(spots, reference, sc_max_epochs=2, st_max_epochs=3, n_models=2, cell_fractions=True,
                            accelerator="cpu", progress=False)
    assert len(result.st_models) == 2
    each = [m.get_proportions(cell_fractions=True) for m in result.st_models]
    assert not each[0].equals(each[1])  # seeds 0 and 1
    pd.testing.assert_frame_equal(result.proportions, (each[0] + each[1]) / 2)
    gammas = [m.get_gamma() for m in result.st_models]
    first = result.proportions.columns[0]
    pd.testing.assert_frame_equal(result.gamma[first], (gammas[0][first] + gammas[1][first]) / 2)
    with pytest.raises(PybridgeError, match="averages 2 DestVI models"):
        _ = result.st_model
    # the CLI refuses to save one model of several before reading anything
    code = cli_main(["deconvolve", "--reference", "ref.h5ad", "--spots", "spots.h5ad", "--output",
                     str(tmp_path / "out.h5ad"), "--n-models", "2", "--model-dir", str(tmp_path / "m")])
    assert code == 2 and "--model-dir saves one DestVI model" in capsys.readouterr().err


def test_training_is_seeded(trained):
    spots, _, sc_model, _ = trained
    runs = []
    for _ in range(2):
        torch.manual_seed(123)  # the module's initial weights
        model = DestVI.from_rna_model(spots, sc_model)
        model.train(max_epochs=2, progress=False, seed=5)
        runs.append(model.get_proportions())
    pd.testing.assert_frame_equal(runs[0], runs[1])


def test_initial_weights_do_not_depend_on_the_global_seed(trained):
    """As for SCVI: a fresh process (torch seeds itself at random) builds the same CondSCVI and DestVI."""
    spots, reference, sc_model, _ = trained
    built = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        sc = CondSCVI(reference)
        st = DestVI.from_rna_model(spots, sc_model)
        built.append((sc.module.state_dict(), st.module.state_dict(), torch.rand(1)))
    for first, second in zip(built[0][:2], built[1][:2]):
        assert first.keys() == second.keys()
        assert all(torch.equal(first[k], second[k]) for k in first)
    torch.manual_seed(1)
    assert torch.equal(built[0][2], torch.rand(1))  # the caller's random stream is left alone


def test_augmentation_defaults_and_checks(trained):
    spots, _, sc_model, st_model = trained
    assert st_model.module.augmentation_weight == 1000.0
    latent = DestVI.from_rna_model(spots, sc_model, amortization="latent")
    assert latent.module.augmentation_weight == 0.0  # free proportions cannot learn from synthetic spots
    with pytest.raises(PybridgeError, match="augmentation_weight=5.0 needs proportions from a network"):
        DestVI.from_rna_model(spots, sc_model, amortization="none", augmentation_weight=5.0)
    with pytest.raises(PybridgeError, match="augmentation_weight must be a finite number >= 0"):
        DestVI.from_rna_model(spots, sc_model, augmentation_weight=-1.0)
    with pytest.raises(PybridgeError, match="augmentation_concentration must be > 0"):
        DestVI.from_rna_model(spots, sc_model, augmentation_concentration=0.0)
    with pytest.raises(PybridgeError, match="augmentation_source must be one of"):
        DestVI.from_rna_model(spots, sc_model, augmentation_source="cells")
    for bad in (0.5, float("nan"), "5"):
        with pytest.raises(PybridgeError, match="cells_per_spot must be a number >= 1"):
            DestVI.from_rna_model(spots, sc_model, cells_per_spot=bad)


def test_reference_synthetic_spots_are_sums_of_reference_cells(trained):
    module = trained[3].module
    assert module.augmentation_source == "reference" and module.augmentation_concentration == 0.05
    n_types = len(trained[3].cell_types)
    assert 0 < len(module.mixture_labels) <= 500 * n_types
    torch.manual_seed(0)
    module.cells_per_spot = 1.0  # one cell per spot: each synthetic spot is one kept reference cell
    try:
        counts, composition = module.synthetic_spots(torch.full((50, 1), 1e9))
    finally:
        module.cells_per_spot = 5.0
    assert torch.equal(composition.sum(1), torch.ones(50)) and ((composition == 1).sum(1) == 1).all()
    for row, share in zip(counts, composition):
        same_type = module.mixture_counts[module.mixture_labels == share.argmax()]
        assert (same_type == row).all(1).any()
    library = torch.tensor([[500.0], [5000.0], [20000.0]]).repeat(200, 1)
    counts, composition = module.synthetic_spots(library)
    assert counts.shape == (600, N_GENES) and composition.shape == (600, n_types)
    assert torch.equal(counts, counts.round()) and counts.min() >= 0
    torch.testing.assert_close(composition.sum(1), torch.ones(600))
    totals = counts.sum(1)
    # binomially thinned to the spot's library when the cells hold more (a few cells hold more than 500)
    assert (totals <= 1.2 * library[:, 0]).all()
    assert abs(float(totals[::3].mean()) / 500 - 1) < 0.02
    # sparse type probabilities (Dirichlet(0.05)): most spots hold one or two types
    assert ((composition > 0).sum(1) <= 2).float().mean() > 0.7


def test_a_reference_without_one_cell_type_is_refused(trained, tmp_path):
    spots, reference, sc_model, _ = trained
    sc_model.save(tmp_path / "sc")
    missing = sc_model.cell_types[-1]
    loaded = CondSCVI.load(tmp_path / "sc", adata=reference[reference.obs["cell_type"] != missing].copy())
    # without a VampPrior nothing else reads the types; the mean library of the type would be NaN
    for source in ("reference", "model"):
        with pytest.raises(PybridgeError, match=f"cell type {missing!r} has no cells in this AnnData"):
            DestVI.from_rna_model(spots, loaded, vamp_prior_p=None, augmentation_source=source)


def test_model_files_without_an_augmentation_source_load_as_the_model_source(trained, tmp_path):
    spots, _, sc_model, _ = trained
    model = DestVI.from_rna_model(spots, sc_model, augmentation_source="model")
    model.save(tmp_path / "m")
    meta_file = tmp_path / "m" / "model.json"
    meta = json.loads(meta_file.read_text())
    for key in ("augmentation_source", "cells_per_spot"):  # as written before the "reference" source
        del meta["init_params"][key]
    meta_file.write_text(json.dumps(meta))
    loaded = DestVI.load(tmp_path / "m", adata=spots, accelerator="cpu")
    assert loaded.module.augmentation_source == "model" and len(loaded.module.mixture_counts) == 0
    pd.testing.assert_frame_equal(loaded.get_proportions(), model.get_proportions(), atol=1e-6, rtol=1e-5)


def test_model_synthetic_spots_are_counts_with_known_compositions(trained):
    spots, _, sc_model, _ = trained
    module = DestVI.from_rna_model(spots, sc_model, augmentation_source="model").module
    assert module.augmentation_concentration == 0.1 and len(module.mixture_counts) == 0
    library = torch.tensor([[500.0], [5000.0], [20000.0]]).repeat(200, 1)
    torch.manual_seed(0)
    counts, composition = module.synthetic_spots(library)
    assert counts.shape == (600, N_GENES) and composition.shape == (600, module.n_labels)
    assert torch.equal(counts, counts.round()) and counts.min() >= 0
    torch.testing.assert_close(composition.sum(1), torch.ones(600))
    # totals follow the libraries they were drawn for (CondSCVI's scale: library * rho * exp(o) sums to ~library)
    ratio = counts.sum(1).reshape(200, 3).mean(0) / library[:3, 0]
    assert ((ratio > 0.5) & (ratio < 2.0)).all(), ratio
    assert ratio.max() / ratio.min() < 1.3, ratio


def test_augmentation_enters_training_loss_only(trained):
    spots, _, _, st_model = trained
    module = st_model.module
    x = torch.as_tensor(spots.X[:20].toarray() if sp.issparse(spots.X) else spots.X[:20], dtype=torch.float32)
    batch = {"X": x, "indices": torch.arange(20)}
    module.eval()
    with torch.no_grad():
        evaluated = module.loss(batch).loss
        module.augmentation_weight = 0.0
        assert torch.equal(module.loss(batch).loss, evaluated)
        module.train()
        torch.manual_seed(0)
        plain = module.loss(batch).loss
        module.augmentation_weight = 1000.0
        torch.manual_seed(0)
        supervised = module.loss(batch).loss
    module.eval()
    # the trained network reads the synthetic compositions: cross-entropy well below a uniform guess's
    with torch.no_grad():
        torch.manual_seed(1)
        cross_entropy = module.augmentation_loss(x)
    uniform = np.log(len(st_model.cell_types))
    assert supervised > plain and float(cross_entropy) < 0.7 * uniform, (float(cross_entropy), uniform)
