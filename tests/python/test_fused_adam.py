"""FusedAdam: the same updates as torch.optim.Adam(fused=True), and training never imports the compiler."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from pybridge.train.adam import FusedAdam, make_adam


def _run(optimizer_factory, steps: int = 5) -> list[torch.Tensor]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    opt = optimizer_factory(net.parameters())
    data = torch.randn(16, 7)
    for _ in range(steps):
        loss = net(data).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return [p.detach().clone() for p in net.parameters()]


def test_fused_adam_matches_torch_adam_bit_for_bit():
    kwargs = {"lr": 1e-2, "eps": 0.01, "weight_decay": 1e-3}
    ours = _run(lambda p: FusedAdam(p, **kwargs))
    reference = _run(lambda p: torch.optim.Adam(p, fused=True, **kwargs))
    for a, b in zip(ours, reference):
        assert torch.equal(a, b)


def test_parameters_without_gradient_are_left_alone():
    frozen, trained = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = make_adam([frozen, trained], lr=0.1, eps=1e-8, weight_decay=0.0)
    trained.sum().backward()
    opt.step()
    assert torch.equal(frozen, torch.ones(3)) and not torch.equal(trained, torch.ones(3))
    opt.zero_grad()
    assert trained.grad is None


TRAIN_WITHOUT_COMPILER = """
import sys
import anndata, numpy as np, scipy.sparse as sp
from pybridge.models.scvi import SCVI
rng = np.random.default_rng(0)
adata = anndata.AnnData(sp.csr_matrix(rng.poisson(1.0, (200, 50)).astype(np.float32)))
SCVI.setup_anndata(adata)
SCVI(adata).train(max_epochs=2, progress=False)
print(sorted(m for m in ("torch._dynamo", "sympy") if m in sys.modules))
"""


def test_training_does_not_import_the_compiler():
    """torch.optim imports torch._dynamo and sympy (about 1.2 s of a fresh process); pybridge's default path must not."""
    done = subprocess.run(
        [sys.executable, "-c", TRAIN_WITHOUT_COMPILER], capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYBRIDGE_COMPILE": "auto"}, check=True,
    )
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr
