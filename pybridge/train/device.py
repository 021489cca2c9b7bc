"""Choosing the compute device."""

from __future__ import annotations

import torch

from pybridge.errors import PybridgeError


def resolve_device(accelerator: str = "auto", device: int | str | None = None) -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU; ``"gpu"``/``"cuda"`` insist on CUDA."""
    if accelerator not in ("auto", "cpu", "gpu", "cuda"):
        raise PybridgeError(f"accelerator must be 'auto', 'cpu', 'gpu' or 'cuda', got {accelerator!r}")
    if accelerator == "cpu":
        return torch.device("cpu")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise PybridgeError(f"accelerator={accelerator!r} but no CUDA device is available; use accelerator='cpu'")
    if torch.cuda.is_available():
        index = 0 if device in (None, "auto") else int(device)
        return torch.device(f"cuda:{index}")
    return torch.device("cpu")
