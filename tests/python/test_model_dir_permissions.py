"""Saved model directories and files get the modes the user's umask gives (issue 11, item 6)."""

import os
import stat

import pytest
import torch

from pybridge.io.model_dir import META, WEIGHTS, save_model_dir


@pytest.mark.parametrize(("mask", "dir_mode", "file_mode"), [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_save_model_dir_follows_umask(tmp_path, mask, dir_mode, file_mode):
    old = os.umask(mask)
    try:
        target = save_model_dir(tmp_path / "m", {"w": torch.zeros(2)}, {"a": 1})
        # overwrite goes through the same path
        save_model_dir(target, {"w": torch.ones(2)}, {"a": 2}, overwrite=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == dir_mode
    for name in (WEIGHTS, META):
        assert stat.S_IMODE((target / name).stat().st_mode) == file_mode
