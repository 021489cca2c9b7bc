"""scvi-tools' ``train()`` keywords in pybridge's terms.

A script written for scvi-tools 1.4 passes Lightning and training-plan keywords (``enable_progress_bar``,
``check_val_every_n_epoch``, ``devices``, ``plan_kwargs={...}``). What has a meaning here is mapped onto
pybridge's own argument; the rest is refused by name with what to use instead, never silently ignored.
"""

from __future__ import annotations

from typing import Any

import torch

from pybridge.errors import PybridgeError

# scvi-tools keyword -> pybridge's ``train()`` argument of the same meaning
TRAINER_KEYWORDS = {
    "enable_progress_bar": "progress",
    "check_val_every_n_epoch": "validation_every",
    "early_stopping_monitor": "early_stopping_monitor",
    "early_stopping_min_delta": "early_stopping_min_delta",
    "early_stopping_warmup_epochs": "early_stopping_warmup_epochs",
    "precision": "precision",
    "max_steps": "max_steps",  # Lightning's: stop after that many optimizer steps (Trainer's max_steps)
}
PLAN_KEYWORDS = {
    "lr": "lr",
    "weight_decay": "weight_decay",
    "eps": "eps",
    "n_epochs_kl_warmup": "n_epochs_kl_warmup",
    "max_kl_weight": "max_kl_weight",
}

_CONSTANT_LR = "pybridge trains with a constant learning rate; choose lr= (or stop earlier with early_stopping=True)"
_NO_LIGHTNING = "pybridge's loop has no Lightning trainer; drop it"
# scvi-tools keywords without a counterpart here -> what to use instead
REFUSED = {
    "shuffle_set_split": "the train/validation split is always random (seed= chooses it); to choose the cells, "
                         "subset the AnnData before setup_anndata",
    "load_sparse_tensor": "sparse counts are already gathered on the device minibatch by minibatch; drop it",
    "datasplitter_kwargs": "pass train_size=, validation_size= and batch_size= to train() directly",
    "datamodule": "data come from the AnnData given to the model; for data on disk use "
                  "pybridge.data.disk.open_backed(path)",
    "plan_config": "pass the training-plan settings (lr, weight_decay, eps, n_epochs_kl_warmup) to train() directly",
    "trainer_config": "pass the trainer settings to train() directly",
    "n_steps_kl_warmup": "the KL warm-up is counted in epochs: use n_epochs_kl_warmup=",
    "min_kl_weight": "the KL weight rises linearly from 0; use n_epochs_kl_warmup= and max_kl_weight=",
    "reduce_lr_on_plateau": _CONSTANT_LR, "lr_factor": _CONSTANT_LR, "lr_patience": _CONSTANT_LR,
    "lr_threshold": _CONSTANT_LR, "lr_scheduler_metric": _CONSTANT_LR, "lr_min": _CONSTANT_LR,
    "optimizer_creator": "pybridge trains with Adam (optimizer='Adam'); set lr=, weight_decay=, eps=",
    "compile": "pybridge does not torch.compile the module; drop it",
    "compile_kwargs": "pybridge does not torch.compile the module; drop it",
    "early_stopping_mode": "early stopping watches a loss, which must go down ('min'); drop it",
    "callbacks": "pass progress=callable(epoch, max_epochs, record) to be called after every epoch",
    "logger": _NO_LIGHTNING + "; the per-epoch metrics are in model.history",
    "log_every_n_steps": _NO_LIGHTNING + "; the per-epoch metrics are in model.history",
    "enable_checkpointing": _NO_LIGHTNING + "; save the trained model with model.save(dir)",
    "default_root_dir": _NO_LIGHTNING + "; save the trained model with model.save(dir)",
    "enable_model_summary": _NO_LIGHTNING + "; print(model) shows the architecture",
    "simple_progress_bar": "use enable_progress_bar= (or progress=)",
    "progress_bar_refresh_rate": "use enable_progress_bar= (or progress=)",
    "gradient_clip_val": "pybridge does not clip gradients; lower lr= if the loss diverges",
    "num_sanity_val_steps": _NO_LIGHTNING,
    "benchmark": _NO_LIGHTNING,
    "learning_rate_monitor": _CONSTANT_LR,
}


