"""Training: the one loop, device choice, and data-parallel training under torchrun."""
