"""HistGradientBoosting's weighted binning in one pass per column, same thresholds.

With sample weights (train.class_weight: balanced), scikit-learn 1.9 finds a column's 254
bin thresholds with 254 calls of `_weighted_percentile`, each sorting the column and
summing its weights again: on the default data that was half of a boosting fit's time, and
`churn train` fits 15 of them there (the auto search's folds, calibration, the model).
scikit-learn merged the fix for its next release (PR #34248: "the current implementation
loops over percentiles and calls `_weighted_percentile` once per percentile").

`install()` swaps in the same function with one change: the 254 weighted percentiles of a
column come from one sort and one cumulative sum, with `_weighted_percentile`'s arithmetic
per percentile ("averaged_inverted_cdf") done on arrays of percentiles instead of one by
one. The thresholds, and so the model bytes, are the same to the bit (tests/unit/
test_binning.py compares them with scikit-learn's own on weighted, tied, missing and
exactly-landing data; dvc.lock did not change). It is installed only on the scikit-learn
minor version it was copied from.
"""

from __future__ import annotations

import numpy as np
import sklearn
from sklearn.ensemble._hist_gradient_boosting import binning

COPIED_FROM = "1.9."  # the scikit-learn minor version whose function this mirrors
ORIGINAL = binning._find_binning_thresholds


def find_binning_thresholds(col_data, max_bins, sample_weight=None):
    """scikit-learn 1.9's `_find_binning_thresholds`; the weighted percentiles at once."""
    if sample_weight is None:
        return ORIGINAL(col_data, max_bins)
    missing_mask = np.isnan(col_data)
    if missing_mask.any():
        col_data = col_data[~missing_mask]
        sample_weight = sample_weight[~missing_mask]
    nnz_sw = sample_weight != 0
    col_data = col_data[nnz_sw]
    sample_weight = sample_weight[nnz_sw]
    sort_idx = np.argsort(col_data)
    col_data = col_data[sort_idx]
    sample_weight = sample_weight[sort_idx]
    distinct_values = np.unique(col_data).astype(binning.X_DTYPE)
    if len(distinct_values) <= max_bins:  # one value, or midpoints: no percentiles
        return ORIGINAL(distinct_values, max_bins)
    percentiles = np.linspace(0, 100, num=max_bins + 1)[1:-1]
    bin_thresholds = weighted_percentiles(col_data, sample_weight, percentiles)
    unique_bin_values = np.unique(bin_thresholds)
    if unique_bin_values.shape[0] != bin_thresholds.shape[0]:
        bin_thresholds = unique_bin_values
    np.clip(bin_thresholds, a_min=None, a_max=binning.ALMOST_INF, out=bin_thresholds)
    return bin_thresholds


def weighted_percentiles(values, weights, percentiles):
    """`_weighted_percentile(values, weights, p, average=True)` for every p at once: the
    same sort (of the sorted column, as scikit-learn does it), cumulative sum and per-
    percentile arithmetic, on arrays. No weight is 0 here (binning drops those first), so
    scikit-learn's search past a zero-weight neighbour never applies."""
    values, weights = np.asarray(values, np.float64), np.asarray(weights, np.float64)
    order = np.argsort(values.reshape(-1, 1), axis=0)[:, 0]  # its unstable sort, its shape
    cdf = np.cumsum(weights[order])
    ranks = percentiles / 100 * cdf[-1]
    at_zero = ranks == 0
    ranks[at_zero] = np.nextafter(ranks[at_zero], ranks[at_zero] + 1)
    last = len(values) - 1
    index = np.clip(np.searchsorted(cdf, ranks), 0, last)
    above = cdf[index] - ranks > np.finfo(np.float64).eps
    value = values[order[index]]
    following = values[order[np.clip(index + 1, 0, last)]]
    return np.where(above, value, (value + following) / 2)


def install() -> bool:
    """Use `find_binning_thresholds` in HistGradientBoosting; False (nothing changed) on
    another scikit-learn than the one it mirrors."""
    if not sklearn.__version__.startswith(COPIED_FROM):
        return False
    binning._find_binning_thresholds = find_binning_thresholds
    return True
