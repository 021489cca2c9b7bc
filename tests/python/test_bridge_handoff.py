"""pybridge.bridge.handoff: the plain-array path the R package uses (no R needed here)."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from pybridge.bridge import handoff
from pybridge.errors import PybridgeError


def _dgc_slots(genes_by_cells: sp.spmatrix):
    csc = sp.csc_matrix(genes_by_cells)
    csc.sort_indices()
    return csc.data.astype(np.float64), csc.indices.astype(np.int32), csc.indptr.astype(np.int32)


def test_dgc_slots_are_the_transposed_csr_without_copy():
    rng = np.random.default_rng(0)
    m = sp.random(30, 12, density=0.3, random_state=rng, format="csc") * 10  # genes x cells
    x, i, p = _dgc_slots(m)
    csr = handoff.csr_from_dgc_slots(x, i, p, 30, 12)
    assert csr.shape == (12, 30)
    np.testing.assert_array_equal(csr.toarray(), m.T.toarray())
    assert np.shares_memory(csr.data, x) and np.shares_memory(csr.indices, i)
    assert not csr.data.flags.writeable
    with pytest.raises(ValueError):
        csr.data[0] = 1.0


def test_bad_slots_name_the_problem():
    with pytest.raises(PybridgeError, match="slot p"):
        handoff.csr_from_dgc_slots(np.ones(2), np.zeros(2, np.int32), np.array([0, 2], np.int32), 3, 2)


def test_block_builder_matches_whole_matrix_and_checks_int32_limit():
    rng = np.random.default_rng(1)
    m = sp.random(20, 17, density=0.4, random_state=rng, format="csc")
    b = handoff.CSRBlockBuilder(20)
    for start in range(0, 17, 5):
        b.add_block(*_dgc_slots(m[:, start:start + 5]))
    np.testing.assert_array_equal(b.finish().toarray(), m.T.toarray())
    big = handoff.CSRBlockBuilder(3)
    big.nnz = handoff.INT32_MAX
    with pytest.raises(PybridgeError, match="2\\^31-1"):
        big.add_block(np.ones(1), np.zeros(1, np.int32), np.array([0, 1], np.int32))


def test_csr_to_dgc_slots_round_trip_and_sorts_indices():
    m = sp.csr_matrix((np.array([3.0, 1.0, 2.0], np.float32), np.array([2, 0, 1]), np.array([0, 2, 3])), shape=(2, 3))
    assert not m.has_sorted_indices
    s = handoff.csr_to_dgc_slots(m)
    assert s["Dim"] == [3, 2] and s["x"].dtype == np.float64
    back = handoff.csr_from_dgc_slots(s["x"], s["i"], s["p"], 3, 2)
    np.testing.assert_array_equal(back.toarray(), m.toarray())
    np.testing.assert_array_equal(s["i"], [0, 2, 1])


def test_columns_round_trip_with_na_in_every_type():
    idx = ["c1", "c1", "ç"]
    cols = [
        {"name": "f", "kind": "factor", "values": np.array([0, -1, 1], np.int32), "na": np.array([0, 1, 0], bool),
         "levels": np.array(["a", "b", "unused"]), "ordered": False},
        {"name": "f", "kind": "logical", "values": np.array([True, False, False]), "na": np.array([0, 1, 0], bool)},
        {"name": "ü", "kind": "integer", "values": np.array([1, 0, 3], np.int32), "na": np.array([0, 1, 0], bool)},
        {"name": "d", "kind": "double", "values": np.array([1.5, 0, 2]), "na": np.array([0, 1, 0], bool)},
        {"name": "s", "kind": "character", "values": np.array(["x", "", "é"], dtype=object),
         "na": np.array([0, 1, 0], bool)},
    ]
    df = handoff.frame_from_columns(cols, idx, 3)
    assert list(df.columns) == ["f", "f", "ü", "d", "s"]  # duplicated and non-ASCII names kept
    assert list(df.index) == idx
    assert df.isna().to_numpy()[:, :].sum(axis=0).tolist() == [1, 1, 1, 1, 1]
    assert list(df.iloc[:, 0].cat.categories) == ["a", "b", "unused"]
    assert df.iloc[:, 1].dtype == "boolean" and df.iloc[:, 2].dtype == "Int32"
    back = handoff.frame_to_columns(df)
    assert [c["kind"] for c in back] == ["factor", "logical", "integer", "double", "character"]
    for c_in, c_out in zip(cols, back):
        np.testing.assert_array_equal(c_out["na"], c_in["na"])
    np.testing.assert_array_equal(back[0]["values"], [1, 0, 2])  # 1-based codes for R, NA -> 0
    np.testing.assert_array_equal(back[2]["values"][[0, 2]], [1, 3])
    assert back[4]["values"][2] == "é"


def test_unconvertible_columns_fail_clearly():
    with pytest.raises(PybridgeError, match="mixes strings"):
        handoff.frame_to_columns(pd.DataFrame({"m": pd.Series(["a", 1], dtype=object)}))
    with pytest.raises(PybridgeError, match="has dtype"):
        handoff.frame_to_columns(pd.DataFrame({"t": pd.to_datetime(["2020-01-01"])}))


def test_large_integers_go_to_double():
    spec = handoff.frame_to_columns(pd.DataFrame({"n": np.array([1, 2**40], dtype=np.int64)}))[0]
    assert spec["kind"] == "double" and spec["values"][1] == 2.0**40


def test_reduced_dim_name_map():
    for r, k in [("scVI", "X_scVI"), ("PCA", "X_pca"), ("UMAP", "X_umap"), ("TSNE", "X_tsne"), ("foo", "X_foo")]:
        assert handoff.obsm_key(r) == k
        assert handoff.reduced_dim_name(k) == r


def test_anndata_parts_carries_everything():
    import anndata as ad

    X = sp.csr_matrix(np.array([[1, 0, 2], [0, 3, 0]], np.float32))
    a = ad.AnnData(X, obs=pd.DataFrame({"b": pd.Categorical(["u", None], categories=["u", "v"])}, index=["a", "b"]),
                   var=pd.DataFrame(index=["g1", "g2", "g3"]))
    a.obsm["X_scVI"] = np.ones((2, 4), np.float32)
    a.layers["raw"] = X.copy()
    parts = handoff.anndata_parts(a)
    assert parts["X"]["Dim"] == [3, 2] and set(parts["layers"]) == {"raw"}
    assert parts["reduced_dims"]["scVI"].shape == (2, 4)
    assert list(parts["obs_names"]) == ["a", "b"] and parts["obs"][0]["na"].tolist() == [False, True]
