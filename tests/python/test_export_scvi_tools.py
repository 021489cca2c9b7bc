"""Export to scvi-tools: ``save_scvi_tools`` writes a model.pt that scvi-tools 1.4.2 loads and computes the same
latent space and expression from, for every kind of setup.

The loading runs in the reference venv (bench/.venv-scvi, built by ``bash bench/setup_scvi_venv.sh``) through
bench/check_scvi_export.py; those tests skip when the venv is absent, except under `make test-python`, which builds
it. The registry's types are checked here too.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import simulate_counts

import pybridge
from pybridge.io.scvi_tools import read_model_pt

ROOT = Path(__file__).resolve().parents[2]
SCVI_PYTHON = ROOT / "bench" / ".venv-scvi" / "bin" / "python"
CHECK_SCRIPT = ROOT / "bench" / "check_scvi_export.py"
# `make test-python` builds the venv and sets PYBRIDGE_REQUIRE_SCVI_TOOLS=1: there these tests run, never skip.
needs_scvi_tools = pytest.mark.skipif(
    not SCVI_PYTHON.is_file() and os.environ.get("PYBRIDGE_REQUIRE_SCVI_TOOLS") != "1",
    reason="bench/.venv-scvi (scvi-tools 1.4.2) is absent; build it with `bash bench/setup_scvi_venv.sh`",
)

# name -> (setup_anndata arguments, SCVI arguments)
CASES = {
    "no_batch": ({}, {}),
    "batch_and_labels": ({"batch_key": "batch", "labels_key": "cell_type"}, {}),
    "covariates": (
        {"batch_key": "batch", "categorical_covariate_keys": ["donor"], "continuous_covariate_keys": ["percent_mito"]},
        {"encode_covariates": True},
    ),
    # integer obs columns: pybridge names their categories "1", "10", "2" (text order), scvi-tools compares ints
    "numeric_categories": (
        {"batch_key": "plate", "categorical_covariate_keys": ["lane"]},
        {"encode_covariates": True},
    ),
}


def _cells():
    adata = simulate_counts(n_cells=120, n_genes=30)
    adata.obs["plate"] = np.resize([1, 2, 10], adata.n_obs)
    adata.obs["lane"] = np.resize([3, 20], adata.n_obs)
    return adata


def _export(folder: Path, setup: dict, params: dict) -> pybridge.SCVI:
    adata = _cells()
    pybridge.SCVI.setup_anndata(adata, **setup)
    model = pybridge.SCVI(adata, n_hidden=16, n_latent=3, **params)
    model.train(max_epochs=3, batch_size=64, accelerator="cpu", progress=False)
    model.save_scvi_tools(folder / "model")
    adata.write_h5ad(folder / "adata.h5ad")
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[Path, pybridge.SCVI]]:
    root = tmp_path_factory.mktemp("export")
    out = {}
    for name, (setup, params) in CASES.items():
        (root / name).mkdir()
        out[name] = (root / name, _export(root / name, setup, params))
    return out


@pytest.fixture(scope="module")
def loaded_by_scvi_tools(exported) -> dict[str, Path]:
    """Run scvi-tools once over all cases; each case folder gets scvi_tools.npz or scvi_tools_error.txt."""
    folders = [str(folder) for folder, _ in exported.values()]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [str(SCVI_PYTHON), str(CHECK_SCRIPT), *folders],
        check=False, capture_output=True, text=True, timeout=300, env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {name: folder for name, (folder, _) in exported.items()}


@needs_scvi_tools
@pytest.mark.parametrize("case", list(CASES))
def test_scvi_tools_loads_the_export_and_computes_the_same_latent(case, exported, loaded_by_scvi_tools):
    folder, model = exported[case]
    error = folder / "scvi_tools_error.txt"
    assert not error.exists(), error.read_text() if error.exists() else ""
    theirs = np.load(folder / "scvi_tools.npz")
    qzm, qzv = model.get_latent_representation(return_dist=True)
    np.testing.assert_allclose(theirs["qzm"], qzm, atol=1e-5)
    np.testing.assert_allclose(theirs["qzv"], qzv, atol=1e-5, rtol=1e-5)
    # the decoder reads batch and covariate codes, so equal expression means equal category codes
    normalized = model.get_normalized_expression(return_numpy=True)
    np.testing.assert_allclose(theirs["normalized"], normalized, atol=1e-6, rtol=1e-5)


def test_category_types_are_those_scvi_tools_writes(exported):
    """scvi-tools writes the default field's category as integer 0 and keeps an obs column's own type."""
    def mappings(case: str) -> dict:
        fields = read_model_pt(exported[case][0] / "model" / "model.pt")["attr_dict"]["registry_"]["field_registries"]
        return {
            "batch": fields["batch"]["state_registry"]["categorical_mapping"],
            "labels": fields["labels"]["state_registry"]["categorical_mapping"],
            **fields["extra_categorical_covs"]["state_registry"].get("mappings", {}),
        }

    no_batch = mappings("no_batch")
    assert no_batch["batch"].dtype == np.int64 and no_batch["batch"].tolist() == [0]
    assert no_batch["labels"].dtype == np.int64 and no_batch["labels"].tolist() == [0]
    named = mappings("batch_and_labels")
    assert named["batch"].dtype == object and named["batch"].tolist() == ["b0", "b1"]
    assert named["labels"].tolist() == ["type0", "type1", "type2"]
    numeric = mappings("numeric_categories")
    model = exported["numeric_categories"][1]
    assert numeric["batch"].dtype == np.int64
    assert numeric["batch"].tolist() == [int(c) for c in model.registry.batch_categories]  # pybridge's code order
    assert numeric["lane"].dtype == np.int64 and numeric["lane"].tolist() == [20, 3]


def test_matryoshka_option_is_left_out_of_init_params(tmp_path):
    adata = _cells()
    pybridge.SCVI.setup_anndata(adata, batch_key="batch")
    model = pybridge.SCVI(adata, n_hidden=8, n_latent=4, matryoshka_dims=[2], encode_covariates=True)
    model.save_scvi_tools(tmp_path)
    init = read_model_pt(tmp_path / "model.pt")["attr_dict"]["init_params_"]
    assert init["non_kwargs"]["n_latent"] == 4 and "matryoshka_dims" not in init["non_kwargs"]
    assert init["kwargs"]["kwargs"]["encode_covariates"] is True
