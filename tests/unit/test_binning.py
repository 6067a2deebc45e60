"""churn.binning: HistGradientBoosting's weighted bin thresholds in one pass per column are
scikit-learn's own, to the bit, and the fitted model is the same."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.ensemble._hist_gradient_boosting import binning as sk_binning

from churn import binning


def columns() -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """(what, column, weights): continuous, tied, missing and zero-weighted cells, the two
    weights of class_weight=balanced, few distinct values, percentiles that fall exactly
    on a cell (where "averaged" takes the mean of two), unweighted."""
    rng = np.random.default_rng(7)
    n = 3000
    labels = rng.random(n) < 0.27
    balanced = np.where(labels, n / (2 * labels.sum()), n / (2 * (~labels).sum()))
    normal = rng.normal(size=n)
    tied = np.round(rng.exponential(3.0, size=n), 1)  # a few hundred values, many ties
    missing = normal.copy()
    missing[rng.random(n) < 0.1] = np.nan
    zeroed = balanced.copy()
    zeroed[rng.random(n) < 0.2] = 0.0
    return [
        ("continuous, balanced weights", normal, balanced),
        ("ties, balanced weights", tied, balanced),
        ("missing cells", missing, balanced),
        ("zero weights", tied, zeroed),
        ("random weights", rng.lognormal(size=n), rng.random(n) * 5),
        ("integers, few distinct", rng.integers(0, 40, n).astype(float), balanced),
        ("one value", np.ones(n), balanced),
        ("percentiles landing on cells", rng.permutation(2550).astype(float), np.ones(2550)),
        ("unweighted", normal, None),
    ]


@pytest.mark.parametrize("max_bins", [255, 64])
@pytest.mark.parametrize("what, column, weights", columns(), ids=[c[0] for c in columns()])
def test_thresholds_equal_scikit_learns_to_the_bit(what, column, weights, max_bins):
    expected = binning.ORIGINAL(column.copy(), max_bins, sample_weight=weights)
    found = binning.find_binning_thresholds(column.copy(), max_bins, sample_weight=weights)
    assert found.dtype == expected.dtype
    assert found.tobytes() == expected.tobytes(), what


def test_a_balanced_boosting_fit_is_the_same_model(monkeypatch):
    rng = np.random.default_rng(3)
    x = np.column_stack([rng.normal(size=2000), np.round(rng.exponential(2.0, 2000), 2)])
    y = (x[:, 0] + rng.normal(scale=0.8, size=2000) > 0.9).astype(int)

    def fit() -> HistGradientBoostingClassifier:
        model = HistGradientBoostingClassifier(max_iter=20, class_weight="balanced",
                                               early_stopping=False, random_state=0)  # fmt: skip
        return model.fit(x, y)

    monkeypatch.setattr(sk_binning, "_find_binning_thresholds", binning.ORIGINAL)
    before = fit()
    assert binning.install()
    assert sk_binning._find_binning_thresholds is binning.find_binning_thresholds
    after = fit()
    for old, new in zip(before._bin_mapper.bin_thresholds_, after._bin_mapper.bin_thresholds_,
                        strict=True):  # fmt: skip
        assert old.tobytes() == new.tobytes()
    assert before.predict_proba(x).tobytes() == after.predict_proba(x).tobytes()


def test_another_scikit_learn_keeps_its_own_binning(monkeypatch):
    monkeypatch.setattr(sk_binning, "_find_binning_thresholds", binning.ORIGINAL)
    monkeypatch.setattr(binning.sklearn, "__version__", "1.10.0")
    assert not binning.install()
    assert sk_binning._find_binning_thresholds is binning.ORIGINAL
