"""Pseudo-spots: exact sums of real cells, proportions that sum to 1, disjoint reference, grid, FISH and Spotless
modes, and the Spotless downsampling rule."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import pybridge
from pybridge.deconvolution.simulate import SPOTLESS_PATTERNS, pseudo_spots
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


def test_downsampling_keeps_spots_below_mean_plus_sd_and_thins_the_rest(cortex):
    raw, _ = pseudo_spots(cortex, "cell_type", n_spots=60, seed=2)
    thinned, _ = pseudo_spots(cortex, "cell_type", n_spots=60, seed=2, target_umi=(5000, 500))
    raw_total = np.asarray(raw.X.sum(1)).ravel()
    thin_total = np.asarray(thinned.X.sum(1)).ravel()
    above = raw_total > 5500
    assert above.any() and (~above).any()
    np.testing.assert_array_equal(thinned.X[~above].toarray(), raw.X[~above].toarray())
    assert np.all(np.abs(thin_total[above] - 5000) < 5 * 500)
    # a subset of the molecules: never more of a gene than the spot had
    assert np.all((raw.X - thinned.X).toarray() >= 0)
    assert np.all(thinned.X.data == np.round(thinned.X.data))


@pytest.mark.parametrize("pattern", SPOTLESS_PATTERNS)
def test_spotless_patterns(cortex, pattern):
    spots, reference = pseudo_spots(cortex, "cell_type", n_spots=150, mode="spotless", pattern=pattern,
                                    n_regions=5, seed=4)
    # the reference depends on the seed only: one reference serves every pattern and mode
    _, random_mode_reference = pseudo_spots(cortex, "cell_type", n_spots=10, seed=4)
    assert list(reference.obs_names) == list(random_mode_reference.obs_names)
    priors = np.asarray(spots.uns["pseudo_spots"]["region_priors"])
    truth = spots.obsm["proportions"]
    assert spots.n_obs == 150 and priors.shape == (5, truth.shape[1])
    np.testing.assert_allclose(priors.sum(1), 1.0)
    region = spots.obs["region"].cat.codes.to_numpy()
    assert set(region) == set(range(5))
    # spots only hold the types their region's prior allows
    assert np.all(truth.to_numpy()[priors[region] == 0] == 0)
    present = priors > 0
    n_cells = spots.obs["n_cells"].to_numpy()
    assert n_cells.min() >= 2 and n_cells.max() <= 10
    if pattern.endswith("_distinct"):
        assert np.all(present.sum(0) <= 1)
    if pattern.startswith("uniform"):
        for row in priors:
            assert np.allclose(row[row > 0], row[row > 0][0])
    if pattern == "dominant_celltype_diverse":
        dominant = priors.argmax(1)
        assert len(set(dominant)) == 1 and np.all(priors.max(1) >= 75 / (75 + 10 * truth.shape[1]))
    if pattern == "partially_dominant_celltype_diverse":
        dominant = priors[0].argmax()
        assert np.all(priors[:3].argmax(1) == dominant) and priors[4, dominant] == 0 and priors[3, dominant] > 0
    if pattern.endswith("rare_celltype_diverse"):
        # one type below a fifth of the mean of the other present types, wherever it is present
        n_present = present.sum(0)

        def is_rare_in(k, r):
            others = np.delete(priors[r], k)[np.delete(present[r], k)]
            return len(others) > 0 and priors[r, k] <= others.mean() / 5 + 1e-12

        rare_candidates = [k for k in range(priors.shape[1])
                           if n_present[k] and all(is_rare_in(k, r) for r in np.flatnonzero(present[:, k]))]
        assert rare_candidates
        expected_regions = 5 if pattern.startswith("dominant") else 1
        assert any(n_present[k] == expected_regions for k in rare_candidates)


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
    with pytest.raises(PybridgeError, match="unknown pattern 'dominant'"):
        pseudo_spots(cortex, "cell_type", mode="spotless", pattern="dominant")
    with pytest.raises(PybridgeError, match="n_regions must be"):
        pseudo_spots(cortex, "cell_type", mode="spotless", n_regions=cortex.obs["cell_type"].nunique())
