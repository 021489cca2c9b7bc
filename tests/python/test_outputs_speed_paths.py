"""The fast output paths change cost, not results.

The CSR gather that never reads a count back from the device (the CUDA path, run here on the CPU) gives the same
minibatches as scipy's rows, and so does the slice path that output calls read through; every SCVI output equals
a straightforward computation (module.inference + module.generative on whole minibatches, the pre-speed-up code)
to 1e-6, random draws included under the same seed.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import simulate_counts

import pybridge
from pybridge.data.stores import TensorStore

TOL = {"rtol": 1e-6, "atol": 1e-6}


def _skewed_csr(seed: int = 0) -> sp.csr_matrix:
    """Rows from empty to dense, and a few duplicated entries (summed by scipy's toarray)."""
    rng = np.random.default_rng(seed)
    dense = rng.poisson(rng.gamma(0.5, 1.0, (200, 1)) * rng.gamma(0.3, 1.0, (1, 30))).astype(np.float32)
    dense[[3, 50, 51]] = 0.0
    csr = sp.csr_matrix(dense)
    cut = csr.indptr[8]  # two entries more at the end of row 7, both in column 2
    indptr = csr.indptr + 2 * (np.arange(201) >= 8)
    indices = np.insert(csr.indices, cut, [2, 2])
    data = np.insert(csr.data, cut, [1.0, 2.0]).astype(np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=dense.shape)


@pytest.mark.parametrize("sync_free", [False, True])
def test_sparse_gather_gives_scipys_rows(sync_free):
    X = _skewed_csr()
    assert not X.has_canonical_format
    expected = X.toarray()
    store = TensorStore(X, {"batch": np.arange(200) % 3}, torch.device("cpu"), dense_budget_bytes=0)
    store.sync_free = sync_free
    assert not store.dense
    rng = np.random.default_rng(1)
    for size in (1, 17, 128, 200):
        idx = rng.choice(200, size, replace=size > 150)
        batch = store.gather(torch.as_tensor(idx))
        np.testing.assert_array_equal(batch["X"].numpy(), expected[idx])
        np.testing.assert_array_equal(batch["batch"].numpy(), idx % 3)
    empty_rows = store.gather(torch.tensor([3, 50, 51]))["X"]
    assert empty_rows.shape == (3, 30) and not empty_rows.any()


def test_sync_free_gather_reserves_room_for_the_longest_rows():
    X = _skewed_csr()
    store = TensorStore(X, {}, torch.device("cpu"), dense_budget_bytes=0)
    lengths = np.sort(np.diff(store.indptr_host))[::-1]
    assert store.longest_first[10] == lengths[:10].sum() > np.diff(store.indptr_host)[:10].sum()


def test_range_gather_equals_index_gather():
    X = _skewed_csr()
    positions = np.arange(1000, 1200)
    for budget in (0, None):  # CSR, dense
        store = TensorStore(X, {"batch": np.arange(200) % 3}, torch.device("cpu"), positions, dense_budget_bytes=budget)
        for start, stop in ((0, 64), (64, 128), (190, 200), (5, 5)):
            by_range = store.gather_range(start, stop)
            by_index = store.gather(torch.arange(start, stop))
            assert by_range.keys() == by_index.keys()
            for key in by_range:
                torch.testing.assert_close(by_range[key], by_index[key], rtol=0, atol=0)
            np.testing.assert_array_equal(by_range["indices"].numpy(), positions[start:stop])


def test_gather_leaves_the_callers_matrix_alone():
    X = _skewed_csr()
    before = (X.data.copy(), X.indices.copy(), X.indptr.copy())
    TensorStore(X, {}, torch.device("cpu"), dense_budget_bytes=0)
    for kept, now in zip(before, (X.data, X.indices, X.indptr)):
        np.testing.assert_array_equal(kept, now)


@pytest.fixture(scope="module", params=["zinb", "nb", "poisson"])
def model(request):
    adata = simulate_counts(n_cells=300, n_genes=50)
    adata.X = sp.csr_matrix(adata.X)
    pybridge.SCVI.setup_anndata(adata, batch_key="batch")
    model = pybridge.SCVI(adata, n_hidden=16, n_latent=4, gene_likelihood=request.param)
    model.train(max_epochs=3, progress=False, accelerator="cpu")
    return model, adata


CELLS = np.arange(7, 290, 2)


def _reference(model, adata, per_batch, axis=-2):
    with torch.inference_mode():
        parts = [per_batch(batch) for batch in model._minibatches(adata, CELLS, 40)]
    if isinstance(parts[0], dict):
        return {key: torch.cat([p[key] for p in parts], dim=axis).numpy() for key in parts[0]}
    return torch.cat(parts, dim=axis).numpy()


def test_latent_equals_the_encoder_mean_and_variance(model):
    model, adata = model
    inference = model.module.inference
    mean = _reference(model, adata, lambda b: inference(b, sample=False)["qz_m"])
    var = _reference(model, adata, lambda b: inference(b, sample=False)["qz_v"])
    np.testing.assert_allclose(model.get_latent_representation(adata, CELLS, batch_size=40), mean, **TOL)
    got_mean, got_var = model.get_latent_representation(adata, CELLS, batch_size=40, return_dist=True, n_latent=2)
    np.testing.assert_allclose(got_mean, mean[:, :2], **TOL)
    np.testing.assert_allclose(got_var, var[:, :2], **TOL)
    torch.manual_seed(3)
    sampled = _reference(model, adata, lambda b: inference(b, sample=True)["z"])
    torch.manual_seed(3)
    np.testing.assert_allclose(model.get_latent_representation(adata, CELLS, give_mean=False, batch_size=40), sampled, **TOL)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"library_size": 1e4, "gene_list": ["gene3", "gene0", "gene41"]},
        {"library_size": "latent", "transform_batch": ["b0", "b1"]},
        {"n_samples": 3, "return_mean": False, "transform_batch": "b1"},
        {"n_samples": 3},
    ],
)
def test_normalized_expression_equals_the_decoder_output(model, kwargs):
    model, adata = model
    genes = model._gene_mask(kwargs.get("gene_list"))
    codes = model._batch_codes(kwargs.get("transform_batch"))
    n_samples, library_size = kwargs.get("n_samples", 1), kwargs.get("library_size", 1)

    def per_batch(batch):
        inf = model.module.inference(batch, n_samples=n_samples, sample=n_samples > 1)
        values = []
        for code in codes:
            bidx = None if code is None else torch.full_like(batch["batch"], code)
            gen = model.module.generative(inf["z"], inf["library"], batch, bidx)
            scale = gen["px_rate" if library_size == "latent" else "px_scale"][..., genes]
            values.append(scale if library_size == "latent" else scale * library_size)
        value = torch.stack(values).mean(0)
        return value.mean(0) if n_samples > 1 and kwargs.get("return_mean", True) else value

    torch.manual_seed(5)
    expected = _reference(model, adata, per_batch)
    torch.manual_seed(5)
    got = model.get_normalized_expression(adata, CELLS, batch_size=40, return_numpy=True, **kwargs)
    np.testing.assert_allclose(got, expected, **TOL)


