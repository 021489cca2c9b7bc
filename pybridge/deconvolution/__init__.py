"""Spatial deconvolution: the CondSCVI + DestVI pipeline, pseudo-spot simulation, baselines, metrics, plots."""

from pybridge.deconvolution.baselines import nnls_proportions
from pybridge.deconvolution.metrics import accuracy_score, deconvolution_metrics, summarize_metrics
from pybridge.deconvolution.pipeline import DeconvolutionResult, run_destvi
from pybridge.deconvolution.plot import plot_spot_proportions
from pybridge.deconvolution.simulate import pseudo_spots

__all__ = [
    "DeconvolutionResult", "accuracy_score", "deconvolution_metrics", "nnls_proportions", "plot_spot_proportions",
    "pseudo_spots", "run_destvi", "summarize_metrics",
]