def translate_train_kwargs(
    train_kwargs: dict[str, Any], plan_kwargs: dict[str, Any] | None, given: dict[str, Any], defaults: dict[str, Any]
) -> dict[str, Any]:
    """pybridge ``train()`` arguments for scvi-tools' ``**trainer_kwargs`` and ``plan_kwargs``.

    ``given`` holds the pybridge arguments of the call, ``defaults`` their default values: a keyword that
    contradicts an explicit pybridge argument is refused rather than one of them silently winning.
    """
    mapped: dict[str, Any] = {}
    train_kwargs = dict(train_kwargs)
    if train_kwargs.get("early_stopping_mode", "min") == "min":
        train_kwargs.pop("early_stopping_mode", None)  # the only mode: early stopping watches a loss
    for source, table, values in (
        ("train()", TRAINER_KEYWORDS, train_kwargs), ("plan_kwargs", PLAN_KEYWORDS, dict(plan_kwargs or {})),
    ):
        optimizer = values.pop("optimizer", "Adam") if source == "plan_kwargs" else "Adam"
        if optimizer != "Adam":
            raise PybridgeError(f"plan_kwargs keyword 'optimizer' is {optimizer!r}: pybridge trains with Adam; drop it")
        for key, value in values.items():
            if key in table:
                mapped[table[key]] = value
            elif key in REFUSED:
                raise PybridgeError(f"{source} keyword {key!r} (scvi-tools) has no counterpart here: {REFUSED[key]}")
            else:
                raise PybridgeError(
                    f"{source} got an unexpected keyword {key!r}; the scvi-tools keywords pybridge maps there are "
                    f"{sorted(table)}"
                )
    for name, value in mapped.items():
        if name in given and given[name] != defaults[name] and given[name] != value:
            raise PybridgeError(f"{name} is given twice with different values ({given[name]!r} and {value!r})")
    return mapped


def device_for(devices: int | str | list[int] | None, device: int | str | None) -> int | str | None:
    """pybridge's single ``device`` for scvi-tools' ``devices`` ("auto", 1, [i], "i" or "i,")."""
    if devices is None or (not isinstance(devices, (list, tuple)) and devices in ("auto", 1, "1")):
        return device
    if isinstance(devices, str):
        parts = [p for p in devices.split(",") if p.strip()]
        devices = [int(p) for p in parts] if all(p.strip().isdigit() for p in parts) else devices
    if isinstance(devices, (list, tuple)) and len(devices) == 1:
        index = int(devices[0])
        if device not in (None, "auto", index):
            raise PybridgeError(f"devices={devices!r} and device={device!r} disagree; pass one of them")
        return index
    raise PybridgeError(
        f"devices={devices!r}: one process trains on one device (devices=[i] picks GPU i); to train on several, "
        "launch with torchrun --nproc_per_node=N (docs/scaling.md)"
    )


# Lightning's precision names -> the autocast dtype of the training forward pass (None: float32 throughout)
PRECISIONS = {"32": None, "32-true": None, "bf16": torch.bfloat16, "bf16-mixed": torch.bfloat16}


def autocast_dtype(precision: int | str) -> torch.dtype | None:
    """The dtype the linear layers run in for Lightning's ``precision`` ("32-true" or "bf16-mixed").

    float16 is refused: without loss scaling its gradients underflow, and bfloat16 has float32's range.
    """
    key = str(precision)
    if key in PRECISIONS:
        return PRECISIONS[key]
    if key in ("16", "16-mixed"):
        raise PybridgeError(
            f"precision={precision!r}: float16 training needs loss scaling, which pybridge does not do; use "
            "precision='bf16-mixed' (same speed-up on GPUs with bfloat16, float32's range)"
        )
    raise PybridgeError(f"precision={precision!r} is not supported; use '32-true' (default) or 'bf16-mixed'")
