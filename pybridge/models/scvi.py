"""SCVI: the user-facing scVI model (scvi-tools 1.4 API and defaults)."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData

from pybridge import de, decoding
from pybridge.data.fields import aligned_counts, covariate_arrays, require_unique_names
from pybridge.data.minified import require_counts
from pybridge.data.registry import Registry
from pybridge.errors import PybridgeError
from pybridge.io import scvi_tools
from pybridge.models._scvi_module import DISPERSIONS, LATENTS, LIKELIHOODS, NORM_OPTIONS, SCVIModule
from pybridge.models.base import ENCODER_CHUNK, BaseModel
from pybridge.train.device import resolve_device


def _check_choice(name: str, value, options) -> None:
    if value not in options:
        raise PybridgeError(f"{name} must be one of {list(options)}, got {value!r}")


def library_log_stats(X, batch_codes: np.ndarray, n_batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-batch mean and variance of log library size (the latent-library prior)."""
    log_lib = np.log(np.asarray(X.sum(axis=1)).reshape(-1))
    means, variances = np.zeros(n_batch), np.ones(n_batch)
    for b in range(n_batch):
        values = log_lib[batch_codes == b]
        if values.size:
            means[b] = values.mean()
            variances[b] = max(values.var(), 1e-4)
    return means, variances


def _matryoshka_dims(dims: Sequence[int], n_latent: int) -> list[int]:
    """Sorted unique prefix sizes, ending at ``n_latent``."""
    values = sorted({int(d) for d in dims})
    if not values or values[0] < 1 or values[-1] > n_latent:
        raise PybridgeError(f"matryoshka_dims must lie in [1, n_latent={n_latent}], got {list(dims)}")
    return values if values[-1] == n_latent else [*values, n_latent]


class SCVI(BaseModel):
    """single-cell Variational Inference (Lopez et al. 2018) in plain PyTorch.

    Call :meth:`setup_anndata` first; arguments and defaults follow scvi-tools 1.4.
    """

    _mixed_precision = True

    def __init__(
        self,
        adata: AnnData,
        n_hidden: int = 128,
        n_latent: int = 10,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        dispersion: str = "gene",
        gene_likelihood: str = "zinb",
        latent_distribution: str = "normal",
        use_observed_lib_size: bool = True,
        encode_covariates: bool = False,
        deeply_inject_covariates: bool = True,
        use_batch_norm: str = "both",
        use_layer_norm: str = "none",
        matryoshka_dims: Sequence[int] | None = None,
    ):
        self._refuse_minified(adata, "SCVI(adata)")
        super().__init__(adata)
        _check_choice("dispersion", dispersion, DISPERSIONS)
        _check_choice("gene_likelihood", gene_likelihood, LIKELIHOODS)
        _check_choice("latent_distribution", latent_distribution, LATENTS)
        _check_choice("use_batch_norm", use_batch_norm, NORM_OPTIONS)
        _check_choice("use_layer_norm", use_layer_norm, NORM_OPTIONS)
        if dispersion == "gene-label" and self.registry.labels_key is None:
            raise PybridgeError("dispersion='gene-label' needs labels_key in setup_anndata")
        self._init_params = {
            "n_hidden": n_hidden, "n_latent": n_latent, "n_layers": n_layers, "dropout_rate": dropout_rate,
            "dispersion": dispersion, "gene_likelihood": gene_likelihood, "latent_distribution": latent_distribution,
            "use_observed_lib_size": use_observed_lib_size, "encode_covariates": encode_covariates,
            "deeply_inject_covariates": deeply_inject_covariates, "use_batch_norm": use_batch_norm,
            "use_layer_norm": use_layer_norm,
        }
        if matryoshka_dims is not None:
            self._init_params["matryoshka_dims"] = _matryoshka_dims(matryoshka_dims, n_latent)
        library_stats = {}
        if not use_observed_lib_size:
            means, variances = library_log_stats(
                aligned_counts(adata, self.registry),
                covariate_arrays(adata, self.registry)["batch"],
                self.registry.n_batch,
            )
            library_stats = {"library_log_means": means, "library_log_vars": variances}
        self._init_module(self.registry, **self._init_params, **library_stats)

    @staticmethod
    def _build_module(registry: Registry, library_log_means=None, library_log_vars=None, **params) -> SCVIModule:
        if not params.get("use_observed_lib_size", True) and library_log_means is None:
            library_log_means = np.zeros(registry.n_batch)
            library_log_vars = np.ones(registry.n_batch)
        return SCVIModule(
            n_input=len(registry.var_names),
            n_batch=registry.n_batch,
            n_labels=registry.n_labels,
            n_continuous_cov=len(registry.continuous_covariate_keys),
            n_cats_per_cov=registry.n_cats_per_cov,
            library_log_means=library_log_means,
            library_log_vars=library_log_vars,
            integer_counts=not registry.allow_non_integer,
            **params,
        )

    # ---- helpers -----------------------------------------------------------------------------------------
    def _gene_mask(self, gene_list: Sequence[str] | None) -> np.ndarray | slice:
        if gene_list is None:
            return slice(None)
        require_unique_names(pd.Index(self.registry.var_names), "the model's genes")
        position = pd.Index(self.registry.var_names).get_indexer(list(gene_list))
        if (position < 0).any():
            missing = [g for g, p in zip(gene_list, position) if p < 0]
            raise PybridgeError(f"{len(missing)} requested genes are not in the model (e.g. {missing[:5]})")
        return position

    def _batch_codes(self, transform_batch) -> list[int | None]:
        if transform_batch is None:
            return [None]
        values = transform_batch if isinstance(transform_batch, (list, tuple)) else [transform_batch]
        codes = []
        for value in values:
            if str(value) not in self.registry.batch_categories:
                raise PybridgeError(
                    f"transform_batch {value!r} is not a batch category; known: {self.registry.batch_categories}"
                )
            codes.append(self.registry.batch_categories.index(str(value)))
        return codes

    def _frame(self, values: np.ndarray, adata: AnnData | None, indices, genes) -> pd.DataFrame:
        adata = self._adata(adata)
        # through obs, so that a store on disk (open_minified) reads only the names of these cells
        obs = adata.obs_names if indices is None else adata.obs.iloc[self._rows(adata, indices)].index
        return pd.DataFrame(values, index=obs, columns=genes)

    # ---- outputs -----------------------------------------------------------------------------------------
    def _n_cells(self, adata: AnnData | None, indices) -> int:
        rows = self._rows(adata, indices)
        return self._adata(adata).n_obs if rows is None else len(rows)

    def _posterior(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(z | x): the encoder alone (a minified minibatch carries them)."""
        if "qz_m" in batch:
            return batch["qz_m"], batch["qz_v"]
        x_in, cats = self.module._encoder_inputs(batch)
        return self.module.z_encoder(x_in, *cats)

    @torch.inference_mode()
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices=None,
        give_mean: bool = True,
        mc_samples: int = 5000,
        batch_size: int | None = None,
        return_dist: bool = False,
        n_latent: int | None = None,
    ):
        """Posterior mean (or a sample) of z per cell; ``return_dist=True`` gives (qz_m, qz_v).

        ``n_latent=k`` keeps the first k dimensions (for models trained with ``matryoshka_dims``). The mean and
        the distribution need the encoder only; a sample draws through the full inference, as before.
        """
        k = self.module.n_latent if n_latent is None else int(n_latent)
        if not 1 <= k <= self.module.n_latent:
            raise PybridgeError(f"n_latent must be between 1 and the model's {self.module.n_latent} latent dimensions")
        n = self._n_cells(adata, indices)
        means, variances, latents = (_HostRows((n, k)) for _ in range(3))
        start = 0
        encoder_only = give_mean or return_dist
        size = batch_size or (ENCODER_CHUNK if encoder_only else None)
        for batch in self._minibatches(adata, indices, size, sparse_counts=True):
            if give_mean or return_dist:
                qz_m, qz_v = self._posterior(batch)
            else:
                inf = self.module.inference(batch, sample=True)
                qz_m, qz_v = inf["qz_m"], inf["qz_v"]
            stop = start + qz_m.shape[0]
            if return_dist:
                means.put(start, stop, qz_m[:, :k])
                variances.put(start, stop, qz_v[:, :k])
            elif self.module.latent_distribution == "ln" and give_mean:
                draws = qz_m + qz_v.sqrt() * torch.randn(mc_samples, *qz_m.shape, device=self.device)
                latents.put(start, stop, self.module.transform_latent(draws).mean(0)[:, :k])
            else:
                latents.put(start, stop, qz_m[:, :k] if give_mean else inf["z"][:, :k])
            start = stop
        if return_dist:
            return means.array, variances.array
        return latents.array

    @torch.inference_mode()
    def get_normalized_expression(
        self,
        adata: AnnData | None = None,
        indices=None,
        transform_batch=None,
        gene_list: Sequence[str] | None = None,
        library_size: float | str = 1,
        n_samples: int = 1,
        return_mean: bool = True,
        return_numpy: bool = False,
        batch_size: int | None = None,
    ):
        """Expected frequencies scaled to ``library_size`` (or ``"latent"``: the cell's own library).

        Averaged over ``n_samples`` posterior draws (and over the ``transform_batch`` categories) when
        ``return_mean``; else an array [n_samples, cells, genes]. With ``n_samples=1`` z is the posterior mean.
        """
        genes = self._gene_mask(gene_list)
        codes = self._batch_codes(transform_batch)
        n_genes = len(self.registry.var_names) if isinstance(genes, slice) else len(genes)
        samples = (n_samples,) if n_samples > 1 and not return_mean else ()
        out, start = _HostRows((*samples, self._n_cells(adata, indices), n_genes)), 0
        for batch in self._minibatches(adata, indices, batch_size, sparse_counts=True):
            inf = self.module.inference(batch, n_samples=n_samples, sample=n_samples > 1)
            value = None
            for code in codes:
                bidx = None if code is None else torch.full_like(batch["batch"], code)
                if library_size == "latent":
                    gen = self.module.generative(inf["z"], inf["library"], batch, bidx, rates=False)
                    part = torch.exp(gen["px_log_rate"][..., genes])
                else:
                    part = torch.softmax(self.module.scale_logits(inf["z"], batch, bidx), dim=-1)[..., genes]
                    if library_size != 1:
                        part.mul_(float(library_size))
                value = part if value is None else value.add_(part)
            if len(codes) > 1:
                value.div_(len(codes))
            if n_samples > 1 and return_mean:
                value = value.mean(0)
            stop = start + batch["batch"].shape[0]
            out.put(start, stop, value)
            start = stop
        result = out.array
        if return_numpy or result.ndim == 3:
            return result
        names = np.asarray(self.registry.var_names)[genes]
        return self._frame(result, adata, indices, names)

    @torch.inference_mode()
    def posterior_predictive_sample(
        self,
        adata: AnnData | None = None,
        indices=None,
        n_samples: int = 1,
        gene_list: Sequence[str] | None = None,
        batch_size: int | None = None,
    ):
        """Counts drawn from the posterior predictive: CSR [cells, genes] or dense [cells, genes, n_samples]."""
        genes = self._gene_mask(gene_list)
        draws = []
        for batch in self._minibatches(adata, indices, batch_size, sparse_counts=True):
            inf = self.module.inference(batch, n_samples=n_samples)
            gen = self.module.generative(inf["z"], inf["library"], batch, rates=False)
            gen["px_rate"] = torch.exp(gen["px_log_rate"])
            counts = self.module.sample_counts(gen)[..., genes]
            draws.append(sp.csr_matrix(counts.cpu().numpy()) if n_samples == 1 else counts.permute(1, 2, 0).cpu().numpy())
        if n_samples == 1:
            return sp.vstack(draws, format="csr")
        return np.concatenate(draws, axis=0)

    @torch.inference_mode()
    def get_likelihood_parameters(
        self, adata: AnnData | None = None, indices=None, n_samples: int = 1, give_mean: bool = False,
        batch_size: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Per-cell likelihood parameters: ``mean``, ``dispersions`` (theta) and ``dropout`` (zero-inflation
        probability), each [cells, genes] (or [n_samples, cells, genes] unless ``give_mean``)."""
        samples = (n_samples,) if n_samples > 1 and not give_mean else ()
        shape = (*samples, self._n_cells(adata, indices), len(self.registry.var_names))
        parts: dict[str, _HostRows] = {}
        start = 0
        for batch in self._minibatches(adata, indices, batch_size, sparse_counts=True):
            inf = self.module.inference(batch, n_samples=n_samples)
            gen = self.module.generative(inf["z"], inf["library"], batch, rates=False)
            values = {"mean": torch.exp(gen["px_log_rate"])}
            if "px_r" in gen:
                values["dispersions"] = gen["px_r"].expand_as(values["mean"])
            if "px_dropout" in gen:
                values["dropout"] = torch.sigmoid(gen["px_dropout"])
            stop = start + batch["batch"].shape[0]
            for key, value in values.items():
                parts.setdefault(key, _HostRows(shape)).put(start, stop, value.mean(0) if n_samples > 1 and give_mean else value)
            start = stop
        return {key: rows.array for key, rows in parts.items()}

    def get_elbo(self, adata: AnnData | None = None, indices=None, batch_size: int | None = None) -> float:
        """Per-cell mean ELBO (a lower bound on log p(x); higher is better, as in scvi-tools)."""
        terms = self._evaluate(adata, indices, batch_size, "get_elbo")
        return -(terms["reconstruction_loss"] + terms["kl_local"])

    def get_reconstruction_error(
        self, adata: AnnData | None = None, indices=None, batch_size: int | None = None
    ) -> dict[str, float]:
        """Per-cell mean negative log p(x | z) under ``{"reconstruction_loss": ...}`` (lower is better).

        The sign is that of scvi-tools 1.4.2's return value (a positive NLL).
        """
        terms = self._evaluate(adata, indices, batch_size, "get_reconstruction_error")
        return {"reconstruction_loss": terms["reconstruction_loss"]}

    @torch.inference_mode()
    def get_marginal_ll(
        self, adata: AnnData | None = None, indices=None, n_mc_samples: int = 1000, batch_size: int | None = None,
        mc_chunk: int = 64,
    ) -> float:
        """Per-cell mean importance-sampling estimate of log p(x) (higher is better)."""
        require_counts(self._adata(adata), "get_marginal_ll")
        total, n = 0.0, 0
        for batch in self._minibatches(adata, indices, batch_size or 256, likelihood=True):
            values = self.module.marginal_ll(batch, n_mc_samples, chunk=mc_chunk)
            total += values.sum().item()
            n += len(values)
        return total / max(n, 1)

    def differential_expression(
        self,
        adata: AnnData | None = None,
        groupby: str | None = None,
        group1=None,
        group2: str | None = None,
        idx1=None,
        idx2=None,
        mode: str = "vanilla",
        delta: float = 0.25,
        batch_size: int | None = None,
        all_stats: bool = True,
        batch_correction: bool = False,
        batchid1: list[str] | None = None,
        batchid2: list[str] | None = None,
        fdr_target: float = 0.05,
        **kwargs,
    ) -> pd.DataFrame:
        """Bayesian differential expression (scvi-tools layout); see :func:`pybridge.de.differential_expression`
        for the further keywords (``n_samples_overall``, ``n_cells_per_group``, ``pseudocounts``,
        ``threshold_counts``, ``seed``)."""
        return de.differential_expression(
            self, adata=adata, groupby=groupby, group1=group1, group2=group2, idx1=idx1, idx2=idx2, mode=mode,
            delta=delta, batch_size=batch_size, all_stats=all_stats, batch_correction=batch_correction,
            batchid1=batchid1, batchid2=batchid2, fdr_target=fdr_target, **kwargs,
        )

    # ---- minified data, decoding on demand, scvi-tools files ------------------------------------------------
    def minify(self, adata: AnnData | None = None, batch_size: int | None = None) -> AnnData:
        """A minified copy of ``adata`` in scvi-tools' layout; see :func:`pybridge.decoding.minify`."""
        return decoding.minify(self, adata, batch_size)

    def decode(
        self,
        adata: AnnData | None = None,
        cells=None,
        genes: Sequence[str] | None = None,
        library_size: float | str = 1,
        n_latent: int | None = None,
        chunk_size: int = 8192,
        as_dask: bool = False,
    ):
        """Expected expression of ``genes`` at z = posterior mean, streamed over cells; see
        :func:`pybridge.decoding.decode`."""
        return decoding.decode(self, adata, cells, genes, library_size, n_latent, chunk_size, as_dask)

    @classmethod
    def load_scvi_tools(cls, dir_path, adata: AnnData | None = None, accelerator: str = "auto") -> SCVI:
        """Load an scvi-tools ``model.pt`` without executing pickled code; see :mod:`pybridge.io.scvi_tools`."""
        state, registry, params, is_trained = scvi_tools.read_scvi_tools(dir_path)
        defaults = {
            k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
            if k in scvi_tools.SUPPORTED_KWARGS
        }
        return cls._restore(
            dir_path, state, registry, {**defaults, **params}, adata, resolve_device(accelerator), is_trained
        )

    def save_scvi_tools(self, dir_path, overwrite: bool = False, minified: bool = False) -> None:
        """Write this model as an scvi-tools 1.4 ``model.pt`` (readable by ``scvi.model.SCVI.load``); with
        ``minified=True`` for use with minified data (``scvi.model.SCVI.load(dir, adata=model.minify())``)."""
        scvi_tools.save_scvi_tools(self, dir_path, overwrite, minified)


class _HostRows:
    """A float32 host array of per-cell outputs (cells on axis -2), filled minibatch by minibatch without a
    concatenation at the end."""

    def __init__(self, shape: tuple[int, ...]):
        self.array = np.empty(shape, dtype=np.float32)
        self._host = torch.from_numpy(self.array)

    def put(self, start: int, stop: int, value: torch.Tensor) -> None:
        self._host[..., start:stop, :].copy_(value)
