"""The registry: which layer and obs columns a model reads, and how categories map to integer codes.

The registry is a small JSON-serialisable record of which layer and obs columns a model reads and how
categories map to integer codes; it is stored in ``adata.uns["_pybridge_setup"]`` (a JSON string, so it
survives ``write_h5ad``) and in every saved model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from anndata import AnnData

from pybridge.errors import PybridgeError

SETUP_KEY = "_pybridge_setup"


@dataclass
class Registry:
    """What a model reads from an AnnData and how categories are coded."""

    layer: str | None = None
    batch_key: str | None = None
    labels_key: str | None = None
    categorical_covariate_keys: list[str] = field(default_factory=list)
    continuous_covariate_keys: list[str] = field(default_factory=list)
    batch_categories: list[str] = field(default_factory=lambda: ["0"])
    label_categories: list[str] = field(default_factory=lambda: ["0"])
    covariate_categories: dict[str, list[str]] = field(default_factory=dict)
    var_names: list[str] = field(default_factory=list)
    allow_non_integer: bool = False

    @property
    def n_batch(self) -> int:
        return len(self.batch_categories)

    @property
    def n_labels(self) -> int:
        return len(self.label_categories)

    @property
    def n_cats_per_cov(self) -> list[int]:
        return [len(self.covariate_categories[k]) for k in self.categorical_covariate_keys]

    @property
    def layer_name(self) -> str:
        return "adata.X" if self.layer is None else f'adata.layers["{self.layer}"]'

    def describe(self) -> str:
        """A readable summary: the counts' layer, each registered obs column with its categories, the genes."""

        def categories(values: list[str]) -> str:
            shown = ", ".join(values[:8]) + (f", ... ({len(values)} in all)" if len(values) > 8 else "")
            return f"{len(values)} categories: {shown}"

        lines = [f"counts: {self.layer_name}" + (" (non-integer allowed)" if self.allow_non_integer else "")]
        if self.batch_key is not None:
            lines.append(f"batch: obs[{self.batch_key!r}], {categories(self.batch_categories)}")
        if self.labels_key is not None:
            lines.append(f"labels: obs[{self.labels_key!r}], {categories(self.label_categories)}")
        for key in self.categorical_covariate_keys:
            lines.append(f"categorical covariate: obs[{key!r}], {categories(self.covariate_categories[key])}")
        for key in self.continuous_covariate_keys:
            lines.append(f"continuous covariate: obs[{key!r}]")
        genes = ", ".join(self.var_names[:5]) + (", ..." if len(self.var_names) > 5 else "")
        lines.append(f"genes: {len(self.var_names)} ({genes})")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> Registry:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def registry_of(adata: AnnData) -> Registry:
    """The registry stored by ``setup_anndata``."""
    if SETUP_KEY not in adata.uns:
        raise PybridgeError("adata is not set up; call pybridge.SCVI.setup_anndata(adata, ...) first")
    return Registry.from_dict(json.loads(adata.uns[SETUP_KEY]))
