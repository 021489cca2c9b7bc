"""The scVI generative model and its amortised posterior (the math; the user-facing class is SCVI)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pybridge.data.stores import sparse_csr
from pybridge.nn import distributions as D
from pybridge.nn.layers import DecoderSCVI, Encoder
from pybridge.nn.loss import LossOutput

DISPERSIONS = ("gene", "gene-batch", "gene-label", "gene-cell")
LIKELIHOODS = ("zinb", "nb", "poisson")
LATENTS = ("normal", "ln")
NORM_OPTIONS = ("encoder", "decoder", "none", "both")


def _gaussian_kl_to_standard(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    return 0.5 * (var + mean.square() - 1.0 - torch.log(var)).sum(-1)


def _gaussian_kl(mean: torch.Tensor, var: torch.Tensor, prior_mean: torch.Tensor, prior_var: torch.Tensor):
    return 0.5 * (torch.log(prior_var / var) + (var + (mean - prior_mean).square()) / prior_var - 1.0).sum(-1)


def _gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    return (-0.5 * (torch.log(2 * torch.pi * var) + (x - mean).square() / var)).sum(-1)


class SCVIModule(nn.Module):
    """Variational autoencoder for counts: z ~ N(0, I), x | z ~ ZINB / NB / Poisson(library * softmax(f(z)))."""

    def __init__(
        self,
        n_input: int,
        n_batch: int = 1,
        n_labels: int = 1,
        n_hidden: int = 128,
        n_latent: int = 10,
        n_layers: int = 1,
        n_continuous_cov: int = 0,
        n_cats_per_cov: Sequence[int] = (),
        dropout_rate: float = 0.1,
        dispersion: str = "gene",
        gene_likelihood: str = "zinb",
        latent_distribution: str = "normal",
        use_observed_lib_size: bool = True,
        encode_covariates: bool = False,
        deeply_inject_covariates: bool = True,
        use_batch_norm: str = "both",
        use_layer_norm: str = "none",
        library_log_means=None,
        library_log_vars=None,
        integer_counts: bool = True,
        matryoshka_dims: Sequence[int] | None = None,
    ):
        super().__init__()
        self.integer_counts = integer_counts
        self.matryoshka_dims = list(matryoshka_dims) if matryoshka_dims else None
        self.n_input, self.n_batch, self.n_labels, self.n_latent = n_input, n_batch, n_labels, n_latent
        self.dispersion, self.gene_likelihood = dispersion, gene_likelihood
        self.latent_distribution = latent_distribution
        self.use_observed_lib_size, self.encode_covariates = use_observed_lib_size, encode_covariates
        self.n_continuous_cov = n_continuous_cov
        shape = {"gene": (n_input,), "gene-batch": (n_input, n_batch), "gene-label": (n_input, n_labels)}
        if dispersion in shape:
            self.px_r = nn.Parameter(torch.randn(*shape[dispersion]))
        cat_list = [n_batch, *n_cats_per_cov]
        encoder_cats = cat_list if encode_covariates else []
        n_input_encoder = n_input + n_continuous_cov * encode_covariates
        enc_norm = {
            "use_batch_norm": use_batch_norm in ("encoder", "both"),
            "use_layer_norm": use_layer_norm in ("encoder", "both"),
        }
        self.z_encoder = Encoder(
            n_input_encoder, n_latent, encoder_cats, n_layers, n_hidden, dropout_rate,
            inject_covariates=deeply_inject_covariates, **enc_norm,
        )
        if not use_observed_lib_size:
            self.l_encoder = Encoder(
                n_input_encoder, 1, encoder_cats, 1, n_hidden, dropout_rate,
                inject_covariates=deeply_inject_covariates, **enc_norm,
            )
            self.register_buffer("library_log_means", torch.as_tensor(library_log_means, dtype=torch.float32).reshape(1, -1))
            self.register_buffer("library_log_vars", torch.as_tensor(library_log_vars, dtype=torch.float32).reshape(1, -1))
        self.decoder = DecoderSCVI(
            n_latent + n_continuous_cov, n_input, cat_list, n_layers, n_hidden,
            inject_covariates=deeply_inject_covariates,
            use_batch_norm=use_batch_norm in ("decoder", "both"),
            use_layer_norm=use_layer_norm in ("decoder", "both"),
        )

    # ---- inference -------------------------------------------------------------------------------------
    def _encoder_inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list]:
        """log1p of the counts (a sparse CSR tensor stays sparse: log1p of its stored values) and the encoder's
        covariates."""
        counts = batch["X"]
        if counts.layout == torch.sparse_csr and self.encode_covariates and "cont_covs" in batch:
            counts = counts.to_dense()
        if counts.layout == torch.sparse_csr:
            x = sparse_csr(counts.crow_indices(), counts.col_indices(), torch.log1p(counts.values()), counts.shape)
        else:
            x = torch.log1p(counts)
        if self.encode_covariates and "cont_covs" in batch:
            x = torch.cat([x, batch["cont_covs"]], dim=-1)
        cats = self._cat_inputs(batch, batch["batch"]) if self.encode_covariates else []
        return x, cats

    @staticmethod
    def _cat_inputs(batch: dict[str, torch.Tensor], batch_index: torch.Tensor) -> list:
        cats = [batch_index]
        if "cat_covs" in batch:
            cats.extend(batch["cat_covs"].unbind(-1))
        return cats

    def inference(self, batch: dict[str, torch.Tensor], n_samples: int = 1, sample: bool = True) -> dict:
        """Posterior parameters and samples; with ``n_samples > 1`` samples have a leading sample axis.

        A minified minibatch (``qz_m``, ``qz_v`` and log ``library`` instead of ``X``) skips the encoder.
        """
        if "qz_m" in batch:
            return self._cached_inference(batch, n_samples, sample)
        x_in, cats = self._encoder_inputs(batch)
        qz_m, qz_v = self.z_encoder(x_in, *cats)
        out = {"qz_m": qz_m, "qz_v": qz_v}
        shape = (n_samples, *qz_m.shape) if n_samples > 1 else qz_m.shape
        if sample:
            out["untran_z"] = qz_m + qz_v.sqrt() * torch.randn(shape, device=qz_m.device)
        else:
            out["untran_z"] = qz_m.expand(shape) if n_samples > 1 else qz_m
        if self.use_observed_lib_size:
            library = torch.log(_row_sums(batch["X"]))
            out["library"] = library.expand(n_samples, *library.shape) if n_samples > 1 else library
        else:
            ql_m, ql_v = self.l_encoder(x_in, *cats)
            out["ql_m"], out["ql_v"] = ql_m, ql_v
            lshape = (n_samples, *ql_m.shape) if n_samples > 1 else ql_m.shape
            out["library"] = ql_m + ql_v.sqrt() * torch.randn(lshape, device=ql_m.device) if sample else ql_m.expand(lshape)
        out["z"] = self.transform_latent(out["untran_z"])
        return out

    def _cached_inference(self, batch: dict[str, torch.Tensor], n_samples: int, sample: bool) -> dict:
        qz_m, qz_v, library = batch["qz_m"], batch["qz_v"], batch["library"]
        shape = (n_samples, *qz_m.shape) if n_samples > 1 else qz_m.shape
        if sample:
            untran_z = qz_m + qz_v.sqrt() * torch.randn(shape, device=qz_m.device)
        else:
            untran_z = qz_m.expand(shape) if n_samples > 1 else qz_m
        out = {"qz_m": qz_m, "qz_v": qz_v, "untran_z": untran_z, "z": self.transform_latent(untran_z)}
        out["library"] = library.expand(n_samples, *library.shape) if n_samples > 1 else library
        return out

    def transform_latent(self, untran_z: torch.Tensor) -> torch.Tensor:
        return F.softmax(untran_z, dim=-1) if self.latent_distribution == "ln" else untran_z

    # ---- generative ------------------------------------------------------------------------------------
    def generative(
        self,
        z: torch.Tensor,
        library: torch.Tensor,
        batch: dict[str, torch.Tensor],
        batch_index: torch.Tensor | None = None,
        rates: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Likelihood parameters for latent ``z`` ([n, d] or [S, n, d]) and log-library ``library``.

        ``px_log_rate`` is always returned; ``px_scale``/``px_rate`` only with ``rates`` (training needs neither).
        """
        lead, z2 = z.shape[:-1], z.reshape(-1, z.shape[-1])
        hidden, batch_index, n_rep = self._decoder_hidden(z2, batch, batch_index)
        logits = self.decoder.px_scale_decoder(hidden).float()  # float32 from here on, also under autocast
        log_scale = F.log_softmax(logits, dim=-1)
        out = {"px_logits": logits, "px_log_rate": library.reshape(-1, 1) + log_scale}
        if rates:
            out["px_scale"] = torch.exp(log_scale)
            out["px_rate"] = torch.exp(out["px_log_rate"])
        if self.gene_likelihood != "poisson":
            out["px_r"] = self._theta(hidden, batch, batch_index, n_rep)
        if self.gene_likelihood == "zinb":
            out["px_dropout"] = self.decoder.px_dropout_decoder(hidden).float()
        return {k: v.reshape(*lead, v.shape[-1]) if v.dim() == 2 and v.shape[0] == z2.shape[0] else v for k, v in out.items()}

    def scale_logits(
        self, z: torch.Tensor, batch: dict[str, torch.Tensor], batch_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The logits of the gene frequencies (``px_scale`` is their softmax) alone: no library, dispersion or
        dropout head, for outputs that need nothing else. Shaped like ``z``'s leading axes x genes."""
        hidden, _, _ = self._decoder_hidden(z.reshape(-1, z.shape[-1]), batch, batch_index)
        return self.decoder.px_scale_decoder(hidden).float().reshape(*z.shape[:-1], -1)

    def _decoder_hidden(
        self, z2: torch.Tensor, batch: dict[str, torch.Tensor], batch_index: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The decoder's hidden layer for ``z2`` ([S * n, d]), with the batch codes and the number of samples S."""
        batch_index = batch["batch"] if batch_index is None else batch_index
        n_rep = z2.shape[0] // batch_index.shape[0]
        dec_in = z2
        if "cont_covs" in batch:
            dec_in = torch.cat([z2, batch["cont_covs"].repeat(n_rep, 1)], dim=-1)
        cats = [c.repeat(n_rep) for c in self._cat_inputs(batch, batch_index)]
        return self.decoder.hidden(dec_in, *cats), batch_index, n_rep

    def _theta(self, hidden, batch, batch_index, n_rep) -> torch.Tensor:
        if self.dispersion == "gene-cell":
            return torch.exp(self.decoder.px_r_decoder(hidden).float())
        if self.dispersion == "gene":
            return torch.exp(self.px_r)
        codes = batch_index if self.dispersion == "gene-batch" else batch["labels"]
        return torch.exp(self.px_r.T.index_select(0, codes.reshape(-1).long().repeat(n_rep)))

    def sample_counts(self, gen: dict) -> torch.Tensor:
        if self.gene_likelihood == "poisson":
            return D.sample_poisson(gen["px_rate"])
        theta = gen["px_r"].expand_as(gen["px_rate"])
        if self.gene_likelihood == "nb":
            return D.sample_nb(gen["px_rate"], theta)
        return D.sample_zinb(gen["px_rate"], theta, gen["px_dropout"])

    @staticmethod
    def _log_x_factorial(batch: dict) -> torch.Tensor:
        if "log_x_factorial" in batch:
            return batch["log_x_factorial"]
        return torch.lgamma(batch["X"] + 1).sum(-1)

    def _library_prior(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        codes = batch["batch"].reshape(-1).long()
        return self.library_log_means[0, codes].unsqueeze(-1), self.library_log_vars[0, codes].unsqueeze(-1)

    def log_likelihood_sum(self, x: torch.Tensor, gen: dict) -> torch.Tensor:
        """Per-cell sum of log p(x | z) without the constant -lgamma(x + 1) (fused kernel, evaluated in fp32)."""
        return D.count_log_lik_sum(
            x, gen["px_log_rate"], gen.get("px_r"), gen.get("px_dropout"), integer_counts=self.integer_counts
        )

    def loss(self, batch: dict[str, torch.Tensor], kl_weight: float = 1.0) -> LossOutput:
        inf = self.inference(batch)
        gen = self.generative(inf["z"], inf["library"], batch, rates=False)
        rec = -self.log_likelihood_sum(batch["X"], gen) + self._log_x_factorial(batch)
        kl_z = _gaussian_kl_to_standard(inf["qz_m"], inf["qz_v"])
        kl_l = torch.zeros_like(kl_z)
        if not self.use_observed_lib_size:
            kl_l = _gaussian_kl(inf["ql_m"], inf["ql_v"], *self._library_prior(batch))
        loss = (rec + kl_weight * kl_z + kl_l).mean()
        if self.matryoshka_dims and self.training:
            loss = loss + self._matryoshka_prefix_loss(batch, inf, kl_weight)
        return LossOutput(loss=loss, reconstruction=rec, kl_local=kl_z + kl_l)

    def _matryoshka_prefix_loss(self, batch: dict, inf: dict, kl_weight: float) -> torch.Tensor:
        """Negative ELBOs of the nested prefixes k < n_latent (latent dims >= k at the prior mean 0), summed."""
        total = torch.zeros((), device=inf["z"].device)
        kl_per_dim = 0.5 * (inf["qz_v"] + inf["qz_m"].square() - 1.0 - torch.log(inf["qz_v"]))
        log_fact = self._log_x_factorial(batch)
        for k in self.matryoshka_dims:
            if k >= self.n_latent:
                continue
            untran = torch.cat([inf["untran_z"][..., :k], torch.zeros_like(inf["untran_z"][..., k:])], dim=-1)
            gen = self.generative(self.transform_latent(untran), inf["library"], batch, rates=False)
            rec_k = -self.log_likelihood_sum(batch["X"], gen) + log_fact
            total = total + (rec_k + kl_weight * kl_per_dim[..., :k].sum(-1)).mean()
        return total

    @torch.inference_mode()
    def marginal_ll(self, batch: dict[str, torch.Tensor], n_mc_samples: int, chunk: int = 64) -> torch.Tensor:
        """Per-cell importance-sampling estimate of log p(x), samples drawn ``chunk`` at a time."""
        log_weights = []
        remaining = n_mc_samples
        log_fact = self._log_x_factorial(batch)
        while remaining > 0:
            s = min(chunk, remaining)
            inf = self.inference(batch, n_samples=s)
            if s == 1:
                inf.update({k: inf[k].unsqueeze(0) for k in ("untran_z", "z", "library")})
            gen = self.generative(inf["z"], inf["library"], batch, rates=False)
            log_px = self.log_likelihood_sum(batch["X"], gen) - log_fact
            zu = inf["untran_z"]
            log_w = log_px + _gaussian_log_density(zu, torch.zeros_like(zu), torch.ones_like(zu))
            log_w = log_w - _gaussian_log_density(zu, inf["qz_m"], inf["qz_v"])
            if not self.use_observed_lib_size:
                lib = inf["library"]
                prior_m, prior_v = self._library_prior(batch)
                log_w = log_w + _gaussian_log_density(lib, prior_m, prior_v)
                log_w = log_w - _gaussian_log_density(lib, inf["ql_m"], inf["ql_v"])
            log_weights.append(log_w)
            remaining -= s
        all_w = torch.cat(log_weights, dim=0)
        return torch.logsumexp(all_w, dim=0) - torch.log(torch.tensor(float(n_mc_samples)))


def _row_sums(counts: torch.Tensor) -> torch.Tensor:
    """Per-cell totals [n, 1] of dense or sparse CSR counts."""
    if counts.layout == torch.sparse_csr:
        return torch.sparse.mm(counts, counts.values().new_ones(counts.shape[1], 1))
    return counts.sum(-1, keepdim=True)
