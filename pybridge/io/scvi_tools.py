"""Read scvi-tools ``model.pt`` files without executing pickled code, and write pybridge models in that format.

scvi-tools saves ``{"model_state_dict", "var_names", "attr_dict"}`` with ``torch.save`` and loads it with
``weights_only=False``, so a downloaded model can run arbitrary code there. Here the file is read with
``torch.load(weights_only=True)`` and an explicit allow-list: tensors, plain containers, numpy arrays and
dtypes. pandas objects (scvi-tools pickles its training history as DataFrames) are replaced by inert
placeholders that run no pandas code and are dropped. Any other global makes the load fail with a clear error.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pybridge.data.minified import LIBRARY_KEY, MINIFY_TYPE_KEY, QZM_KEY, QZV_KEY
from pybridge.data.registry import Registry
from pybridge.errors import PybridgeError

MODEL_FILE = "model.pt"
SUPPORTED_KWARGS = {
    "n_hidden", "n_latent", "n_layers", "dropout_rate", "dispersion", "gene_likelihood", "latent_distribution",
    "use_observed_lib_size", "encode_covariates", "deeply_inject_covariates", "use_batch_norm", "use_layer_norm",
}
DEFAULTS_IGNORED = {"batch_representation": "one-hot", "var_activation": None, "use_size_factor_key": False}


class _Inert:
    """Stand-in for a pickled pandas object: accepts its constructor arguments and state, runs nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _inert(*args, **kwargs) -> _Inert:
    return _Inert()


def _plain_dict(*args) -> dict:
    """Stand-in for ``collections.defaultdict``: the contents without the default factory."""
    return {}


def _numpy_reconstruct():
    from numpy.core.multiarray import _reconstruct

    return _reconstruct


_DTYPE_CLASSES = sorted(
    {type(np.dtype(code)) for code in ("O", "U1", "S1", "b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8",
                                       "f2", "f4", "f8")},
    key=lambda t: t.__name__,
)


def _allow_list() -> list:
    reconstruct = _numpy_reconstruct()
    inert_names = [
        "pandas.core.frame.DataFrame", "pandas.core.series.Series", "pandas.core.indexes.base.Index",
        "pandas.core.indexes.range.RangeIndex", "pandas.core.internals.managers.BlockManager",
        "pandas.core.internals.managers.SingleBlockManager",
    ]
    return [
        (reconstruct, "numpy._core.multiarray._reconstruct"),
        (reconstruct, "numpy.core.multiarray._reconstruct"),
        np.ndarray, np.dtype, *_DTYPE_CLASSES, slice, dict, bytes, OrderedDict,
        (_plain_dict, "collections.defaultdict"),
        *[(_Inert, name) for name in inert_names],
        (_inert, "pandas._libs.internals._unpickle_block"),
        (_inert, "pandas.core.indexes.base._new_Index"),
    ]


def read_model_pt(path: str | os.PathLike) -> dict:
    """Load an scvi-tools ``model.pt`` with ``weights_only=True`` and the allow-list above."""
    path = Path(path)
    if not path.is_file():
        raise PybridgeError(f"{path} not found: an scvi-tools model directory holds model.pt")
    try:
        with torch.serialization.safe_globals(_allow_list()):
            saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several types, all meaning: refused
        first = _reason(err)
        raise PybridgeError(
            f"refusing to load {path}: it holds objects outside pybridge's allow-list of tensors, containers and "
            f"numpy arrays ({first}); loading it would execute pickled code"
        ) from None
    if not isinstance(saved, dict) or not {"model_state_dict", "attr_dict"} <= set(saved):
        raise PybridgeError(f"{path} is not an scvi-tools model file (expected model_state_dict and attr_dict)")
    return saved


def _reason(err: Exception) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            return rest or (lines[i + 1] if i + 1 < len(lines) else line)
    return lines[0] if lines else type(err).__name__


# ---- state dict --------------------------------------------------------------------------------------------
_FC = re.compile(r"\.fc_layers\.Layer (\d+)\.")


def state_dict_from_scvi_tools(state: dict, use_observed_lib_size: bool) -> dict[str, torch.Tensor]:
    """Rename scvi-tools VAE parameters to pybridge's SCVIModule names (same tensors, same math)."""
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        if use_observed_lib_size and key.startswith("l_encoder."):
            continue  # scvi-tools always builds the library encoder; unused with observed library sizes
        new = _FC.sub(r".layers.\1.", key).replace("px_scale_decoder.0.", "px_scale_decoder.")
        out[new] = value
    return out


