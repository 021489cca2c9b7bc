"""pybridge: scVI-family models for single-cell counts in plain PyTorch, for Python and R users."""

from pybridge._version import __version__
from pybridge.data import datasets
from pybridge.data.minified import open_minified
from pybridge.errors import PybridgeError
from pybridge.models.condscvi import CondSCVI
from pybridge.models.destvi import DestVI
from pybridge.models.scvi import SCVI

__all__ = ["SCVI", "CondSCVI", "DestVI", "PybridgeError", "__version__", "datasets", "open_minified"]
