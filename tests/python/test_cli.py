"""The command line: train and decode end to end, --help, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import anndata as ad
import numpy as np
import pytest

import pybridge
from pybridge.cli.main import main


def _run(*args):
    return subprocess.run([sys.executable, "-m", "pybridge.cli.main", *args], check=False, capture_output=True, text=True)


def test_train_then_decode(small_adata, tmp_path):
    data = tmp_path / "in.h5ad"
    small_adata.write_h5ad(data)
    code = main(["train", str(data), "--output", str(tmp_path / "model"), "--max-epochs", "2", "--n-latent", "3",
                 "--batch-key", "batch", "--gene-likelihood", "nb", "--no-progress"])
    assert code == 0
    latent = ad.read_h5ad(tmp_path / "model" / "latent.h5ad")
    assert latent.obsm["X_scVI"].shape == (300, 3)
    out = tmp_path / "decoded.h5ad"
    assert main(["decode", str(tmp_path / "model"), str(data), "--genes", "gene2", "gene0", "--output", str(out),
                 "--library-size", "10000"]) == 0
    decoded = ad.read_h5ad(out)
    assert list(decoded.var_names) == ["gene2", "gene0"] and decoded.shape == (300, 2)
    assert np.all(decoded.X > 0) and np.all(decoded.X < 10000)


def test_help_documents_options():
    result = _run("train", "--help")
    assert result.returncode == 0
    for option in ("--layer", "--batch-key", "--labels-key", "--max-epochs", "--n-latent", "--gene-likelihood"):
        assert option in result.stdout


def test_errors_are_one_line_exit_2(small_adata, tmp_path):
    result = _run("train", str(tmp_path / "missing.h5ad"), "--output", str(tmp_path / "m"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no such file" in result.stderr
    data = tmp_path / "in.h5ad"
    small_adata.write_h5ad(data)
    result = _run("train", str(data), "--output", str(tmp_path / "m"), "--batch-key", "nope")
    assert result.returncode == 2 and "batch_key 'nope' is not a column" in result.stderr
    assert "Traceback" not in result.stderr


def test_backed_training_and_its_errors(small_adata, tmp_path, capsys):
    data = tmp_path / "in.h5ad"
    small_adata.write_h5ad(data)
    code = main(["train", str(data), "--output", str(tmp_path / "model"), "--max-epochs", "2", "--n-latent", "3",
                 "--batch-key", "batch", "--backed", "--buffer-cells", "50", "--no-progress"])
    assert code == 0
    latent = ad.read_h5ad(tmp_path / "model" / "latent.h5ad")
    assert latent.X is None and latent.obsm["X_scVI"].shape == (300, 3)
    for extra, message in ((["--allow-non-integer"], "not available with --backed"),
                           (["--buffer-cells", "0"], "--buffer-cells must be >= 1")):
        assert main(["train", str(data), "--output", str(tmp_path / "m2"), "--backed", *extra]) == 2
        assert message in capsys.readouterr().err
    assert main(["train", str(tmp_path / "x.rds"), "--output", str(tmp_path / "m3"), "--backed"]) == 2
    assert "--backed reads .h5ad or .zarr" in capsys.readouterr().err
    assert main(["train", str(data), "--output", str(tmp_path / "m4"), "--buffer-cells", "10"]) == 2
    assert "--buffer-cells only applies with --backed" in capsys.readouterr().err


def test_train_refuses_existing_output_and_prints_elbo_with_get_elbo_sign(small_adata, tmp_path, capsys):
    data = tmp_path / "in.h5ad"
    small_adata.write_h5ad(data)
    out = tmp_path / "model"
    args = ["train", str(data), "--output", str(out), "--max-epochs", "2", "--n-latent", "3", "--no-progress",
            "--train-size", "0.8"]
    assert main(args) == 0
    line = capsys.readouterr().err
    elbo = float(line.split("validation ELBO ")[1].split()[0])
    model = pybridge.SCVI.load(out, adata=small_adata)
    # the same quantity as get_elbo() on the validation cells (z is sampled, so equal up to Monte Carlo noise)
    assert elbo == pytest.approx(model.get_elbo(indices=model.validation_indices), rel=0.01)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--overwrite" in err and "overwrite=True" not in err


def test_commands_refuse_existing_output_without_overwrite(tmp_path, capsys):
    out = tmp_path / "out.h5ad"
    out.write_bytes(b"keep me")
    model, data = str(tmp_path / "model"), str(tmp_path / "in.h5ad")
    for argv in (["minify", model, data, "--output", str(out)],
                 ["decode", model, data, "--output", str(out)],
                 ["deconvolve", "--reference", data, "--spots", data, "--output", str(out)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert str(out) in err and "--overwrite" in err and len(err.splitlines()) == 1, err
    assert main(["train", data, "--output", str(tmp_path / "new_model"), "--latent-output", str(out)]) == 2
    assert str(out) in capsys.readouterr().err and not (tmp_path / "new_model").exists()
    assert out.read_bytes() == b"keep me"
