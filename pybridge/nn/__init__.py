"""Likelihoods, layers and the loss contract between modules and the training loop."""
