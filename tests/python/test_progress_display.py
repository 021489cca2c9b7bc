"""Where training progress goes: a bar in a terminal, a bar in a Jupyter kernel (text without ipywidgets, never
tqdm's IProgress warning), and one plain line per tenth of the epochs in logs, pipes and CI."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import types
import warnings

import torch
from tqdm.std import TqdmWarning

import pybridge
from pybridge.train.progress import in_jupyter_kernel, open_display

LINE = re.compile(r"^epoch (\d+)/(\d+)  train loss (\d+\.\d)  validation loss (\d+\.\d)  (\d+\.\d) s$")


def tiny_scvi(adata):
    torch.manual_seed(0)  # the same initial weights for every model built here
    pybridge.SCVI.setup_anndata(adata)
    return pybridge.SCVI(adata, n_hidden=16, n_latent=3)


def fake_jupyter_kernel(monkeypatch, shell_class_name: str = "ZMQInteractiveShell") -> None:
    """What a notebook kernel shows a library: ipykernel imported and IPython's shell of ipykernel's class."""
    shell_class = type(shell_class_name, (), {})
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: shell_class()
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # `import ipywidgets` raises ImportError


def test_log_output_gets_one_line_per_tenth_of_the_epochs_and_the_last(small_adata, capsys):
    losses = {}
    tiny_scvi(small_adata).train(
        max_epochs=25, progress=lambda epoch, n, record: losses.setdefault(epoch, record)
    )
    capsys.readouterr()
    tiny_scvi(small_adata).train(max_epochs=25)  # progress=None and stderr is not a terminal: plain lines

    lines = capsys.readouterr().err.splitlines()
    matches = [LINE.match(line) for line in lines]
    assert all(matches), lines
    epochs = [int(m[1]) for m in matches]
    assert epochs == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 25]
    assert {int(m[2]) for m in matches} == {25}
    # the same numbers as the callback gets, with history's sign (the loss, positive)
    assert [m[3] for m in matches] == [f"{losses[e]['elbo_train']:.1f}" for e in epochs]
    assert [m[4] for m in matches] == [f"{losses[e]['elbo_validation']:.1f}" for e in epochs]
    assert float(matches[0][3]) > float(matches[-1][3]) > 0
    seconds = [float(m[5]) for m in matches]
    assert seconds == sorted(seconds)


def test_log_output_prints_the_epoch_training_stopped_at(capsys):
    display = open_display(None, 400)
    for epoch in range(1, 58):  # early stopping after epoch 57
        display.update(epoch, {"elbo_train": 1000.0 - epoch, "elbo_validation": 1010.0 - epoch})
    display.close()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("  ")[:3] for line in lines] == [
        ["epoch 40/400", "train loss 960.0", "validation loss 970.0"],
        ["epoch 57/400", "train loss 943.0", "validation loss 953.0"],
    ]


def test_epochs_without_validation_print_the_train_loss_only(capsys):
    display = open_display(True, 2)
    display.update(1, {"elbo_train": 12.34})
    display.update(2, {"elbo_train": 11.0, "elbo_validation": None})
    display.close()
    assert [line.rsplit("  ", 1)[0] for line in capsys.readouterr().err.splitlines()] == [
        "epoch 1/2  train loss 12.3", "epoch 2/2  train loss 11.0",
    ]


def test_a_terminal_gets_the_tqdm_bar(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    display = open_display(None, 3)
    for epoch in (1, 2, 3):
        display.update(epoch, {"elbo_train": 100.0 + epoch, "elbo_validation": 110.0})
    display.close()
    last_frame = terminal.getvalue().rstrip("\n").split("\r")[-1]
    assert last_frame.startswith("Training: 100%|")
    assert "3/3" in last_frame and "train loss 103.0  validation loss 110.0" in last_frame
    assert "epoch 3/3" not in terminal.getvalue()


def test_progress_false_prints_nothing(small_adata, capsys):
    tiny_scvi(small_adata).train(max_epochs=2, progress=False)
    assert capsys.readouterr().err == ""


def test_a_jupyter_kernel_is_told_from_a_terminal_ipython(monkeypatch):
    assert not in_jupyter_kernel()
    fake_jupyter_kernel(monkeypatch, "TerminalInteractiveShell")
    assert not in_jupyter_kernel()
    fake_jupyter_kernel(monkeypatch, "ZMQInteractiveShell")
    assert in_jupyter_kernel()


def test_a_jupyter_kernel_without_ipywidgets_gets_the_text_bar_and_no_warning(small_adata, monkeypatch, capsys):
    fake_jupyter_kernel(monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_scvi(small_adata).train(max_epochs=3)
    assert [w for w in caught if issubclass(w.category, TqdmWarning)] == []
    shown = capsys.readouterr()
    last_frame = shown.out.rstrip("\n").split("\r")[-1]  # on stdout, which the notebook shows without a red block
    assert last_frame.startswith("Training: 100%|") and "3/3" in last_frame and "train loss" in last_frame
    assert shown.err == ""


FAKE_KERNEL_IMPORT = """
import json, sys, types, warnings
shell = type("ZMQInteractiveShell", (), {})()
ipython = types.ModuleType("IPython"); ipython.get_ipython = lambda: shell
sys.modules.update({"IPython": ipython, "ipykernel": types.ModuleType("ipykernel"),
                    "ipykernel.zmqshell": types.ModuleType("ipykernel.zmqshell"), "ipywidgets": None})
def tqdm_warnings(statement):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(statement)
    return [str(w.message) for w in caught if "tqdm" in w.category.__module__]
print(json.dumps([tqdm_warnings("import pybridge"), tqdm_warnings("import tqdm.auto")]))
"""


def test_importing_pybridge_in_a_jupyter_kernel_without_ipywidgets_warns_nothing():
    run = subprocess.run(
        [sys.executable, "-c", FAKE_KERNEL_IMPORT], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr
    from_pybridge, from_tqdm_auto = json.loads(run.stdout)
    assert from_pybridge == []
    assert any("IProgress not found" in message for message in from_tqdm_auto)  # the fake kernel convinces tqdm
