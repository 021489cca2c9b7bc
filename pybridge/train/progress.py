"""Training progress where people look: the display is chosen by where the output is seen, then fed each epoch.

A terminal gets a tqdm bar on stderr. A Jupyter kernel (notebook, JupyterLab, VS Code, Colab) gets tqdm's widget
bar when ipywidgets is importable and otherwise tqdm's text bar on stdout, which notebooks redraw in place (never
tqdm's "IProgress not found" warning). Anything else (pipes, log files, CI, nohup) gets one plain line on stderr every
tenth of the epochs and at the last, e.g. ``epoch 40/400  train loss 1234.5  validation loss 1240.1  12.3 s``
(the losses are history's ``elbo_train`` / ``elbo_validation``: the negative ELBO per cell).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Protocol, TextIO

from tqdm.std import tqdm

EpochCallback = Callable[[int, int, dict[str, float]], None]


class EpochDisplay(Protocol):
    """What the training loop drives: ``update`` after each epoch (1-based), ``close`` once at the end."""

    def update(self, epoch: int, record: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def open_display(progress: bool | EpochCallback | None, max_epochs: int) -> EpochDisplay:
    """The display for one ``fit``: a callable ``progress(epoch, max_epochs, record)`` replaces it, ``False``
    silences it, and ``None`` or ``True`` choose it by where stderr is seen (module docstring)."""
    if callable(progress):
        return _Callback(progress, max_epochs)
    if progress is not None and not progress:
        return _Silent()
    if in_jupyter_kernel():
        # the text bar goes to stdout, which a notebook shows without stderr's red background
        return _Bar((_widget_bar_class() or tqdm)(total=max_epochs, file=sys.stdout, desc="Training", unit="epoch"))
    if _is_terminal(sys.stderr):
        return _Bar(tqdm(total=max_epochs, file=sys.stderr, desc="Training", unit="epoch"))
    return _Lines(max_epochs, sys.stderr)


def in_jupyter_kernel() -> bool:
    """True inside a Jupyter kernel; False in a terminal IPython, which the terminal bar serves."""
    if "ipykernel" not in sys.modules:
        return False
    get_ipython = getattr(sys.modules.get("IPython"), "get_ipython", None)
    shell = get_ipython() if get_ipython is not None else None
    return any(cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__)


def _widget_bar_class() -> type[tqdm] | None:
    """tqdm's widget bar when the kernel's front end can show ipywidgets; None where it cannot."""
    if "QT_API" in os.environ or any(name.startswith("SPYDER") for name in os.environ):
        return None  # qtconsole and Spyder run a kernel but show no widgets
    try:
        import ipywidgets  # noqa: F401
        from tqdm.notebook import IProgress
        from tqdm.notebook import tqdm as notebook_tqdm
    except ImportError:
        return None
    return notebook_tqdm if IProgress is not None else None


def _is_terminal(stream: TextIO | None) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


def losses_text(record: dict[str, float]) -> str:
    """``train loss 1234.5  validation loss 1240.1`` (no validation part in an epoch without validation)."""
    text = f"train loss {record['elbo_train']:.1f}"
    if record.get("elbo_validation") is not None:
        text += f"  validation loss {record['elbo_validation']:.1f}"
    return text


class _Bar:
    def __init__(self, bar: tqdm):
        self.bar = bar

    def update(self, epoch: int, record: dict[str, float]) -> None:
        self.bar.set_postfix_str(losses_text(record), refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


class _Lines:
    """One line per block of ``max(1, max_epochs // 10)`` epochs, and the last epoch run (also after a stop)."""

    def __init__(self, max_epochs: int, stream: TextIO):
        self.max_epochs, self.stream = max_epochs, stream
        self.every = max(1, max_epochs // 10)
        self.start = time.perf_counter()
        self.unprinted: tuple[int, dict[str, float]] | None = None

    def update(self, epoch: int, record: dict[str, float]) -> None:
        self.unprinted = (epoch, record)
        if epoch % self.every == 0 or epoch == self.max_epochs:
            self._print()

    def close(self) -> None:
        if self.unprinted is not None:
            self._print()

    def _print(self) -> None:
        epoch, record = self.unprinted
        seconds = time.perf_counter() - self.start
        print(f"epoch {epoch}/{self.max_epochs}  {losses_text(record)}  {seconds:.1f} s", file=self.stream, flush=True)
        self.unprinted = None


class _Callback:
    def __init__(self, callback: EpochCallback, max_epochs: int):
        self.callback, self.max_epochs = callback, max_epochs

    def update(self, epoch: int, record: dict[str, float]) -> None:
        self.callback(epoch, self.max_epochs, record)

    def close(self) -> None:
        pass


class _Silent:
    def update(self, epoch: int, record: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass
