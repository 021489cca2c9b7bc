"""The user-facing models (SCVI, CondSCVI, DestVI) and the torch modules they train."""
