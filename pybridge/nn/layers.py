"""Neural building blocks shared by the models: fully connected stacks, encoders and the scVI decoder."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn


def one_hot_covariates(cat_list: Sequence[torch.Tensor | None], n_cat_list: Sequence[int]) -> torch.Tensor | None:
    """Concatenate one-hot encodings of categorical covariates (categories with one level carry nothing).

    Codes are compared with each category rather than passed to ``F.one_hot``, whose range check reads the codes
    back from a GPU at every call; they were checked against the categories when the data were set up.
    """
    parts = [
        (codes.reshape(-1, 1) == torch.arange(n_cat, device=codes.device)).to(torch.get_default_dtype())
        for codes, n_cat in zip(cat_list, n_cat_list)
        if n_cat > 1 and codes is not None
    ]
    return torch.cat(parts, dim=-1) if parts else None


class FCLayers(nn.Module):
    """Linear -> (BatchNorm) -> (LayerNorm) -> ReLU -> Dropout, repeated, with one-hot covariates concatenated
    to the input of the first layer, or of every layer when ``inject_covariates``."""

    def __init__(
        self,
        n_in: int,
        n_out: int,
        n_cat_list: Sequence[int] = (),
        n_layers: int = 1,
        n_hidden: int = 128,
        dropout_rate: float = 0.1,
        use_batch_norm: bool = True,
        use_layer_norm: bool = False,
        inject_covariates: bool = True,
    ):
        super().__init__()
        self.n_cat_list = [n if n > 1 else 0 for n in n_cat_list]
        n_cov = sum(self.n_cat_list)
        sizes = [n_in] + [n_hidden] * (n_layers - 1) + [n_out]
        self.inject = [i == 0 or inject_covariates for i in range(n_layers)]
        self.layers = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(itertools.pairwise(sizes)):
            block = [nn.Linear(d_in + n_cov * self.inject[i], d_out)]
            if use_batch_norm:
                block.append(nn.BatchNorm1d(d_out, momentum=0.01, eps=1e-3))
            if use_layer_norm:
                block.append(nn.LayerNorm(d_out, elementwise_affine=False))
            block.append(nn.ReLU())
            if dropout_rate > 0:
                block.append(nn.Dropout(dropout_rate))
            self.layers.append(nn.Sequential(*block))

    def forward(self, x: torch.Tensor, *cat_list: torch.Tensor | None) -> torch.Tensor:
        """``x`` may be a sparse CSR tensor: the first layer is then one sparse product (no densified input)."""
        cov = one_hot_covariates(cat_list, self.n_cat_list) if sum(self.n_cat_list) else None
        for layer, inject in zip(self.layers, self.inject):
            covariates = cov if inject else None
            if x.layout == torch.sparse_csr:
                x = layer[1:](_sparse_linear(layer[0], x, covariates))
                continue
            if covariates is not None:
                x = torch.cat([x, covariates], dim=-1)
            x = layer(x)
        return x


def _sparse_linear(linear: nn.Linear, x: torch.Tensor, covariates: torch.Tensor | None) -> torch.Tensor:
    """``linear`` of the sparse CSR ``x`` with the dense ``covariates`` appended, without concatenating them."""
    n_in = x.shape[1]
    out = torch.sparse.mm(x, linear.weight[:, :n_in].t())
    if covariates is not None:
        out = torch.addmm(out, covariates, linear.weight[:, n_in:].t())
    return out + linear.bias


class Encoder(nn.Module):
    """Maps an input to the mean and variance of a diagonal Gaussian; ``return_dist`` style outputs."""

    def __init__(
        self,
        n_input: int,
        n_output: int,
        n_cat_list: Sequence[int] = (),
        n_layers: int = 1,
        n_hidden: int = 128,
        dropout_rate: float = 0.1,
        use_batch_norm: bool = True,
        use_layer_norm: bool = False,
        inject_covariates: bool = True,
        var_eps: float = 1e-4,
    ):
        super().__init__()
        self.encoder = FCLayers(
            n_input, n_hidden, n_cat_list, n_layers, n_hidden, dropout_rate,
            use_batch_norm, use_layer_norm, inject_covariates,
        )
        self.mean_encoder = nn.Linear(n_hidden, n_output)
        self.var_encoder = nn.Linear(n_hidden, n_output)
        self.var_eps = var_eps

    def forward(self, x: torch.Tensor, *cat_list: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(x, *cat_list)  # under autocast the outputs leave the layers in float32
        return self.mean_encoder(hidden).float(), torch.exp(self.var_encoder(hidden).float()) + self.var_eps


class DecoderSCVI(nn.Module):
    """scVI decoder: latent -> hidden -> (softmax gene frequencies, optional per-cell dispersion, dropout logits)."""

    def __init__(
        self,
        n_input: int,
        n_output: int,
        n_cat_list: Sequence[int] = (),
        n_layers: int = 1,
        n_hidden: int = 128,
        inject_covariates: bool = True,
        use_batch_norm: bool = False,
        use_layer_norm: bool = False,
    ):
        super().__init__()
        self.px_decoder = FCLayers(
            n_input, n_hidden, n_cat_list, n_layers, n_hidden, 0.0,
            use_batch_norm, use_layer_norm, inject_covariates,
        )
        self.px_scale_decoder = nn.Linear(n_hidden, n_output)
        self.px_r_decoder = nn.Linear(n_hidden, n_output)
        self.px_dropout_decoder = nn.Linear(n_hidden, n_output)

    def hidden(self, z: torch.Tensor, *cat_list: torch.Tensor | None) -> torch.Tensor:
        return self.px_decoder(z, *cat_list)
