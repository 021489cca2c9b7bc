"""``python -m pybridge.cli`` (what ``torchrun ... -m pybridge.cli train`` runs)."""

import sys

from pybridge.cli.main import console_main

sys.exit(console_main())
