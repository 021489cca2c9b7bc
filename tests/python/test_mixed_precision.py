"""precision="bf16-mixed": linear layers in bfloat16 under autocast, likelihood and KL in float32, an ELBO like
float32 training's on real data; float16 and models without the float32 guarantees are refused by name."""

from __future__ import annotations

import pytest
import torch
from conftest import zeisel_cortex

from pybridge.errors import PybridgeError
from pybridge.models.condscvi import CondSCVI
from pybridge.models.scvi import SCVI
from pybridge.nn import distributions


def _cortex_model(n_cells: int = 600):
    adata = zeisel_cortex()[:n_cells].copy()
    SCVI.setup_anndata(adata)
    return SCVI(adata)


def test_bf16_mixed_runs_the_linear_layers_in_bfloat16_and_the_likelihood_in_float32(monkeypatch):
    model = _cortex_model()
    seen = {"linear": set(), "likelihood": set()}
    model.module.decoder.px_scale_decoder.register_forward_hook(
        lambda module, args, out: seen["linear"].add(out.dtype)
    )
    likelihood = distributions.count_log_lik_sum

    def recording_likelihood(*tensors, **kwargs):
        seen["likelihood"].update(t.dtype for t in tensors if t is not None)
        return likelihood(*tensors, **kwargs)

    monkeypatch.setattr(distributions, "count_log_lik_sum", recording_likelihood)
    model.train(max_epochs=1, precision="bf16-mixed", progress=False)
    assert torch.bfloat16 in seen["linear"]  # training forward passes
    assert seen["likelihood"] == {torch.float32}
    assert all(p.dtype == torch.float32 for p in model.module.parameters())


def test_bf16_mixed_reaches_the_float32_elbo_on_cortex():
    """All 3,005 cells for 8 epochs (measured gaps 0.11 % and 0.28 % over seeds 0 and 1; on 600 cells the
    trajectories are still too steep to compare, 1-3 %)."""
    elbos = {}
    for precision in ("32-true", "bf16-mixed"):
        model = _cortex_model(n_cells=3005)
        model.train(max_epochs=8, precision=precision, progress=False)
        elbos[precision] = model.history["elbo_validation"]["elbo_validation"].iloc[-1]
    assert abs(elbos["bf16-mixed"] / elbos["32-true"] - 1) < 0.01, elbos


@pytest.mark.parametrize(("precision", "message"), [
    ("16-mixed", "use precision='bf16-mixed'"),
    (64, "use '32-true' (default) or 'bf16-mixed'"),
])
def test_unsupported_precisions_are_refused(small_adata, precision, message):
    SCVI.setup_anndata(small_adata)
    with pytest.raises(PybridgeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SCVI(small_adata).train(max_epochs=1, precision=precision)


def test_models_without_float32_outputs_refuse_bf16(small_adata):
    CondSCVI.setup_anndata(small_adata, labels_key="cell_type")
    with pytest.raises(PybridgeError, match="available for SCVI; CondSCVI trains in float32"):
        CondSCVI(small_adata).train(max_epochs=1, precision="bf16-mixed")
