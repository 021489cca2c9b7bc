"""Optional ``torch.compile`` of pybridge's elementwise kernels, with the eager code as the fallback.

Compiling fuses a kernel's [cells x genes] passes into one loop (a C++ loop on CPU, a Triton kernel on CUDA),
but compiling costs seconds: measured for the count likelihood on 2 CPU cores (torch 2.13), 13-18 s the first
time on a machine and about 3 s in later processes (inductor's on-disk cache), against a saving of 3-4 ns per
matrix entry (value, gradients and backward: 8.8 -> 5.0 ns at 4,000 genes, 8.5 -> 4.3 ns at 2,000). The mode, from
``PYBRIDGE_COMPILE`` or :func:`set_compile_mode`:

- ``"auto"`` (default): run eagerly until the kernel has processed :data:`AUTO_COMPILE_ENTRIES` matrix entries
  (about a minute of training), then compile: short runs never pay for it, and a run that goes on as long
  again recovers a cached compile;
- ``"1"``/``"on"``: compile at first use; ``"0"``/``"off"``: never compile.

One compile serves every batch size: the first dimension of the [cells x genes] arguments is dynamic, the
others are fixed at the first call (a loop whose length is known at compile time vectorises better: 5.0 instead of
8.6 ns per entry for the count likelihood at 4,000 genes); a second gene count makes torch recompile with that
dimension dynamic too. When compiling fails (no C++ compiler, no Triton), one warning says so and the kernel
stays eager for the rest of the process.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch

from pybridge.errors import PybridgeError, PybridgeWarning

#: Entries processed eagerly before "auto" compiles (about 60 s of training at 2,000 genes on 2 CPU cores).
AUTO_COMPILE_ENTRIES = 2_000_000_000
_MODES = {"auto": "auto", "1": "on", "on": "on", "true": "on", "0": "off", "off": "off", "false": "off"}
_mode_override: str | None = None


def set_compile_mode(mode: str | None) -> None:
    """``"auto"``, ``"on"`` or ``"off"`` for this process; ``None`` returns to ``PYBRIDGE_COMPILE``."""
    global _mode_override
    _mode_override = None if mode is None else _parse(str(mode), "set_compile_mode")


def compile_mode() -> str:
    """The mode in force: ``"auto"``, ``"on"`` or ``"off"``."""
    if _mode_override is not None:
        return _mode_override
    return _parse(os.environ.get("PYBRIDGE_COMPILE", "auto"), "PYBRIDGE_COMPILE")


def _parse(value: str, source: str) -> str:
    mode = _MODES.get(value.strip().lower())
    if mode is None:
        raise PybridgeError(f"{source}={value!r} is not a compile mode; use 'auto', '1' (on) or '0' (off)")
    return mode


class CompiledKernel:
    """Calls ``fn`` compiled when the mode says so and compiling works, else ``fn`` itself."""

    def __init__(self, fn: Callable, name: str):
        self.fn, self.name = fn, name
        self.entries = 0  # matrix entries processed so far (for "auto")
        self.failed = False
        self._compiled: Callable | None = None

    def use_compiled(self, n_entries: int) -> bool:
        """Whether the call about to process ``n_entries`` entries should run compiled."""
        mode = compile_mode()
        if mode == "off" or self.failed:
            return False
        self.entries += n_entries
        return mode == "on" or self.entries > AUTO_COMPILE_ENTRIES

    def __call__(self, n_entries: int, *args, **kwargs):
        if not self.use_compiled(n_entries):
            return self.fn(*args, **kwargs)
        if self._compiled is None:
            self._compiled = torch.compile(self.fn, dynamic=False, fullgraph=True)
        for arg in args:
            if isinstance(arg, torch.Tensor) and arg.dim() >= 2:
                torch._dynamo.maybe_mark_dynamic(arg, 0)  # the cells; genes stay fixed
        try:
            return self._compiled(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - compilers fail in many ways; all mean: stay eager
            self.failed = True
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            warnings.warn(PybridgeWarning(
                f"pybridge could not compile its {self.name} ({reason[:200]}); it runs uncompiled (same results, "
                "slower). Set PYBRIDGE_COMPILE=0 to skip the attempt."
            ), stacklevel=2)
            return self.fn(*args, **kwargs)