def state_dict_to_scvi_tools(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse renaming (pybridge -> scvi-tools)."""
    out = {}
    for key, value in state.items():
        new = re.sub(r"\.encoder\.layers\.(\d+)\.", r".encoder.fc_layers.Layer \1.", key)
        new = re.sub(r"\.px_decoder\.layers\.(\d+)\.", r".px_decoder.fc_layers.Layer \1.", new)
        out[new.replace("px_scale_decoder.", "px_scale_decoder.0.")] = value.detach().cpu().clone()
    return out


# ---- registry and init params ---------------------------------------------------------------------------
def _strings(values) -> list[str]:
    return [str(v) for v in np.asarray(values).tolist()]


def registry_from_scvi_tools(attr_dict: dict, var_names) -> Registry:
    """pybridge's Registry from an scvi-tools ``registry_`` (setup_anndata only)."""
    reg = attr_dict.get("registry_", {})
    if reg.get("model_name") != "SCVI":
        raise PybridgeError(f"only scvi-tools SCVI models can be imported; this file holds {reg.get('model_name')!r}")
    if reg.get("setup_method_name", "setup_anndata") != "setup_anndata":
        raise PybridgeError("only models set up with SCVI.setup_anndata can be imported (not a datamodule)")
    args = reg.get("setup_args", {})
    if args.get("size_factor_key") is not None:
        raise PybridgeError("models trained with size_factor_key are not supported")
    fields = reg.get("field_registries", {})

    def state(name: str) -> dict:
        return fields.get(name, {}).get("state_registry", {})

    registry = Registry(
        layer=args.get("layer"),
        batch_key=args.get("batch_key"),
        labels_key=args.get("labels_key"),
        categorical_covariate_keys=list(args.get("categorical_covariate_keys") or []),
        continuous_covariate_keys=list(args.get("continuous_covariate_keys") or []),
        var_names=_strings(var_names),
    )
    if "categorical_mapping" in state("batch"):
        registry.batch_categories = _strings(state("batch")["categorical_mapping"])
    if registry.labels_key is not None and "categorical_mapping" in state("labels"):
        registry.label_categories = _strings(state("labels")["categorical_mapping"])
    mappings = state("extra_categorical_covs").get("mappings", {})
    registry.covariate_categories = {k: _strings(mappings[k]) for k in registry.categorical_covariate_keys}
    return registry


def init_params_from_scvi_tools(attr_dict: dict) -> dict:
    """SCVI constructor arguments from scvi-tools' ``init_params_``; refuses options pybridge lacks."""
    init = attr_dict.get("init_params_", {})
    params = dict(init.get("non_kwargs", {}))
    kwargs = init.get("kwargs", {})
    params.update(kwargs.get("kwargs", kwargs.get("model_kwargs", {})) if isinstance(kwargs, dict) else {})
    params.pop("adata", None)
    unknown = {k: v for k, v in params.items() if k not in SUPPORTED_KWARGS and DEFAULTS_IGNORED.get(k, object()) != v}
    if unknown:
        raise PybridgeError(f"this scvi-tools model uses options pybridge does not implement: {unknown}")
    return {k: v for k, v in params.items() if k in SUPPORTED_KWARGS}


# ---- load -----------------------------------------------------------------------------------------------
def read_scvi_tools(dir_path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], Registry, dict, bool]:
    """The parts of the scvi-tools SCVI model saved in ``dir_path``: pybridge state dict, registry, the
    architecture arguments it records, and whether it was trained (the model is built by the caller)."""
    dir_path = Path(dir_path)
    saved = read_model_pt(dir_path / MODEL_FILE)
    attr = saved["attr_dict"]
    var_names = saved.get("var_names")
    if var_names is None:
        x_state = attr.get("registry_", {}).get("field_registries", {}).get("X", {}).get("state_registry", {})
        var_names = x_state.get("column_names", [])
    registry = registry_from_scvi_tools(attr, var_names)
    if not registry.var_names:
        raise PybridgeError(f"{dir_path / MODEL_FILE} records no gene names (var_names)")
    params = init_params_from_scvi_tools(attr)
    state = state_dict_from_scvi_tools(saved["model_state_dict"], params.get("use_observed_lib_size", True))
    return state, registry, params, bool(attr.get("is_trained_", True))


