"""Pseudo-spots: exact sums of real cells, proportions that sum to 1, disjoint reference, grid and FISH modes."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import pybridge
from pybridge.deconvolution.simulate import pseudo_spots
from pybridge.errors import PybridgeError


@pytest.fixture(scope="module")
def cortex():
    return pybridge.datasets.cortex()


def test_random_spots_are_sums_of_real_cells(cortex):
    spots, reference = pseudo_spots(cortex, "cell_type", n_spots=80, seed=1)
    membership = spots.obsm["cell_membership"]
    expected = membership @ sp.csr_matrix(cortex.X, dtype=np.float64)
    np.testing.assert_array_equal(spots.X.toarray(), expected.toarray())
    n_cells = np.asarray(membership.sum(1)).ravel()
    assert n_cells.min() >= 2 and n_cells.max() <= 10
    np.testing.assert_array_equal(spots.obs["n_cells"].to_numpy(), n_cells)
    truth = spots.obsm["proportions"]
    np.testing.assert_allclose(truth.sum(1), 1.0)
    # truth is the share of each type among the spot's cells
    labels = cortex.obs["cell_type"].astype(str).to_numpy()
    first = membership[0].indices
    for cell_type in truth.columns:
        assert truth.iloc[0][cell_type] == pytest.approx(np.mean(labels[first] == cell_type))
    # reference and spots never share a cell, and every type is in the reference
    used = np.unique(membership.nonzero()[1])
    ref_positions = cortex.obs_names.get_indexer(reference.obs_names)
    assert not np.intersect1d(used, ref_positions).size
    assert set(reference.obs["cell_type"].astype(str)) == set(truth.columns)


def test_downsampling_thins_towards_target(cortex):
    raw, _ = pseudo_spots(cortex, "cell_type", n_spots=60, seed=2)
    thinned, _ = pseudo_spots(cortex, "cell_type", n_spots=60, seed=2, target_umi=(5000, 500))
    raw_total = np.asarray(raw.X.sum(1)).ravel()
    thin_total = np.asarray(thinned.X.sum(1)).ravel()
    assert np.all(thin_total <= raw_total)
    big = raw_total > 8000
    assert big.any() and np.all(np.abs(thin_total[big] - 5000) < 2500)
    assert np.all(thinned.X.data == np.round(thinned.X.data))


def test_grid_proportions_are_spatially_smooth(cortex):
    spots, _ = pseudo_spots(cortex, "cell_type", mode="grid", grid_shape=(8, 10), seed=3)
    assert spots.n_obs == 80 and spots.obsm["spatial"].shape == (80, 2)
    truth = spots.obsm["proportions"].to_numpy()
    xy = spots.obsm["spatial"]
    dist = np.abs(xy[:, None, :] - xy[None, :, :]).sum(-1)
    near = dist == 1
    far = dist >= 8
    gap = np.abs(truth[:, None, :] - truth[None, :, :]).sum(-1)
    assert gap[near].mean() < gap[far].mean()


def test_fish_windows_sum_cells_inside(cortex):
    rng = np.random.default_rng(0)
    cells = cortex[:600].copy()
    cells.obsm["spatial"] = rng.uniform(0, 100, (cells.n_obs, 2))
    spots, reference = pseudo_spots(cells, "cell_type", mode="fish", window_size=25.0, seed=0)
    assert spots.n_obs <= 16
    membership = spots.obsm["cell_membership"]
    assert membership.sum() + reference.n_obs == cells.n_obs  # every non-reference cell lands in one window
    window = np.floor((cells.obsm["spatial"] - cells.obsm["spatial"].min(0)) / 25.0)
    for i in range(spots.n_obs):
        members = membership[i].indices
        assert len(np.unique(window[members], axis=0)) == 1


def test_bad_arguments_are_named(cortex):
    with pytest.raises(PybridgeError, match="no column 'celltype'"):
        pseudo_spots(cortex, "celltype")
    with pytest.raises(PybridgeError, match="spatial"):
        pseudo_spots(cortex, "cell_type", mode="fish", window_size=10)
    with pytest.raises(PybridgeError, match="mode"):
        pseudo_spots(cortex, "cell_type", mode="hexagon")
