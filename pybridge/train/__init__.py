"""Training: the one loop, scvi-tools' keywords, the progress display, device choice, and data-parallel
training under torchrun."""