# ---- export ---------------------------------------------------------------------------------------------
def save_scvi_tools(
    model, dir_path: str | os.PathLike, overwrite: bool = False, minified: bool = False
) -> None:
    """Write ``model`` as an scvi-tools 1.4 ``model.pt`` (plain dicts, tensors and numpy arrays only).

    With ``minified=True`` the registry also names the minified fields, so that scvi-tools loads the model
    with a minified AnnData (from ``model.minify()``) and serves it in its minified-data mode.
    """
    target = Path(dir_path)
    if (target / MODEL_FILE).exists() and not overwrite:
        raise PybridgeError(f"{target / MODEL_FILE} exists; pass overwrite=True to replace it")
    target.mkdir(parents=True, exist_ok=True)
    reg = model.registry
    state = state_dict_to_scvi_tools(model.module.state_dict())
    state.update(_library_encoder_placeholder(model))
    state["pyro_param_store"] = {"params": {}, "constraints": {}}
    var_names = np.asarray(reg.var_names, dtype=object)
    n_cells = 0 if model.adata is None else int(model.adata.n_obs)
    obs = None if model.adata is None else model.adata.obs
    attr = {
        "is_trained_": bool(model.is_trained),
        "init_params_": _scvi_tools_init_params(model._init_params),
        "registry_": _scvi_tools_registry(reg, n_cells, obs, model.module.n_latent if minified else None),
        "train_indices_": np.asarray(model.train_indices if model.train_indices is not None else [], np.int64),
        "validation_indices_": np.asarray(
            model.validation_indices if model.validation_indices is not None else [], np.int64
        ),
        "test_indices_": np.zeros(0, np.int64),
        "history_": {},
        "get_normalized_function_name_": "get_normalized_expression",
        "run_id_": "",
        "run_name_": "pybridge",
    }
    tmp = target / f".{MODEL_FILE}.tmp"
    torch.save({"model_state_dict": state, "var_names": var_names, "attr_dict": attr}, tmp)
    os.replace(tmp, target / MODEL_FILE)


# the arguments of scvi-tools' SCVI.__init__ itself; the others reach its VAE through **kwargs
_SCVI_NAMED_ARGS = (
    "n_hidden", "n_latent", "n_layers", "dropout_rate", "dispersion", "gene_likelihood", "use_observed_lib_size",
    "latent_distribution",
)


def _scvi_tools_init_params(params: dict) -> dict:
    """``init_params_`` as scvi-tools records them: SCVI's named arguments, the rest under ``kwargs``.

    ``matryoshka_dims`` is left out: it changes only the training objective, and scvi-tools' VAE rejects it.
    """
    named = {k: v for k, v in params.items() if k in _SCVI_NAMED_ARGS}
    extra = {k: v for k, v in params.items() if k not in _SCVI_NAMED_ARGS and k in SUPPORTED_KWARGS}
    return {"non_kwargs": named, "kwargs": {"kwargs": extra}}


def _library_encoder_placeholder(model) -> dict[str, torch.Tensor]:
    """scvi-tools always has an ``l_encoder``; with observed library sizes it is unused, so zeros fill it."""
    if not model._init_params.get("use_observed_lib_size", True):
        return {}
    enc = model.module.z_encoder
    out = {}
    for key, value in enc.state_dict().items():
        if key.startswith("encoder.layers.") and not key.startswith("encoder.layers.0."):
            continue  # scvi-tools' library encoder has one hidden layer
        new = re.sub(r"^encoder\.layers\.(\d+)\.", r"encoder.fc_layers.Layer \1.", key)
        if key.startswith(("mean_encoder", "var_encoder")):
            value = value[:1]
        out[f"l_encoder.{new}"] = torch.zeros_like(value)
    return out


def _minified_fields(n_latent: int) -> dict:
    def obsm(name: str, key: str) -> dict:
        return {
            "data_registry": {"attr_name": "obsm", "attr_key": key},
            "state_registry": {"column_names": np.arange(n_latent)},
            "summary_stats": {f"n_{name}": n_latent},
        }

    return {
        "latent_qzm": obsm("latent_qzm", QZM_KEY),
        "latent_qzv": obsm("latent_qzv", QZV_KEY),
        "observed_lib_size": {"data_registry": {"attr_name": "obs", "attr_key": LIBRARY_KEY},
                              "state_registry": {}, "summary_stats": {}},
        "minify_type": {"data_registry": {"attr_name": "uns", "attr_key": MINIFY_TYPE_KEY},
                        "state_registry": {}, "summary_stats": {}},
    }


def _typed_categories(categories: list[str], key: str | None, obs: pd.DataFrame | None) -> np.ndarray:
    """pybridge's category names (text, in code order) as the values of ``obs[key]`` they stand for.

    scvi-tools compares its saved categories with the values in the AnnData it loads a model with, so they
    must have the column's type (integers stay integers), as ``Categorical.categories.to_numpy()`` gives them.
    Without ``key`` the field is scvi-tools' default one, a single category ``0``. Without the column the
    names stay text.
    """
    if key is None:
        return np.zeros(1, np.int64)
    if obs is None or key not in obs.columns:
        return np.asarray(categories, dtype=object)
    column = obs[key]
    values = column.cat.categories if isinstance(column.dtype, pd.CategoricalDtype) else pd.unique(column.dropna())
    by_name = {str(v): v for v in values}
    return pd.Index([by_name.get(c, c) for c in categories]).to_numpy(copy=True)


def _scvi_tools_registry(
    reg: Registry, n_cells: int, obs: pd.DataFrame | None, minified_latent: int | None = None
) -> dict:
    import uuid

    def obs_field(key: str, role: str, categories: list[str], original: str | None) -> dict:
        mapping = _typed_categories(categories, original, obs)
        return {
            "data_registry": {"attr_name": "obs", "attr_key": key},
            "state_registry": {"categorical_mapping": mapping, "original_key": original or key},
            "summary_stats": {f"n_{role}": len(mapping)},
        }

    batch = obs_field("_scvi_batch", "batch", reg.batch_categories, reg.batch_key)
    labels = obs_field("_scvi_labels", "labels", reg.label_categories, reg.labels_key)
    fields = {
        "X": {
            "data_registry": {"attr_name": "X" if reg.layer is None else "layers", "attr_key": reg.layer},
            "state_registry": {
                "n_obs": n_cells, "n_vars": len(reg.var_names),
                "column_names": np.asarray(reg.var_names, dtype=object),
            },
            "summary_stats": {"n_vars": len(reg.var_names), "n_cells": n_cells},
        },
        "batch": batch,
        "labels": labels,
        "size_factor": {"data_registry": {}, "state_registry": {}, "summary_stats": {}},
        "extra_categorical_covs": _extra_categorical(reg, obs),
        "extra_continuous_covs": _extra_continuous(reg),
    }
    if minified_latent is not None:
        fields.update(_minified_fields(minified_latent))
    return {
        "scvi_version": "1.4.2",
        "model_name": "SCVI",
        "setup_args": {
            "layer": reg.layer, "batch_key": reg.batch_key, "labels_key": reg.labels_key, "size_factor_key": None,
            "categorical_covariate_keys": reg.categorical_covariate_keys or None,
            "continuous_covariate_keys": reg.continuous_covariate_keys or None,
        },
        "field_registries": fields,
        "setup_method_name": "setup_anndata",
        "_scvi_uuid": str(uuid.uuid4()),
    }


def _extra_categorical(reg: Registry, obs: pd.DataFrame | None) -> dict:
    if not reg.categorical_covariate_keys:
        return {"data_registry": {}, "state_registry": {}, "summary_stats": {"n_extra_categorical_covs": 0}}
    return {
        "data_registry": {"attr_name": "obsm", "attr_key": "_scvi_extra_categorical_covs"},
        "state_registry": {
            "mappings": {
                k: _typed_categories(reg.covariate_categories[k], k, obs) for k in reg.categorical_covariate_keys
            },
            "field_keys": list(reg.categorical_covariate_keys),
            "n_cats_per_key": list(reg.n_cats_per_cov),
        },
        "summary_stats": {"n_extra_categorical_covs": len(reg.categorical_covariate_keys)},
    }


def _extra_continuous(reg: Registry) -> dict:
    if not reg.continuous_covariate_keys:
        return {"data_registry": {}, "state_registry": {}, "summary_stats": {"n_extra_continuous_covs": 0}}
    return {
        "data_registry": {"attr_name": "obsm", "attr_key": "_scvi_extra_continuous_covs"},
        "state_registry": {"columns": np.asarray(reg.continuous_covariate_keys, dtype=object)},
        "summary_stats": {"n_extra_continuous_covs": len(reg.continuous_covariate_keys)},
    }
