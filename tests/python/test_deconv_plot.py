"""Maps of cell-type proportions at the spots' coordinates: the figure's content, bad input, `deconvolve --plot`."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from pybridge.cli.main import main as cli_main
from pybridge.deconvolution import plot_spot_proportions
from pybridge.errors import PybridgeError

TYPES = ["astro", "neuron", "oligo"]


@pytest.fixture
def spots() -> ad.AnnData:
    """Six spots with coordinates and proportions (rows sum to 1)."""
    rng = np.random.default_rng(0)
    names = [f"spot{i}" for i in range(6)]
    adata = ad.AnnData(np.zeros((6, 2), dtype=np.float32), obs=pd.DataFrame(index=names))
    adata.obsm["spatial"] = np.array([[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1]], dtype=float) * 10
    adata.obsm["destvi_proportions"] = pd.DataFrame(rng.dirichlet(np.ones(3), 6), index=names, columns=TYPES)
    return adata


def _panels(fig):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def test_one_panel_per_cell_type_with_the_coordinates_and_proportions(spots):
    fig = plot_spot_proportions(spots)
    panels = _panels(fig)
    assert [ax.get_title() for ax in panels] == TYPES
    for ax, cell_type in zip(panels, TYPES):
        (points,) = ax.collections
        np.testing.assert_array_equal(points.get_offsets(), spots.obsm["spatial"])
        np.testing.assert_allclose(points.get_array(), spots.obsm["destvi_proportions"][cell_type].to_numpy())
        assert points.get_clim() == (0.0, 1.0)
    assert len(fig.axes) == len(TYPES) + 1  # one shared colour bar


def test_chosen_cell_types_in_the_given_order(spots):
    fig = plot_spot_proportions(spots, ["oligo", "astro"], ncols=1)
    assert [ax.get_title() for ax in _panels(fig)] == ["oligo", "astro"]
    assert [ax.get_title() for ax in _panels(plot_spot_proportions(spots, "neuron"))] == ["neuron"]


def test_refuses_missing_coordinates_proportions_and_unknown_types(spots):
    no_xy = spots.copy()
    del no_xy.obsm["spatial"]
    with pytest.raises(PybridgeError, match=r"obsm has no 'spatial'.*adata.obsm\['spatial'\]"):
        plot_spot_proportions(no_xy)
    no_props = spots.copy()
    del no_props.obsm["destvi_proportions"]
    with pytest.raises(PybridgeError, match=r"obsm has no 'destvi_proportions'.*pybridge deconvolve"):
        plot_spot_proportions(no_props)
    with pytest.raises(PybridgeError, match=r"unknown cell type\(s\) \['glia'\].*'astro', 'neuron', 'oligo'"):
        plot_spot_proportions(spots, ["astro", "glia"])
    with pytest.raises(PybridgeError, match="cell_types is empty"):
        plot_spot_proportions(spots, [])
    spots.obsm["spatial"] = spots.obsm["spatial"][:, :1]
    with pytest.raises(PybridgeError, match=r"spots x 2"):
        plot_spot_proportions(spots)


@pytest.fixture
def cli_files(tmp_path):
    """A two-type reference of 80 cells and 20 spots (sums of its cells) on a grid, as .h5ad files."""
    rng = np.random.default_rng(1)
    profiles = rng.gamma(2.0, 2.0, size=(2, 60))
    labels = np.repeat(["A", "B"], 40)
    genes = [f"g{i}" for i in range(60)]
    ref = ad.AnnData(rng.poisson(profiles[(labels == "B").astype(int)]).astype(np.float32),
                     obs=pd.DataFrame({"cell_type": labels}, index=[f"c{i}" for i in range(80)]),
                     var=pd.DataFrame(index=genes))
    members = rng.integers(0, 80, size=(20, 3))
    spots = ad.AnnData(ref.X[members].sum(1), obs=pd.DataFrame(index=[f"s{i}" for i in range(20)]),
                       var=pd.DataFrame(index=genes))
    spots.obsm["spatial"] = np.stack(np.divmod(np.arange(20), 5), axis=1).astype(float)
    ref.write_h5ad(tmp_path / "ref.h5ad")
    spots.write_h5ad(tmp_path / "spots.h5ad")
    del spots.obsm["spatial"]
    spots.write_h5ad(tmp_path / "no_xy.h5ad")
    return tmp_path


def _deconvolve(tmp_path, spots, *extra):
    return cli_main(["deconvolve", "--reference", str(tmp_path / "ref.h5ad"), "--spots", str(tmp_path / spots),
                     "--output", str(tmp_path / "out.h5ad"), "--sc-max-epochs", "1", "--st-max-epochs", "1",
                     "--accelerator", "cpu", "--no-progress", *extra])


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_cli_plot_writes_a_png_and_refuses_early(cli_files, capsys):
    png = cli_files / "map.png"
    assert _deconvolve(cli_files, "spots.h5ad", "--plot", str(png), "--plot-cell-types", "B") == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "map in" in capsys.readouterr().err
    # an existing plot needs --overwrite; nothing is trained or written
    (cli_files / "out.h5ad").unlink()
    assert _deconvolve(cli_files, "spots.h5ad", "--plot", str(png)) == 2
    assert "--overwrite" in capsys.readouterr().err and not (cli_files / "out.h5ad").exists()
    # refused before training: no coordinates, unknown cell type, unsupported format, types without --plot
    for spots, extra, message in (
        ("no_xy.h5ad", ["--plot", str(cli_files / "new.png")], "--plot needs the spots' coordinates"),
        ("spots.h5ad", ["--plot", str(cli_files / "new.png"), "--plot-cell-types", "C"], "unknown cell type"),
        ("spots.h5ad", ["--plot", str(cli_files / "new.jpg2")], "must end in one of"),
        ("spots.h5ad", ["--plot-cell-types", "A"], "needs --plot FILE"),
    ):
        assert _deconvolve(cli_files, spots, *extra) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not (cli_files / "out.h5ad").exists() and not (cli_files / "new.png").exists()
