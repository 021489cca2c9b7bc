"""Model diagnostics and accuracy metrics."""

from pybridge.evaluate.calibration import CalibrationAccumulator, naive_zero_coverage  # noqa: F401
from pybridge.evaluate.ceiling import count_loglik, split_half_ceiling  # noqa: F401
from pybridge.evaluate.countsplit import count_split, split_anndata  # noqa: F401
from pybridge.evaluate.deconvolution import accuracy_score, deconvolution_metrics, summarize_metrics  # noqa: F401
from pybridge.evaluate.imputation import hide_nonzero_entries, median_absolute_error  # noqa: F401
from pybridge.evaluate.ranks import rank_agreement, spearman_rows  # noqa: F401
