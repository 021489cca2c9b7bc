"""pybridge: scVI-family models for single-cell counts in plain PyTorch, for Python and R users."""

__version__ = "0.1.0"

from pybridge.errors import PybridgeError  # noqa: E402
from pybridge.models.scvi import SCVI  # noqa: E402
from pybridge.models.condscvi import CondSCVI  # noqa: E402
from pybridge.models.destvi import DestVI  # noqa: E402
from pybridge import datasets  # noqa: E402

__all__ = ["SCVI", "CondSCVI", "DestVI", "PybridgeError", "datasets", "__version__"]
