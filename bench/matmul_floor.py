"""The matrix-product floor of one scVI training step, timed bare.

A step's unavoidable work is three [batch x n_genes]-sized matrix products: the encoder's first layer
(n_genes -> n_hidden, forward plus the weight gradient; the counts need no gradient) and the two decoder heads
of a ZINB model with gene dispersion (n_hidden -> n_genes each: the scale and the dropout logits; forward plus
weight and input gradients), about 6 x n_hidden x n_genes FLOP per cell and matrix. This module times exactly
those products, with autograd as a training step runs them, and nothing else: no likelihood, no optimiser.
A tool's time over the same cells divided into this floor is the fraction of the floor it reaches.
"""

from __future__ import annotations

import time


def floor_seconds_per_cell(
    n_genes: int, n_hidden: int = 128, batch_size: int = 128, device: str = "cpu",
    steps: int = 50, repeats: int = 3, dtype: str = "float32",
) -> float:
    """Best-of-``repeats`` seconds per cell of the bare encoder-first-layer + 2 decoder-head products."""
    import torch

    dev = torch.device(device)
    kind = getattr(torch, dtype)
    generator = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(batch_size, n_genes, generator=generator).to(dev, kind)
    encoder = torch.nn.Linear(n_genes, n_hidden).to(dev, kind)
    heads = [torch.nn.Linear(n_hidden, n_genes).to(dev, kind) for _ in range(2)]
    hidden = torch.rand(batch_size, n_hidden, generator=generator).to(dev, kind)
    upstream = [torch.ones(batch_size, n_hidden, device=dev, dtype=kind)]  # gradients arriving from above
    upstream += [torch.ones(batch_size, n_genes, device=dev, dtype=kind) for _ in heads]

    def step() -> None:
        h = hidden.detach().requires_grad_()
        outputs = [encoder(x), *(head(h) for head in heads)]
        torch.autograd.backward(outputs, upstream)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for _ in range(5):
        step()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        best = min(best, (time.perf_counter() - start) / steps)
    return best / batch_size