@pytest.mark.parametrize("n_samples,give_mean", [(1, False), (3, True), (2, False)])
def test_likelihood_parameters_equal_the_decoder_output(model, n_samples, give_mean):
    model, adata = model

    def per_batch(batch):
        inf = model.module.inference(batch, n_samples=n_samples)
        gen = model.module.generative(inf["z"], inf["library"], batch)
        values = {"mean": gen["px_rate"]}
        if "px_r" in gen:
            values["dispersions"] = gen["px_r"].expand_as(gen["px_rate"])
        if "px_dropout" in gen:
            values["dropout"] = torch.sigmoid(gen["px_dropout"])
        return {k: v.mean(0) if n_samples > 1 and give_mean else v for k, v in values.items()}

    torch.manual_seed(7)
    expected = _reference(model, adata, per_batch)
    torch.manual_seed(7)
    got = model.get_likelihood_parameters(adata, CELLS, n_samples=n_samples, give_mean=give_mean, batch_size=40)
    assert got.keys() == expected.keys()
    for key in got:
        np.testing.assert_allclose(got[key], expected[key], **TOL)


@pytest.mark.parametrize("n_samples", [1, 2])
def test_posterior_predictive_sample_draws_the_same_counts(model, n_samples):
    model, adata = model

    def per_batch(batch):
        inf = model.module.inference(batch, n_samples=n_samples)
        counts = model.module.sample_counts(model.module.generative(inf["z"], inf["library"], batch))
        return counts if n_samples == 1 else counts.permute(1, 2, 0)

    torch.manual_seed(11)
    expected = _reference(model, adata, per_batch, axis=0)
    torch.manual_seed(11)
    got = model.posterior_predictive_sample(adata, CELLS, n_samples=n_samples, batch_size=40)
    got = got.toarray() if sp.issparse(got) else got
    assert expected.sum() > 0
    np.testing.assert_array_equal(got, expected)
