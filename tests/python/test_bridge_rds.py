"""pybridge.bridge.rds and `pybridge convert`: real R through rpy2.

Skipped without rpy2, or without the R package pybridge in the R library rpy2 uses, unless
PYBRIDGE_REQUIRE_R=1 (`make test-python` installs the R package into .Rlib and sets R_LIBS).
"""

import argparse
import os
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

REQUIRE_R = os.environ.get("PYBRIDGE_REQUIRE_R") == "1"
if not REQUIRE_R:
    pytest.importorskip("rpy2")

import anndata as ad

from pybridge.bridge import rds, read_rds, write_rds
from pybridge.cli import convert
from pybridge.errors import PybridgeError


@pytest.fixture(autouse=True, scope="module")
def r_package():
    """The R package pybridge, loaded in rpy2's R (it does the conversions)."""
    try:
        rds._r()
    except PybridgeError as err:
        if REQUIRE_R:
            raise
        pytest.skip(str(err))


def _tricky_adata() -> ad.AnnData:
    rng = np.random.default_rng(0)
    X = sp.random(6, 5, density=0.5, random_state=rng, format="csr", dtype=np.float32)
    X.data = np.ceil(X.data * 10)
    obs = pd.DataFrame(
        {
            "cat": pd.Categorical(["a", None, "b", "a", "a", "b"], categories=["a", "b", "unused"]),
            "ord": pd.Categorical(["lo", "hi", None, "lo", "hi", "lo"], categories=["lo", "hi"], ordered=True),
            "flag": pd.array([True, None, False, True, False, True], dtype="boolean"),
            "n": pd.array([1, 2, None, 4, 5, 6], dtype="Int32"),
            "x": [0.5, np.nan, 2.0, 3.0, 4.0, 5.5],
            "s": pd.array(["x", "é", None, "ü", "y", "z"], dtype="string"),
        },
        index=["c1", "c2", "ç3", "c4", "c5", "c6"],
    )
    var = pd.DataFrame({"sym": ["A", "B", None, "Ä", "A"]}, index=["g1", "g2", "gé", "g4", "g5"])
    a = ad.AnnData(X, obs=obs, var=var)
    a.obsm["X_scVI"] = rng.normal(size=(6, 3))
    a.layers["raw"] = X.copy()
    return a


def _assert_same(a: ad.AnnData, b: ad.AnnData) -> None:
    assert (a.X != b.X).nnz == 0
    assert list(a.obs_names) == list(b.obs_names) and list(a.var_names) == list(b.var_names)
    for col in a.obs.columns:
        pd.testing.assert_series_equal(a.obs[col], b.obs[col], check_dtype=False, check_categorical=True)
        assert a.obs[col].isna().tolist() == b.obs[col].isna().tolist()
    assert a.obs["cat"].cat.categories.tolist() == ["a", "b", "unused"]
    assert b.obs["ord"].cat.ordered
    np.testing.assert_array_equal(a.obsm["X_scVI"], b.obsm["X_scVI"])
    assert (a.layers["raw"] != b.layers["raw"]).nnz == 0


@pytest.mark.parametrize("kind", ["sce", "seurat"])
def test_rds_round_trip_is_faithful(tmp_path, kind):
    a = _tricky_adata()
    if kind == "seurat":
        a.var_names = ["g1", "g2", "ge", "g4", "g5"]  # Seurat 4 rewrites some feature names; keep them plain
    path = tmp_path / f"x_{kind}.rds"
    write_rds(a, path, kind=kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = read_rds(path)
    if kind == "seurat":  # Seurat adds orig.ident / nCount_RNA / nFeature_RNA
        assert {"orig.ident", "nCount_RNA", "nFeature_RNA"} <= set(b.obs.columns)
        np.testing.assert_allclose(b.obs["nCount_RNA"], np.asarray(a.X.sum(axis=1)).ravel())
    _assert_same(a, b)
    assert b.obs["s"].tolist()[1] == "é" and b.obs.index[2] == "ç3"


def test_seurat_pbmc_small_reads(tmp_path):
    from rpy2 import robjects as ro

    if not bool(ro.r("isTRUE(requireNamespace('SeuratObject', quietly = TRUE))")[0]):
        pytest.skip("SeuratObject not installed")
    ro.r(f"saveRDS(SeuratObject::pbmc_small, '{tmp_path / 'p.rds'}')")
    a = read_rds(tmp_path / "p.rds")
    assert a.shape == (80, 230)
    assert {"X_pca", "X_tsne"} <= set(a.obsm) and "data" in a.layers
    counts = np.asarray(ro.r("as.matrix(SeuratObject::GetAssayData(SeuratObject::pbmc_small, slot = 'counts'))"))
    np.testing.assert_array_equal(a.X.toarray(), counts.T)
    assert a.obs["groups"].tolist()[:3] == list(ro.r("SeuratObject::pbmc_small$groups[1:3]"))


def test_convert_cli_both_directions(tmp_path):
    a = _tricky_adata()
    h5 = tmp_path / "a.h5ad"
    a.write_h5ad(h5)
    rds_path, h5_back = tmp_path / "a.rds", tmp_path / "back.h5ad"
    ns = argparse.Namespace
    assert convert.run(ns(input=str(h5), output=str(rds_path), kind="sce", assay=None, overwrite=False)) == 0
    assert convert.run(ns(input=str(rds_path), output=str(h5_back), kind="sce", assay=None, overwrite=False)) == 0
    _assert_same(a, ad.read_h5ad(h5_back))
    with pytest.raises(PybridgeError, match="exists"):
        convert.run(ns(input=str(h5), output=str(rds_path), kind="sce", assay=None, overwrite=False))
    with pytest.raises(PybridgeError, match=".rds or .h5ad"):
        convert.run(ns(input=str(h5), output=str(tmp_path / "x.csv"), kind="sce", assay=None, overwrite=False))


def test_read_rds_rejects_other_objects(tmp_path):
    from rpy2 import robjects as ro
    from rpy2.rinterface_lib.embedded import RRuntimeError

    ro.r(f"saveRDS(list(a = 1), '{tmp_path / 'l.rds'}')")
    with pytest.raises(RRuntimeError, match="expected a SingleCellExperiment or Seurat"):
        read_rds(tmp_path / "l.rds")


def test_missing_r_package_names_the_fix(monkeypatch):
    monkeypatch.setattr(rds, "R_PACKAGE", "pybridgeNotInstalledAnywhere")
    with pytest.raises(PybridgeError, match="not installed in the R libraries rpy2 uses") as err:
        rds._r()
    for fix in ("R CMD INSTALL .", "make r-install", "R_LIBS"):
        assert fix in str(err.value)


def test_conversion_code_comes_from_the_r_package():
    from rpy2 import robjects as ro

    assert "pybridge" in rds._LOADED
    assert not bool(ro.r("exists('.pybridge_env')")[0])  # no private copy of the R code any more
    fn = rds._fn(".toPlainParts")
    assert str(ro.r("environmentName")(ro.r("environment")(fn))[0]) == "pybridge"


def test_rpy2_leaves_the_library_path_of_later_subprocesses_alone():
    """rpy2 puts R's folders (and the system's libpython) on LD_LIBRARY_PATH; a Python subprocess started
    after an .rds was read (a Dask worker, torchrun) must still load its own libpython."""
    import subprocess
    import sys

    code = ("import os; before = os.environ.get('LD_LIBRARY_PATH'); from pybridge.bridge import rds; rds._r(); "
            "assert os.environ.get('LD_LIBRARY_PATH') == before, os.environ.get('LD_LIBRARY_PATH'); "
            "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import ssl'], check=True)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
