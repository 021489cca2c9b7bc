"""Is the model good? Count splitting, noise ceilings, rank agreement, calibration and the report."""

from pybridge.diagnostics.calibration import CalibrationAccumulator, naive_zero_coverage
from pybridge.diagnostics.ceiling import count_loglik, split_half_ceiling
from pybridge.diagnostics.countsplit import count_split, split_anndata
from pybridge.diagnostics.imputation import hide_nonzero_entries, median_absolute_error
from pybridge.diagnostics.ranks import rank_agreement, spearman_rows

__all__ = [
    "CalibrationAccumulator", "count_loglik", "count_split", "hide_nonzero_entries", "median_absolute_error",
    "naive_zero_coverage", "rank_agreement", "spearman_rows", "split_anndata", "split_half_ceiling",
]
