"""``python -m pybridge.cli`` (what ``torchrun ... -m pybridge.cli train`` runs)."""

import sys

from pybridge.cli.main import main

sys.exit(main())
