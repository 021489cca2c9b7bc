"""Model directories: weights in ``model.safetensors``, everything else in ``model.json``; atomic writes.

Nothing here unpickles: safetensors holds raw tensors and JSON holds metadata. ``model.json`` records the
SHA-256 of the weights file so that a truncated or modified file is refused with a clear message.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pybridge.errors import PybridgeError

WEIGHTS = "model.safetensors"
META = "model.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_model_dir(
    dir_path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict, overwrite: bool = False
) -> Path:
    """Write weights and metadata into a fresh temporary directory, then move it into place."""
    target = Path(dir_path)
    if target.exists() and not overwrite:
        raise PybridgeError(f"{target} already exists; pass overwrite=True to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(staging / WEIGHTS))
        meta = dict(meta, weights_sha256=_sha256(staging / WEIGHTS))
        with open(staging / META, "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        mask = _umask()  # mkdtemp makes 0o700; give the modes a plain mkdir/open would
        for f in (staging / WEIGHTS, staging / META):
            os.chmod(f, 0o666 & ~mask)
        os.chmod(staging, 0o777 & ~mask)
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, retired / target.name)
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def load_model_dir(dir_path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[dict, dict]:
    """Read ``(tensors, meta)`` from a model directory, refusing missing, truncated or modified files."""
    path = Path(dir_path)
    weights, meta_file = path / WEIGHTS, path / META
    for f in (weights, meta_file):
        if not f.is_file():
            raise PybridgeError(f"{f} not found: {path} is not a pybridge model directory")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PybridgeError(f"{meta_file} is not valid JSON ({err}); the file is truncated or corrupted") from None
    expected = meta.get("weights_sha256")
    if expected is None or _sha256(weights) != expected:
        raise PybridgeError(
            f"{weights} does not match the checksum recorded in {meta_file}: the file is truncated or was "
            f"modified; re-save the model from its source"
        )
    try:
        tensors = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError) as err:
        raise PybridgeError(f"{weights} cannot be read as safetensors ({err})") from None
    return tensors, meta
